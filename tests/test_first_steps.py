"""Using it as a new user would: progress while ingesting, the demo's next steps, a missing model without a
network, settings errors, search output and options, and the image formats a folder may hold."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import shlex
import struct
import subprocess
import termios
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image
from pydantic import ValidationError

from config import Settings
from core.cli import setting_error
from core.locks import FileLock
from ingest.progress import Progress
from ingest.runlog import writer_lock_path
from tests.helpers import (
    CLI,
    SMALL,
    cli_env,
    ingest_here,
    make_docs,
    make_folder,
    page_image,
    run_cli,
    run_here,
    settings_for,
    sha256,
    usage_error,
)

# -- progress ------------------------------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_progress_lines_say_how_far_how_fast_and_how_long():
    stream, clock = io.StringIO(), Clock()
    progress = Progress("lines", stream, every=60, clock=clock)
    progress.plan(100)
    progress.planned()
    progress.now("/docs/report.pdf")
    clock.now += 30
    progress.update(10)
    assert stream.getvalue() == ""  # not every batch: now and then
    clock.now += 31
    progress.update(10)
    (line,) = stream.getvalue().splitlines()
    assert line == "progress: 20 of 100 pages stored (20%), 0.33 pages/s, about 4 min left; now /docs/report.pdf"


def test_progress_lines_while_files_are_still_being_planned_give_no_time_left():
    stream, clock = io.StringIO(), Clock()
    progress = Progress("lines", stream, every=1, clock=clock)
    progress.plan(5)
    progress.now("a\nb.png")
    clock.now += 2
    progress.update(1)
    assert stream.getvalue() == "progress: 1 of 5+ pages stored (20%), 0.50 pages/s; now a\\nb.png\n"


def test_progress_off_writes_nothing():
    stream = io.StringIO()
    progress = Progress("off", stream, every=0)
    progress.plan(3)
    progress.now("x.pdf")
    progress.update(3)
    progress.close()
    assert stream.getvalue() == ""


def run_in_terminal(args: list, env: dict, cwd: Path, columns: int = 160) -> tuple[int, str]:
    """Run `tokendirect ARGS...` with a terminal (a pty of `columns` columns) as stdout and stderr."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen([*CLI, *map(str, args)], env=env, cwd=cwd, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(timeout=600), b"".join(chunks).decode("utf-8", "replace")


def test_ingest_in_a_terminal_shows_pages_of_planned_rate_time_left_and_file(tmp_path, tiny_model_dir):
    folder = make_folder(tmp_path / "docs")
    code, output = run_in_terminal(["ingest", folder], cli_env(tiny_model_dir, tmp_path / "data"), tmp_path)
    assert code == 0, output
    frames = [frame for frame in re.split(r"[\r\n]", output) if "pages |" in frame]
    shown = r"ingest: [1-5]/6 pages \|.*\| *[\d.]+(s/page|page/s), \d\d:\d\d left, [abc]\.(pdf|png|tiff)"
    assert any(re.search(shown, frame) for frame in frames), frames
    assert "Loading weights" not in output and "Traceback" not in output
    assert "added 6 pages from 3 documents" in output


def test_ingest_in_a_pipe_writes_no_bar(tmp_path, tiny_model_dir):
    folder = make_folder(tmp_path / "docs")
    # Read as bytes: text mode would turn a bar's carriage returns into newlines.
    env = cli_env(tiny_model_dir, tmp_path / "data")
    proc = subprocess.run(
        [*CLI, "ingest", str(folder), "--json"], env=env, cwd=tmp_path, capture_output=True, timeout=600
    )
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert b"\r" not in proc.stderr and "pages |" not in err and "Loading weights" not in err and "Traceback" not in err
    assert json.loads(proc.stdout)["pages_added"] == 6


def test_wait_says_that_it_waits_and_for_whom(tmp_path, tiny_model_dir, settings):
    page_image(["waits"], size=SMALL).save(tmp_path / "w.png")
    lock = FileLock(writer_lock_path(settings), "tokendirect ingest /elsewhere").acquire()
    try:
        proc = run_cli(
            ["ingest", tmp_path / "w.png", "--wait", "1"], cli_env(tiny_model_dir, settings.data_dir), tmp_path
        )
    finally:
        lock.release()
    usage_error(proc)
    assert f"waiting up to 1 s for the ingest into collection 'pages' to finish: pid {os.getpid()}" in proc.stderr
    assert "tokendirect ingest /elsewhere" in proc.stderr


# -- first steps: the demo, and no model without a network -------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> SimpleNamespace:
    """`tokendirect demo` offline, without a model of its own, and without `tokendirect` on the PATH (run in this
    process; the commands it suggests run in processes of their own)."""
    root = tmp_path_factory.mktemp("demo")
    env = cli_env(Path("unused"), root / "data")
    del env["TOKENDIRECT_MODEL"]
    bin_dir = str(Path(CLI[0]).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != bin_dir)
    proc = run_here(["demo"], env, root)
    return SimpleNamespace(root=root, env=env, proc=proc)


def suggested(demo, word: str) -> list[str]:
    """The command the demo suggests, as printed: `   Try: ENV... COMMAND ARGS...`."""
    (line,) = [line for line in demo.proc.stdout.splitlines() if line.strip().startswith(f"{word}:")]
    return shlex.split(line.split(":", 1)[1])


def run_as_printed(demo, words: list[str]) -> subprocess.CompletedProcess:
    env = dict(demo.env)
    while "=" in words[0]:
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    return subprocess.run(words, env=env, cwd=demo.root, capture_output=True, text=True, timeout=600, check=False)


def test_the_demos_suggested_search_works_as_printed(demo):
    assert demo.proc.returncode == 0, demo.proc.stderr
    proc = run_as_printed(demo, suggested(demo, "Try"))
    assert proc.returncode == 0, proc.stderr
    assert "page" in proc.stdout


def test_after_the_demo_info_names_the_collection_it_used(demo):
    assert "collection 'demo-test-model'" in demo.proc.stdout
    proc = run_as_printed(demo, suggested(demo, "and"))
    assert proc.returncode == 0, proc.stderr
    assert "collection: demo-test-model" in proc.stdout and "points: 4" in proc.stdout
    default = run_here(["info"], demo.env, demo.root)
    assert "collections in this store: demo-test-model" in default.stdout
    assert "TOKENDIRECT_COLLECTION=demo-test-model" in default.stdout


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "unreachable hub"])
def test_a_model_neither_cached_nor_downloadable_fails_at_once_with_the_way_out(tmp_path, offline):
    env = cli_env(Path("example-org/no-such-model"), tmp_path / "data", HF_HOME=str(tmp_path / "hf"))
    env["TOKENDIRECT_MODEL"] = "example-org/no-such-model"
    if offline != "HF_HUB_OFFLINE":
        del env["HF_HUB_OFFLINE"]
        env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens there: refused at once
    started = time.monotonic()
    line = usage_error(run_cli(["search", "x"], env, tmp_path))
    assert time.monotonic() - started < 60
    assert "not in the local Hugging Face cache" in line
    assert "make-test-model" in line and "TOKENDIRECT_MODEL" in line


# -- settings ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("TOP_K", "0", "TOKENDIRECT_TOP_K must be at least 1"),
        ("DEVICE", "gpu", "TOKENDIRECT_DEVICE must be one of: auto, cpu, cuda"),
        ("BATCH_SIZE", "two", "TOKENDIRECT_BATCH_SIZE must be a whole number"),
        ("OCR_TEXT", "maybe", "TOKENDIRECT_OCR_TEXT must be true or false"),
        ("COLLECTION", "../x", "TOKENDIRECT_COLLECTION: '../x' cannot name a collection"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(f"TOKENDIRECT_{name}", value)
    with pytest.raises(ValidationError) as bad:
        Settings(_env_file=None)
    assert setting_error(bad.value).startswith(message)


def test_a_bad_setting_on_the_command_line_is_that_line(tmp_path, tiny_model_dir):
    proc = run_here(["info"], cli_env(tiny_model_dir, tmp_path / "data", TOKENDIRECT_TOP_K="0"), tmp_path)
    assert usage_error(proc) == "error: TOKENDIRECT_TOP_K must be at least 1 (it is '0')"


# -- search: what it shows, what it refuses -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lib(tmp_path_factory, tiny_model_dir) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("search-options")
    docs = make_docs(root / "docs")
    ingest_here(settings_for(tiny_model_dir, root / "data"), docs)
    return SimpleNamespace(root=root, docs=docs, env=cli_env(tiny_model_dir, root / "data"))


def test_search_output_shows_each_hits_doc_id(lib):
    proc = run_here(["search", "Invoice", "--top-k", "5"], lib.env, lib.root)
    assert proc.returncode == 0, proc.stderr
    doc_ids = {sha256(p) for p in lib.docs.iterdir()}
    shown = {re.search(r"doc ([0-9a-f]{64})", line).group(1) for line in proc.stdout.splitlines()}
    assert shown == doc_ids


def test_an_unknown_doc_id_says_so(lib):
    missing = "0" * 64
    assert f"no document with doc_id '{missing}'" in usage_error(
        run_here(["search", "x", "--doc", missing], lib.env, lib.root)
    )


@pytest.mark.parametrize(
    "args, says",
    [
        (["search", "Invoice", "--image", "{invoice}"], "not both"),
        (["search", "Invoice", "--exact", "--mode", "text"], "--exact"),
    ],
)
def test_contradictory_search_options_are_refused(lib, args, says):
    args = [a.format(invoice=lib.docs / "invoice.png") for a in args]
    assert says in usage_error(run_here(args, lib.env, lib.root))


@pytest.mark.parametrize(
    "args",
    [["search", "--json"], ["search", "x", "--top-k", "0", "--json"], ["search", "x", "--mode", "fuzzy", "--json"]],
)
def test_a_refused_json_search_still_prints_a_json_error_document(lib, args):
    proc = run_here(args, lib.env, lib.root)
    assert proc.returncode == 2
    document = json.loads(proc.stdout)
    assert document["exit_code"] == 2 and document["error"]


def test_decode_mode_without_decode_is_warned_about(lib):
    proc = run_here(["search", "Invoice", "--decode-mode", "markdown", "--top-k", "1"], lib.env, lib.root)
    assert proc.returncode == 0 and "--decode-mode has no effect without --decode" in proc.stderr


# -- image formats, and what a folder holds besides ----------------------------------------------------------------


def test_webp_bmp_and_the_first_frame_of_a_gif_are_ingested_and_the_rest_counted(tmp_path, tiny_model_dir):
    folder = tmp_path / "docs"
    folder.mkdir()
    page_image(["webp page"], size=SMALL).save(folder / "page.webp")
    page_image(["bmp page"], size=SMALL).save(folder / "page.bmp")
    frames = [page_image([f"gif frame {k}"], size=SMALL).convert("P") for k in (1, 2)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    page_image(["webp bytes"], size=SMALL).save(folder / "named.png", format="WEBP")
    (folder / "notes.txt").write_text("not a page")
    (folder / "README").write_text("no extension")
    report = ingest_here(settings_for(tiny_model_dir, tmp_path / "data"), folder)
    assert sorted(Path(p).name for p in report["documents_added"]) == ["anim.gif", "page.bmp", "page.webp"]
    assert report["pages_added"] == 3
    assert [(Path(f["path"]).name, f["reason"]) for f in report["failures"]] == [
        ("named.png", "content does not match the name: a WEBP file, named '.png'")
    ]
    assert report["files_skipped"] == {"unsupported type .txt": 1, "no file type (extension)": 1}
    text = run_here(["ingest", folder], cli_env(tiny_model_dir, tmp_path / "data"), tmp_path).stdout
    assert "files left out: 1 no file type (extension), 1 unsupported type .txt" in text.splitlines()


def test_an_animated_gif_is_one_page(tmp_path):
    from core.pages import count_pages

    frames = [Image.new("P", SMALL, k) for k in (1, 2, 3)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert count_pages(tmp_path / "a.gif") == 1
