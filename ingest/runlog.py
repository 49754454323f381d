"""One writer per collection, and a line in the run log for every run: what schedulers and people read."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
from pathlib import Path

from config import Settings
from core.clock import utc_now
from core.errors import BusyError, StoreError
from core.locks import FileLock, command_line
from core.pages import display_path
from core.store import collection_name
from core.store.disk import data_dir_problem
from ingest.plan import WHOLE, Partition

log = logging.getLogger("tokendirect.ingest")

RUN_LOG = "ingest-runs.jsonl"  # under DATA_DIR: one JSON line per run


def target(s: Settings) -> str:
    return s.qdrant_url or f"embedded store {s.shard_path()}"


def writer_lock_path(s: Settings, partition: Partition = WHOLE) -> Path:
    """One writer per (data dir, store, collection, partition): a server's collection gets its own lock name, and so
    does each partition of it (workers of other partitions run beside each other), but only jobs sharing this data
    directory on this host see it (README: "One writer")."""
    where = hashlib.sha256((s.qdrant_url or "embedded").encode()).hexdigest()[:12]
    part = "" if partition == WHOLE else f"-part{partition.index}of{partition.count}"
    return Path(s.data_dir) / "locks" / f"ingest-{collection_name(s)}-{where}{part}.lock"


def take_writer_lock(s: Settings, wait: float, doing: str = "ingest", partition: Partition = WHOLE) -> FileLock:
    """The collection's writer lock (of one partition, for a worker of several), waiting up to `wait` seconds for a
    running ingest (and saying so on stderr); BusyError names the holder when it does not let go in time."""
    lock = FileLock(writer_lock_path(s, partition), command_line())
    try:
        try:
            lock.acquire(0)
        except BusyError as exc:
            if wait <= 0:
                raise
            who = exc.holder.describe() if exc.holder else "another process"
            log.warning("waiting up to %g s for the ingest into collection %r to finish: %s", wait, s.collection, who)
            lock.acquire(wait)
    except BusyError as exc:
        who = exc.holder.describe() if exc.holder else "another process"
        raise BusyError(
            f"another ingest into collection {s.collection!r} ({target(s)}"
            f"{'' if partition == WHOLE else f', partition {partition}'}) is running: {who}; "
            + (
                f"it was still running after {wait:g} s (--wait SECONDS to wait longer)"
                if doing == "ingest"
                else f"{doing} when it has finished (or --wait SECONDS): a copy taken now would hold half-written "
                "documents"
            ),
            exc.holder,
        ) from None
    except OSError as exc:
        raise StoreError(data_dir_problem(s.shard_path(), exc)) from None
    if lock.stale:
        log.warning("took over the ingest lock from %s, which no longer runs", lock.stale.describe())
    return lock


@contextlib.contextmanager
def no_ingest(s: Settings, wait: float, doing: str):
    """Hold the collection's writer lock through an export or import, so that no ingest runs meanwhile (an export
    taken during one would hold half-written documents; an import would be a second writer). Where the lock file
    cannot be made (a read-only data directory), no ingest from this data directory can run either."""
    try:
        lock = take_writer_lock(s, wait, doing)
    except StoreError:
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def append_run(
    s: Settings, paths: list, report: dict, started: str, status: str, error: str | None, exit_code: int
) -> None:
    line = {
        "started_at": started,
        "finished_at": utc_now(),
        "status": status,
        "exit_code": exit_code,  # what the command line exits with for this run
        "error": error,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "collection": s.collection,
        "store": target(s),
        "paths": [display_path(p) for p in paths],
        **report,
    }
    try:
        path = Path(s.data_dir) / RUN_LOG
        path.parent.mkdir(parents=True, exist_ok=True)
        # One write with O_APPEND: concurrent writers never interleave within a line.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace"))
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("could not append to the run log: %s", exc)
