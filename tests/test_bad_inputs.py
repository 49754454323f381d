"""Bad inputs through `tokendirect ingest`: each bad file is named with its reason, the good page is still stored.

One folder holds a good PNG page and every kind of bad file; a `.txt` is passed explicitly besides. The CLI runs
three times for the whole module, through its entry point in this process (the tiny model loaded once): ingest
--json, the same ingest again (plain text output), and info --json.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image
from pypdf import PdfReader, PdfWriter

from tests.helpers import cli_env, page_image, run_here, write_pdf


def _encrypted_pdf(path: Path, valid: Path) -> None:
    writer = PdfWriter()
    for page in PdfReader(valid).pages:
        writer.add_page(page)
    writer.encrypt("secret")
    with open(path, "wb") as f:
        writer.write(f)


def _zero_page_pdf(path: Path, valid: Path) -> None:
    with open(path, "wb") as f:
        PdfWriter().write(f)


def _truncated_pdf(path: Path, valid: Path) -> None:
    data = valid.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _as_jpeg(path: Path, valid: Path) -> None:
    page_image(["JPEG bytes"], size=(200, 100)).save(path, format="JPEG")


def _pixel_bomb(path: Path, valid: Path) -> None:
    # 160 million pixels of one colour: a few kB on disk, 480 MB once decoded to RGB.
    Image.new("1", (16000, 10000)).save(path)


def _too_big(path: Path, valid: Path) -> None:
    Image.frombytes("RGB", (1000, 1000), random.Random(1).randbytes(3_000_000)).save(path)


def _symlink_to_parent(path: Path, valid: Path) -> None:
    os.symlink(path.parent, path)


# Limits set low for this module, so that small files can breach them.
LIMITS = {"TOKENDIRECT_MAX_PAGES": "2", "TOKENDIRECT_MAX_FILE_MB": "2"}

# name -> (how to write it, a word its reason must contain, or None when any non-empty reason will do)
BAD_FILES = {
    "corrupt.pdf": (lambda p, v: p.write_bytes(b"%PDF-1.7\n" + random.Random(0).randbytes(4096)), None),
    "truncated.pdf": (_truncated_pdf, None),
    "empty.pdf": (lambda p, v: p.write_bytes(b""), "empty"),
    "encrypted.pdf": (_encrypted_pdf, "encrypt"),
    "no-pages.pdf": (_zero_page_pdf, "no pages"),
    "text-bytes.png": (lambda p, v: p.write_bytes(b"this is plain text, not an image\n" * 20), "not a png"),
    "jpeg-bytes.png": (_as_jpeg, "a jpeg file"),
    "pdf-bytes.png": (lambda p, v: p.write_bytes(v.read_bytes()), "a pdf file"),
    "png-bytes.pdf": (lambda p, v: page_image(["x"], size=(100, 100)).save(p, format="PNG"), "a png file"),
    "empty.png": (lambda p, v: p.write_bytes(b""), "empty"),
    "bomb.png": (_pixel_bomb, "too large"),
    "huge.png": (_too_big, "file too large"),
    "three-pages.pdf": (lambda p, v: write_pdf(p, [["1"], ["2"], ["3"]]), "too many pages"),
    "broken-link.pdf": (lambda p, v: os.symlink(p.parent / "nowhere.pdf", p), "broken symbolic link"),
    "fifo.pdf": (lambda p, v: os.mkfifo(p), "not a regular file"),
    "loop": (_symlink_to_parent, "folder loop"),
}
# Passed explicitly on the command line (a folder walk would just skip it).
UNSUPPORTED = "notes.txt"
ALL_BAD = [*BAD_FILES, UNSUPPORTED]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("bad-inputs")
    folder = root / "inbox"
    folder.mkdir()
    page_image(["Good page", "It is stored"]).save(folder / "good.png")
    valid = write_pdf(root / "valid.pdf", [["First page"], ["Second page"]])
    paths = {}
    for name, (write, _) in BAD_FILES.items():
        write(folder / name, valid)
        paths[name] = folder / name
    paths[UNSUPPORTED] = root / UNSUPPORTED
    paths[UNSUPPORTED].write_text("plain text is not a document\n")

    env = {**cli_env(tiny_model_dir, root / "data"), **LIMITS}
    args = ["ingest", folder, paths[UNSUPPORTED]]
    first = run_here([*args, "--json"], env, root)
    again = run_here(args, env, root)
    info = run_here(["info", "--json"], env, root)
    return SimpleNamespace(paths=paths, good=folder / "good.png", first=first, again=again, info=info)


def _failures(report: dict) -> dict[Path, str]:
    return {Path(f["path"]).resolve(): f["reason"] for f in report["failures"]}


def _lines_naming(output: str, path: Path) -> list[str]:
    return [line for line in output.splitlines() if str(path) in line]


def test_partial_failure_exits_1_and_prints_one_json_document(run):
    assert run.first.returncode == 1, run.first.stderr
    report = json.loads(run.first.stdout)
    assert report["pages_added"] == 1
    assert [Path(p).resolve() for p in report["documents_added"]] == [run.good.resolve()]
    assert len(report["failures"]) == len(ALL_BAD)


@pytest.mark.parametrize("name", ALL_BAD)
def test_json_report_names_each_bad_file_with_a_reason(run, name):
    failures = _failures(json.loads(run.first.stdout))
    path = run.paths[name].resolve()
    assert path in failures, f"{name} missing from failures: {failures}"
    reason = failures[path]
    assert reason.strip() and "\n" not in reason
    expected = BAD_FILES[name][1] if name in BAD_FILES else "unsupported"
    if expected:
        assert expected in reason.lower(), reason


@pytest.mark.parametrize("name", ALL_BAD)
def test_output_names_each_bad_file_on_one_line(run, name):
    """--json keeps stdout for the report and names each failure on stderr; plain output names it on stdout."""
    path = run.paths[name]
    reason = _failures(json.loads(run.first.stdout))[path.resolve()]
    for output in (run.first.stderr, run.again.stdout):
        lines = _lines_naming(output, path)
        assert len(lines) == 1, output
        assert reason in lines[0]


def test_good_page_is_stored_and_not_reported(run):
    assert run.good.resolve() not in _failures(json.loads(run.first.stdout))
    assert not _lines_naming(run.first.stderr + run.again.stdout, run.good)
    assert run.info.returncode == 0, run.info.stderr
    info = json.loads(run.info.stdout)
    assert info["points"] == 1
    assert info["documents"] == 1


def test_rerun_stores_nothing_new(run):
    assert run.again.returncode == 1, run.again.stderr
    summary = run.again.stdout.splitlines()[0]
    assert summary.startswith("added 0 pages"), summary
    assert "skipped 1 pages" in summary, summary
    # info ran after both ingests: still just the good page.
    assert json.loads(run.info.stdout)["points"] == 1
