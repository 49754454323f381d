"""Unattended ingest: killed runs completed by the next, updates, --prune, one writer, shared access to the shard.

Every run is a `tokendirect` subprocess with the tiny model on small pages (one 1024 px view each). Kill points
are chosen with the TOKENDIRECT_CRASH_AT hook (SIGKILL at a named stage), plus one kill at a moment chosen by
time. After each sequence the store's point ids are compared with the ids the files on disk call for.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from core.pages import file_digest
from core.store import EdgeStore
from ingest import Ingestor
from ingest.runlog import RUN_LOG
from tests.helpers import (
    CLI,
    SMALL,
    cli_env,
    expected_ids,
    ingest_here,
    killed,
    make_folder,
    page_image,
    run_cli,
    small_pdf,
    small_tiff,
    stored,
    usage_error,
)


def assert_whole(points: dict[str, dict]) -> None:
    """Every stored document has all its pages."""
    docs: dict[str, set] = {}
    for payload in points.values():
        docs.setdefault(payload["doc_id"], set()).add(payload["page"])
    for doc_id, pages in docs.items():
        total = next(p["pages"] for p in points.values() if p["doc_id"] == doc_id)
        assert pages == set(range(1, total + 1)), (doc_id, pages, total)


def env_for(model_dir: Path, data: Path, **extra) -> dict[str, str]:
    return cli_env(model_dir, data, TOKENDIRECT_BATCH_SIZE="2", **extra)


def test_a_run_killed_after_a_write_is_completed_by_the_next(tmp_path, tiny_model_dir, settings):
    folder, data = make_folder(tmp_path / "docs"), settings.data_dir
    killed([folder], env_for(tiny_model_dir, data), tmp_path, "after_upsert:2")
    before = stored(data)
    assert 0 < len(before) < 6 and before.keys() <= expected_ids(folder)

    report = ingest_here(settings, folder)
    assert report["failures"] == []
    after = stored(data)
    assert after.keys() == expected_ids(folder)
    assert_whole(after)
    assert report["pages_added"] == 6 - len(before) and report["pages_skipped"] == len(before)
    # The killed run's lock named a process that is gone; the next run took over, and the run log has both.
    lines = [json.loads(line) for line in (data / RUN_LOG).read_text().splitlines()]
    assert [line["status"] for line in lines] == ["ok"]  # the killed run could not write its line
    assert lines[0]["pages_added"] == report["pages_added"]


def test_a_moved_file_keeps_its_pages_and_a_deleted_one_goes_only_with_prune(tmp_path, settings):
    folder, data = make_folder(tmp_path / "docs"), settings.data_dir
    ingest_here(settings, folder)
    (folder / "c.tiff").rename(folder / "c-moved.tiff")
    (folder / "b.png").unlink()
    report = ingest_here(settings, folder)
    assert report["pages_added"] == 0 and report["failures"] == []  # no re-encoding
    assert len(stored(data)) == 6 and report["documents_pruned"] == []
    report = ingest_here(settings, folder, prune=True)
    assert report["pages_added"] == 0 and report["failures"] == []
    assert [Path(p).name for p in report["documents_pruned"]] == ["b.png"]
    after = stored(data)
    assert after.keys() == expected_ids(folder)
    assert {Path(p["source"]).name for p in after.values()} == {"a.pdf", "c-moved.tiff"}


def test_a_touched_file_is_not_stored_again_and_its_new_mtime_is_recorded(tmp_path, settings):
    folder, data = make_folder(tmp_path / "docs"), settings.data_dir
    ingest_here(settings, folder)
    os.utime(folder / "a.pdf", ns=(1_000_000_000, 1_000_000_000))
    report = ingest_here(settings, folder)
    assert report["pages_added"] == 0
    assert report["documents_skipped"] == [str(folder / name) for name in ("a.pdf", "b.png", "c.tiff")]
    assert {p["file_mtime_ns"] for p in stored(data).values() if Path(p["source"]).name == "a.pdf"} == {1_000_000_000}
    assert len((data / RUN_LOG).read_text().splitlines()) == 2


def test_an_unfinished_document_of_a_changed_file_is_cleaned(tmp_path, tiny_model_dir, settings):
    folder, data = make_folder(tmp_path / "docs"), settings.data_dir
    old_a = file_digest(folder / "a.pdf")
    killed([folder], env_for(tiny_model_dir, data), tmp_path, "before_upsert:2")  # a.pdf: pages 1 and 2 of 3
    assert {p["doc_id"] for p in stored(data).values()} == {old_a}

    small_pdf(folder / "a.pdf", ["alpha, second edition", "new page two", "new three"])  # changed meanwhile
    report = ingest_here(settings, folder)
    assert report["failures"] == []
    assert stored(data).keys() == expected_ids(folder)
    assert [Path(p).name for p in report["documents_cleaned"]] == ["a.pdf"]


def test_an_update_never_leaves_a_gap(tmp_path, tiny_model_dir, settings):
    """An update killed after the new version is whole but before the old one goes: both are whole, never neither;
    the next run ends the update."""
    folder, data = make_folder(tmp_path / "docs"), settings.data_dir
    ingest_here(settings, folder)
    small_tiff(folder / "c.tiff", ["charlie revised", "two", "and three"])
    killed([folder], env_for(tiny_model_dir, data), tmp_path, "before_delete:1")
    between = stored(data)
    assert_whole(between)
    assert expected_ids(folder) <= between.keys() and len(between) == 7 + 2  # c.tiff: 3 new pages, 2 old
    report = ingest_here(settings, folder)
    assert report["failures"] == []
    assert stored(data).keys() == expected_ids(folder)
    assert [Path(p).name for p in report["documents_updated"]] == ["c.tiff"]
    assert report["pages_added"] == 0 and report["pages_removed"] == 2


def test_killed_at_a_moment_chosen_by_time(tmp_path, tiny_model_dir, settings):
    """SIGKILL 0.7 s after the first page write begins, wherever the run then is."""
    folder, data = make_folder(tmp_path / "docs"), settings.data_dir
    killed([folder], env_for(tiny_model_dir, data), tmp_path, "before_upsert:1+0.7")
    report = ingest_here(settings, folder)
    assert report["failures"] == []
    assert stored(data).keys() == expected_ids(folder)
    assert report["pages_added"] + report["pages_skipped"] == 6


def test_one_writer_and_searches_while_an_ingest_runs(tmp_path, tiny_model_dir):
    """The first ingest pauses after its first write (a test hook) and stays paused while a second ingest is refused
    and a search runs; then it goes on and finishes."""
    folder, data = tmp_path / "docs", tmp_path / "data"
    folder.mkdir()
    small_pdf(folder / "long.pdf", [f"page {k}" for k in range(1, 9)])
    env = env_for(tiny_model_dir, data, TOKENDIRECT_PAUSE_AT="after_write:1")
    first = subprocess.Popen(
        [*CLI, "ingest", str(folder), "--json"],
        env=env,
        cwd=tmp_path,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        for line in first.stderr:
            if line.startswith("paused at after_write"):
                break
        else:
            pytest.fail("the first ingest ended without pausing")
        resume = {k: v for k, v in env.items() if k != "TOKENDIRECT_PAUSE_AT"}
        busy = run_cli(["ingest", str(folder), "--wait", "0.5"], resume, tmp_path)
        search = run_cli(["search", "page 3", "--json"], resume, tmp_path)
        assert first.poll() is None  # still paused: both ran while it held the writer lock
        first.stdin.write("\n")
        first.stdin.flush()
        out, err = first.communicate(timeout=300)
    finally:
        first.kill()
    message = usage_error(busy)
    assert "another ingest" in message and f"pid {first.pid}" in message and "--wait" in message
    assert search.returncode == 0, search.stderr
    assert json.loads(search.stdout)["hits"]
    assert first.returncode == 0, err
    assert json.loads(out)["pages_added"] == 8
    assert stored(data).keys() == expected_ids(folder)
    log = [json.loads(line) for line in (data / RUN_LOG).read_text().splitlines()]
    assert sorted(line["status"] for line in log) == ["busy", "ok"]


def test_ingest_waits_for_the_writer_lock_and_takes_over_a_dead_holders_lock(tmp_path, settings):
    from core.locks import FileLock, read_holder

    folder = tmp_path / "docs"
    folder.mkdir()
    page_image(["waited for"], size=SMALL).save(folder / "w.png")
    ingestor = Ingestor.from_settings(settings)
    lock_path = ingestor.lock_path
    holder = FileLock(lock_path, "another ingest").acquire()
    threading.Timer(0.5, holder.release).start()
    t = time.monotonic()
    report = ingestor.ingest([folder], wait=30)
    assert time.monotonic() - t >= 0.5 and report.pages_added == 1
    # A holder killed with its lock held leaves its name in the file; the kernel has dropped the lock itself.
    lock_path.write_text(json.dumps({"pid": 999999, "host": "gone", "started_at": "then", "command": "ingest"}))
    taken = FileLock(lock_path, "next").acquire(0)
    assert taken.stale is not None and taken.stale.pid == 999999
    assert read_holder(lock_path).pid == os.getpid()
    taken.release()
    ingestor.close()


def test_a_command_that_cannot_get_the_shard_in_time_names_the_holder(tmp_path, tiny_model_dir, settings):
    from core.store import open_store

    folder = tmp_path / "docs"
    folder.mkdir()
    page_image(["held"], size=SMALL).save(folder / "held.png")
    ingest_here(settings, folder)
    env = cli_env(tiny_model_dir, settings.data_dir, TOKENDIRECT_STORE_WAIT="0.5")
    with open_store(settings) as store:
        store.count()  # this process holds the shard now
        proc = run_cli(["info", "--json"], env, tmp_path)
    message = usage_error(proc)
    assert f"pid {os.getpid()}" in message and "TOKENDIRECT_STORE_WAIT" in message
    assert "TOKENDIRECT_QDRANT_URL" in message
    assert run_cli(["info", "--json"], env, tmp_path).returncode == 0  # free again


def test_odd_names_are_stored_and_unreadable_files_named(tmp_path, settings):
    """Non-UTF-8 and very long names are ingested (and not pruned); an unreadable file fails alone. When the tests
    run as root, which reads any file, the run drops to an unprivileged user (effective uid) around the ingest."""
    root = Path(tempfile.mkdtemp(prefix="td-names-"))
    try:
        folder, data = root / "docs", root / "data"
        folder.mkdir()
        data.mkdir()
        odd = os.path.join(os.fsencode(folder), b"caf\xe9-latin1.png")
        page_image(["latin-1 name"], size=SMALL).save(os.fsdecode(odd))
        long_name = folder / ("x" * 240 + ".pdf")
        small_pdf(long_name, ["a long name"])
        secret = folder / "secret.png"
        page_image(["secret"], size=SMALL).save(secret)
        secret.chmod(0)
        for path, mode in ((root, 0o755), (folder, 0o755), (data, 0o777)):
            path.chmod(mode)
        model = shutil.copytree(settings.model, root / "model")  # a checkpoint the unprivileged user can read
        for path in (model, *model.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        s = settings.model_copy(update={"data_dir": data, "model": str(model)})
        ingestor = Ingestor.from_settings(s)
        ingestor.model.load()
        unprivileged = os.geteuid() == 0
        if unprivileged:
            os.setegid(65534)
            os.seteuid(65534)
        try:
            report = ingestor.ingest([folder]).to_dict()
        finally:
            if unprivileged:
                os.seteuid(0)
                os.setegid(0)
            ingestor.close()
        assert [(Path(f["path"]).name, f["reason"]) for f in report["failures"]] == [
            ("secret.png", "PermissionError: Permission denied")
        ]
        assert sorted(report["documents_added"]) == sorted([str(folder / "caf\\xe9-latin1.png"), str(long_name)])
        secret.unlink()  # root could read it now
        report = ingest_here(s, folder, prune=True)
        assert report["pages_added"] == 0 and report["pages_skipped"] == 2 and report["documents_pruned"] == []
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_holder_that_keeps_the_shard_gives_it_up_when_asked(tmp_path):
    """Ingest keeps the shard between batches (opening it costs about a second), but only until another process
    announces that it waits: then it closes it at its next pause."""
    from core.model import ModelIdentity

    path = tmp_path / "qdrant" / "pages"
    store = EdgeStore(path, "pages")
    store.bind(ModelIdentity("m", "r", 8))
    store.close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time\n"
                "from core.store import EdgeStore\n"
                f"s = EdgeStore({str(path)!r}, 'pages')\n"
                "with s.holding():\n"
                "    with s.window(): s.count()\n"
                "    print('holding', flush=True)\n"
                "    end = time.monotonic() + 30\n"
                "    while s.is_open and time.monotonic() < end:\n"
                "        s.yield_if_wanted(); time.sleep(0.1)\n"
                "    print('kept' if s.is_open else 'yielded', flush=True)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        waiter = EdgeStore(path, "pages", wait=20)
        assert waiter.count() == 0
        waiter.close()
        assert waiter.waited_s < 5
        assert holder.stdout.readline().strip() == "yielded"
    finally:
        holder.kill()
        holder.wait()
