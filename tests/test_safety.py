"""Nothing a user does loses stored data or ends in a traceback: prune and tidy safety, collection names, a full
disk, a data directory that cannot be written, the run log's exit code, the model guard, image limits, export during
an ingest, and file names that would break output lines.

The store is the embedded engine and the model the tiny test checkpoint throughout. Full-disk and read-only tests
mount a small tmpfs or a read-only bind mount (as root); where that is not possible they are skipped with the reason.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import warnings
from pathlib import Path

import pytest
from PIL import Image

from config import Settings
from core.errors import ConfigError, DiskSpaceError, InputError, ModelMismatchError, exit_code_for, printable
from core.model import ModelIdentity, OcrModel
from core.pages import Limits, count_pages
from core.store import disk, open_store
from core.store.record import check_model
from core.store.transfer import export_collection
from ingest.hooks import PAUSE_ENV
from ingest.runlog import RUN_LOG
from tests.helpers import (
    CLI,
    SMALL,
    cli_env,
    expected_ids,
    fill_disk,
    ingest_here,
    killed,
    make_folder,
    mount,
    page_image,
    run_cli,
    settings_for,
    stored,
    unmount,
    usage_error,
)


def env_for(model_dir: Path, data: Path, **extra) -> dict[str, str]:
    return cli_env(model_dir, data, TOKENDIRECT_BATCH_SIZE="2", **extra)


def run_log(data: Path) -> list[dict]:
    return [json.loads(line) for line in (data / RUN_LOG).read_text().splitlines()]


def terminal_sigint() -> None:
    """Ctrl-C's default action, as in a terminal's foreground job. A job a script starts in the background
    (`cmd &`) inherits SIGINT ignored, and Python then keeps it ignored; the child must not depend on that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def paused(args: list, env: dict, cwd: Path, stage: str) -> subprocess.Popen:
    """`tokendirect ARGS...` started and held at the test hook's pause point `stage`; a line on its stdin resumes."""
    proc = subprocess.Popen(
        [*CLI, *map(str, args)],
        env={**env, PAUSE_ENV: stage},
        cwd=cwd,
        preexec_fn=terminal_sigint,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    for line in proc.stderr:
        if line.startswith(f"paused at {stage.split(':')[0]}"):
            return proc
    proc.kill()
    pytest.fail(f"the command ended without pausing at {stage}: {proc.communicate()}")


def resume(proc: subprocess.Popen, timeout: float = 300) -> tuple[str, str]:
    proc.stdin.write("\n")
    proc.stdin.flush()
    return proc.communicate(timeout=timeout)


# -- prune: an emptied folder, a mass vanishing, --dry-run, --force ---------------------------------------------


def emptied(folder: Path, elsewhere: Path) -> None:
    """What an unmounted volume leaves: the folder is there, its files are not."""
    elsewhere.mkdir()
    for f in folder.iterdir():
        f.rename(elsewhere / f.name)


def test_prune_of_a_folder_left_empty_removes_nothing_and_says_why(tmp_path, tiny_model_dir, settings):
    folder, data = make_folder(tmp_path / "volume"), settings.data_dir
    ingest_here(settings, folder)
    before = stored(data)
    emptied(folder, tmp_path / "unmounted")
    proc = run_cli(["ingest", folder, "--prune", "--json"], env_for(tiny_model_dir, data), tmp_path)
    assert proc.returncode == 1, proc.stderr  # a scheduler sees it
    report = json.loads(proc.stdout)
    assert stored(data) == before
    assert report["documents_pruned"] == [] and report["pages_removed"] == 0
    (held,) = report["prune_withheld"]
    assert held["path"] == str(folder) and "no supported file" in held["reason"]
    assert sorted(Path(p).name for p in held["documents"]) == ["a.pdf", "b.png", "c.tiff"]
    assert [f["path"] for f in report["failures"]] == [str(folder)] and "--force" in report["failures"][0]["reason"]


def test_prune_when_most_documents_vanish_at_once_removes_nothing(tmp_path, settings):
    folder = make_folder(tmp_path / "docs")
    ingest_here(settings, folder)
    (folder / "a.pdf").unlink()
    (folder / "b.png").unlink()
    report = ingest_here(settings, folder, prune=True)
    assert report["documents_pruned"] == [] and len(stored(settings.data_dir)) == 6
    assert "2 of its 3 stored documents" in report["prune_withheld"][0]["reason"]


def test_dry_run_says_what_prune_would_remove_and_changes_nothing(tmp_path, tiny_model_dir, settings):
    folder, data = make_folder(tmp_path / "docs"), settings.data_dir
    ingest_here(settings, folder)
    before = stored(data)
    (folder / "b.png").unlink()
    report = ingest_here(settings, folder, prune=True, dry_run=True)
    assert report["dry_run"] and report["documents_pruned"] == [str(folder / "b.png")] and report["pages_removed"] == 1
    text = run_cli(["ingest", folder, "--prune", "--dry-run"], env_for(tiny_model_dir, data), tmp_path)
    assert text.returncode == 0, text.stderr
    assert f"would prune: {folder / 'b.png'}" in text.stdout.splitlines()
    assert stored(data) == before


def test_a_dry_run_reads_no_page_and_writes_none(tmp_path, settings):
    folder = make_folder(tmp_path / "docs")
    report = ingest_here(settings, folder, dry_run=True)
    assert report["pages_added"] == 6 and len(report["documents_added"]) == 3
    assert report["timings"]["encode_s"] == 0 and report["timings"]["rasterize_s"] == 0
    assert not settings.shard_path().exists()


def test_force_prunes_a_folder_left_empty(tmp_path, settings):
    folder = make_folder(tmp_path / "volume")
    ingest_here(settings, folder)
    emptied(folder, tmp_path / "gone")
    report = ingest_here(settings, folder, prune=True, force=True)
    assert len(report["documents_pruned"]) == 3 and stored(settings.data_dir) == {}


# -- an unfinished document and a run over other paths ---------------------------------------------------------


def test_an_unfinished_document_outside_the_runs_paths_is_kept_and_named(tmp_path, tiny_model_dir, settings):
    folder, data = make_folder(tmp_path / "docs"), settings.data_dir
    env = env_for(tiny_model_dir, data)
    killed([folder], env, tmp_path, "before_upsert:2")  # a.pdf: pages 1 and 2 of 3
    unfinished = stored(data)
    assert len(unfinished) == 2
    other = tmp_path / "other"
    other.mkdir()
    page_image(["another folder"], size=SMALL).save(other / "d.png")
    proc = run_cli(["ingest", other], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert unfinished.items() <= stored(data).items()  # nothing of it was "cleaned"
    assert f"left unfinished (outside these paths; ingest its file to finish it): {folder / 'a.pdf'}" in (
        proc.stdout.splitlines()
    )
    # A run over its folder finishes it.
    report = ingest_here(settings, folder)
    assert report["pages_skipped"] == 2 and stored(data).keys() == expected_ids(folder) | expected_ids(other)


# -- collection names ----------------------------------------------------------------------------------------------

BAD_NAMES = ["../../x", "", ".", "..", "a/b", "-dash", "name with space"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_collection_name_that_is_no_plain_name_is_refused_by_the_settings(name):
    with pytest.raises(ValueError, match="cannot name a collection"):
        Settings(collection=name)


@pytest.mark.parametrize("name", ["../../x", ""])
def test_a_collection_name_given_by_the_environment_is_one_line_and_writes_nothing(tmp_path, tiny_model_dir, name):
    data = tmp_path / "data"
    proc = run_cli(["info"], cli_env(tiny_model_dir, data, TOKENDIRECT_COLLECTION=name), tmp_path)
    assert "TOKENDIRECT_COLLECTION" in usage_error(proc)
    assert not data.exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize("engine", [None, ":memory:"])
def test_every_engine_refuses_a_collection_name_set_past_the_settings(settings, engine):
    copied = settings.model_copy(update={"collection": "../../x", "qdrant_url": engine})
    with pytest.raises(ConfigError, match="TOKENDIRECT_COLLECTION"):
        open_store(copied)


# -- a full disk ---------------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 512 MB tmpfs (the engine keeps 256 MB in hand), unmounted afterwards."""
    where = tmp_path / "disk"
    why = mount(where, "-t", "tmpfs", "-o", "size=512m", "tmpfs")
    if why:
        pytest.skip(why)
    yield where
    unmount(where)


def test_ingest_stops_before_the_disk_fills_and_reports_what_it_stored(tmp_path, tiny_model_dir, small_disk):
    folder, data = make_folder(tmp_path / "docs"), small_disk / "data"
    env = env_for(tiny_model_dir, data)
    proc = paused(["ingest", folder], env, tmp_path, "after_write:1")
    filler = fill_disk(small_disk, disk.RESERVE - 8 * disk.MB)
    out, err = resume(proc)
    assert proc.returncode == 2, (out, err)  # not 135 (SIGBUS)
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert "not enough free space" in line and "TOKENDIRECT_DATA_DIR" in line
    assert "the run stopped; what it had done:" in out and "added 2 pages" in out
    (logged,) = run_log(data)
    assert (logged["exit_code"], logged["pages_added"]) == (2, 2)
    filler.unlink()
    assert len(stored(data)) == 2  # the stored pages are intact; the next run adds the rest
    assert run_cli(["ingest", folder], env, tmp_path).returncode == 0
    assert stored(data).keys() == expected_ids(folder)


def test_info_on_a_full_disk_is_one_line_not_a_crash(tmp_path, tiny_model_dir, small_disk):
    folder, data = make_folder(tmp_path / "docs"), small_disk / "data"
    env = env_for(tiny_model_dir, data)
    assert run_cli(["ingest", folder], env, tmp_path).returncode == 0
    fill_disk(small_disk, 1 * disk.MB)
    for command in (["info"], ["search", "alpha"]):
        proc = run_cli(command, env, tmp_path)
        assert "not enough free space to open the embedded store" in usage_error(proc), command


def test_too_little_room_for_the_index_build_stops_with_the_report(tmp_path, tiny_model_dir, small_disk):
    folder, data = make_folder(tmp_path / "docs"), small_disk / "data"
    env = env_for(tiny_model_dir, data)
    proc = paused(["ingest", folder, "--json"], env, tmp_path, "after_write:3")  # the last of three batches
    fill_disk(small_disk, disk.RESERVE + 64 * 1024)  # room for the engine, not for the index of 6 pages
    out, err = resume(proc)
    assert proc.returncode == 2, err
    document = json.loads(out)
    assert "build the search index" in document["error"] and document["report"]["pages_added"] == 6
    assert "they are stored" in err


# -- a data directory that is a file, or read-only --------------------------------------------------------------

COMMANDS = {
    "ingest": ["ingest", "{docs}"],
    "import": ["import", "{export}"],
    "info": ["info"],
    "search": ["search", "x"],
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir) -> Path:
    """An export of a one-page collection (for import)."""
    root = tmp_path_factory.mktemp("exported")
    page_image(["exported page"], size=SMALL).save(root / "page.png")
    s = settings_for(tiny_model_dir, root / "data")
    ingest_here(s, root / "page.png")
    with open_store(s) as store:
        export_collection(store, root / "pages.zip")
    return root / "pages.zip"


@pytest.mark.parametrize("command", COMMANDS)
def test_a_data_directory_that_is_a_file_is_one_line(tmp_path, tiny_model_dir, exported, command):
    data = tmp_path / "data"
    data.write_text("not a folder")
    args = [a.format(docs=make_folder(tmp_path / "docs"), export=exported) for a in COMMANDS[command]]
    line = usage_error(run_cli(args, cli_env(tiny_model_dir, data), tmp_path))
    assert f"the data directory {data} (TOKENDIRECT_DATA_DIR) is a file" in line
    assert data.read_text() == "not a folder"


@pytest.fixture(scope="module")
def read_only_copy(tmp_path_factory, tiny_model_dir) -> Path:
    """A data directory with six stored pages, bind-mounted read-only."""
    root = tmp_path_factory.mktemp("read-only")
    source = root / "data"
    ingest_here(settings_for(tiny_model_dir, source), make_folder(root / "docs"))
    where = root / "read-only"
    why = mount(where, "--bind", str(source)) or mount(where, "-o", "remount,bind,ro")
    if why:
        pytest.skip(why)
    yield where
    unmount(where)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_read_only_data_directory_is_one_line_that_says_what_to_do(
    tmp_path, tiny_model_dir, exported, read_only_copy, command
):
    args = [a.format(docs=read_only_copy.parent / "docs", export=exported) for a in COMMANDS[command]]
    line = usage_error(run_cli(args, cli_env(tiny_model_dir, read_only_copy), tmp_path))
    assert "read-only" in line and "TOKENDIRECT_DATA_DIR" in line


# -- the run log's exit code is the command's ----------------------------------------------------------------------


def test_a_partial_run_logs_the_exit_code_it_exits_with(tmp_path, tiny_model_dir, settings):
    folder, data = make_folder(tmp_path / "docs"), settings.data_dir
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7 truncated")
    proc = run_cli(["ingest", folder], env_for(tiny_model_dir, data), tmp_path)
    assert proc.returncode == 1
    assert [(line["status"], line["exit_code"]) for line in run_log(data)] == [("partial", 1)]


def test_ctrl_c_exits_130_and_the_run_log_says_so(tmp_path, tiny_model_dir, settings):
    folder, data = make_folder(tmp_path / "docs"), settings.data_dir
    proc = paused(["ingest", folder], env_for(tiny_model_dir, data), tmp_path, "after_write:1")
    proc.send_signal(signal.SIGINT)
    out, err = resume(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "error: interrupted" in err
    assert [(line["status"], line["exit_code"]) for line in run_log(data)] == [("interrupted", 130)]


@pytest.mark.parametrize(
    "failure, code",
    [(None, 0), (KeyboardInterrupt(), 130), (DiskSpaceError("full"), 2), (ZeroDivisionError(), 3)],
)
def test_the_exit_code_of_each_way_a_run_ends(failure, code):
    assert exit_code_for(failure) == code


# -- the model guard compares the weights, not the folder ------------------------------------------------------


def test_the_same_checkpoint_in_another_folder_is_accepted(tmp_path, settings, tiny_model_dir):
    page_image(["moved model"], size=SMALL).save(tmp_path / "page.png")
    ingest_here(settings, tmp_path / "page.png")
    moved = shutil.copytree(tiny_model_dir, tmp_path / "moved-model")
    env = cli_env(moved, settings.data_dir)
    proc = run_cli(["search", "moved model", "--json"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["hits"]) == 1


def test_other_weights_are_refused_with_their_revisions_named(tiny_model_dir, other_model_dir):
    built = OcrModel(str(tiny_model_dir), device="cpu").identity
    other = OcrModel(str(other_model_dir), device="cpu").identity
    assert built.revision != other.revision
    with pytest.raises(ModelMismatchError) as refused:
        check_model({"model": built.model, "revision": built.revision, "dim": built.dim}, other, "pages")
    assert built.revision in str(refused.value) and other.revision in str(refused.value)


def test_a_branch_name_identifies_weights_only_with_its_model():
    one = ModelIdentity("org/model-a", "main", 1280)
    assert not one.same_weights(ModelIdentity("org/model-b", "main", 1280))
    assert one.same_weights(ModelIdentity("org/model-a", "main", 1280))
    commit = "0123456789abcdef0123456789abcdef01234567"
    assert ModelIdentity("/a/model", commit, 1280).same_weights(ModelIdentity("/b/model", commit, 1280))
    assert not ModelIdentity("/a/model", commit, 1280).same_weights(ModelIdentity("/a/model", commit, 64))


# -- image size limits: the project's own, not Pillow's -----------------------------------------------------------


def bilevel_png(path: Path, width: int, height: int) -> Path:
    """A huge page that is cheap to write and to decode (one bit a pixel)."""
    Image.new("1", (width, height), 1).save(path)
    return path


def test_a_limit_above_pillows_own_is_the_one_that_counts(tmp_path):
    big = bilevel_png(tmp_path / "big.png", 14000, 13000)  # 182 million pixels: Pillow alone refuses it
    assert count_pages(big, Limits(2000, 1 << 30, 200_000_000, 120, 4)) == 1
    with pytest.raises(InputError, match="TOKENDIRECT_MAX_IMAGE_PIXELS"):
        count_pages(big, Limits(2000, 1 << 30, 150_000_000, 120, 4))


def test_a_page_within_the_limit_raises_no_pillow_warning(tmp_path):
    big = bilevel_png(tmp_path / "big.png", 10000, 9500)  # 95 million pixels: Pillow alone would warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert count_pages(big) == 1


def test_ingest_shows_no_transformers_warning_or_weights_bar(tmp_path, tiny_model_dir):
    folder = tmp_path / "docs"
    folder.mkdir()
    Image.new("RGB", (1000, 3), "white").save(folder / "thin.png")  # the processor cannot tell its channels
    proc = run_cli(["ingest", folder], cli_env(tiny_model_dir, tmp_path / "data"), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "channel dimension" not in proc.stderr and "Loading weights" not in proc.stderr
    assert proc.stderr.strip() == ""


# -- export during an ingest, and unfinished documents --------------------------------------------------------------


def test_export_while_an_ingest_runs_is_refused_and_names_it(tmp_path, tiny_model_dir, settings):
    folder, data = make_folder(tmp_path / "docs"), settings.data_dir
    env = env_for(tiny_model_dir, data)
    proc = paused(["ingest", folder], env, tmp_path, "after_write:1")
    try:
        refused = run_cli(["export", tmp_path / "snapshot.zip", "--json"], env, tmp_path)
    finally:
        resume(proc)
    line = usage_error(refused)
    assert f"pid {proc.pid}" in line and "export when it has finished" in line
    assert json.loads(refused.stdout)["exit_code"] == 2
    assert not (tmp_path / "snapshot.zip").exists()


def test_info_and_export_name_unfinished_documents(tmp_path, tiny_model_dir, settings):
    folder, data = make_folder(tmp_path / "docs"), settings.data_dir
    env = env_for(tiny_model_dir, data)
    killed([folder], env, tmp_path, "before_upsert:2")
    info = json.loads(run_cli(["info", "--json"], env, tmp_path).stdout)
    assert info["documents"] == 1 and info["unfinished_documents"] == [str(folder / "a.pdf")]
    text = run_cli(["info"], env, tmp_path).stdout
    assert "unfinished_documents: 1" in text and "an ingest over their files finishes them" in text
    proc = run_cli(["export", tmp_path / "snapshot.zip", "--json"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["unfinished"] == [str(folder / "a.pdf")]
    assert "warning: 1 documents in the export lack pages" in proc.stderr


# -- file names that would break output lines ----------------------------------------------------------------------


def test_a_file_name_with_a_newline_stays_on_one_output_line(tmp_path, tiny_model_dir):
    folder = tmp_path / "docs"
    folder.mkdir()
    odd = folder / "in\nvoice\x1b[31m.png"
    page_image(["odd name"], size=SMALL).save(odd)
    env = cli_env(tiny_model_dir, tmp_path / "data")
    proc = run_cli(["ingest", folder], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"added: {folder}/in\\nvoice\\x1b[31m.png" in proc.stdout.splitlines()
    found = run_cli(["search", "odd name"], env, tmp_path)
    (hit,) = found.stdout.splitlines()
    assert "in\\nvoice\\x1b[31m.png" in hit
    assert ingest_here(settings_for(tiny_model_dir, tmp_path / "data"), folder)["documents_skipped"] == [str(odd)]


def test_printable_escapes_what_would_break_or_reorder_a_line():
    assert printable("a\nb\tc\rd") == "a\\nb\\tc\\rd"
    assert printable("x\x1b[2Jy\u202ez") == "x\\x1b[2Jy\\u202ez"
    assert printable("café 日本") == "café 日本"


def test_odd_names_in_a_json_report_stay_as_they_are(tmp_path, settings):
    (tmp_path / "docs").mkdir()
    odd = tmp_path / "docs" / "tab\there.png"
    page_image(["tab"], size=SMALL).save(odd)
    assert ingest_here(settings, tmp_path / "docs")["documents_added"] == [str(odd)]


def test_free_space_is_read_from_the_nearest_existing_folder(tmp_path):
    assert disk.free_bytes(tmp_path / "not" / "yet") == shutil.disk_usage(tmp_path).free


# -- a write killed at any moment --------------------------------------------------------------------------------

WRITER = """
import sys, uuid
import numpy as np
from core.model import ModelIdentity
from core.store import EdgeStore, PagePoint
from core.tensors import bfloat16_values

path, pages = sys.argv[1], int(sys.argv[2])
store = EdgeStore(path, "pages", wait=30)
store.bind(ModelIdentity("writer", "r1", 256, 1121))
print("bound", flush=True)
for start in range(0, pages, 4):
    store.upsert([
        PagePoint(str(uuid.UUID(int=k + 1)), {"doc_id": "d", "page": k + 1},
                  bfloat16_values(np.random.default_rng(k).standard_normal((1121, 256), dtype=np.float32)))
        for k in range(start, min(pages, start + 4))
    ])
    print("wrote", flush=True)
store.close()
"""


def test_a_write_killed_at_any_moment_leaves_every_stored_page_whole(tmp_path):
    """Pages of 1121 x 256 tokens are written four at a time by another process, which is killed (SIGKILL) at
    staggered moments after one of its writes returned, while it prepares or writes the next; after each kill, every
    page the store holds comes back with exactly the tokens written, every write that returned is there, and the next
    writer carries on in the same shard to the last page."""
    import time
    import uuid

    import numpy as np

    from core.store import EdgeStore
    from core.tensors import bfloat16_values

    path, pages = tmp_path / "pages", 24
    seen = []
    # (writes returned before the kill, then seconds more): the kill falls somewhere in the writes that follow
    for written, delay in ((1, 0.0), (2, 0.05), (1, 0.2), (3, 0.1), (None, None)):
        proc = subprocess.Popen(
            [CLI[0], "-c", WRITER, str(path), str(pages)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout.readline().strip() == "bound", proc.communicate()[1][-2000:]
            if written is None:
                assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
            else:
                for _ in range(written):
                    assert proc.stdout.readline().strip() == "wrote", proc.communicate()[1][-2000:]
                time.sleep(delay)
                proc.kill()
                proc.wait()
        finally:
            proc.kill()
        store = EdgeStore(path, "pages", wait=5)
        try:
            held = {p.point_id: p for batch in store.scroll(8) for p in batch}
        finally:
            store.close()
        for point_id, page in held.items():
            k = uuid.UUID(point_id).int - 1
            expected = bfloat16_values(np.random.default_rng(k).standard_normal((1121, 256), dtype=np.float32))
            assert np.array_equal(page.tokens, expected), f"page {k + 1} came back changed"
        if written is not None:
            assert len(held) >= 4 * written, f"a write that returned was lost: {len(held)} pages held"
        seen.append(len(held))
    assert seen[-1] == pages
    assert any(n < pages for n in seen[:-1]), f"every kill came after the last write: {seen}"
