"""One writer per collection, and a line in the run log for every run: what schedulers and people read."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from pathlib import Path

from config import Settings
from core.clock import utc_now
from core.errors import BusyError
from core.locks import FileLock, command_line
from core.pages import display_path
from ingest.plan import WHOLE, Partition

log = logging.getLogger("tokendirect.ingest")

RUN_LOG = "ingest-runs.jsonl"  # under DATA_DIR: one JSON line per run
EXIT_CODES = {"ok": 0, "partial": 1}  # any other status: 2


def target(s: Settings) -> str:
    return s.qdrant_url or f"embedded store {s.shard_path()}"


def writer_lock_path(s: Settings, partition: Partition = WHOLE) -> Path:
    """One writer per (data dir, store, collection, partition): a server's collection gets its own lock name, and so
    does each partition of it (workers of other partitions run beside each other), but only jobs sharing this data
    directory on this host see it (README: "One writer")."""
    where = hashlib.sha256((s.qdrant_url or "embedded").encode()).hexdigest()[:12]
    part = "" if partition == WHOLE else f"-part{partition.index}of{partition.count}"
    return Path(s.data_dir) / "locks" / f"ingest-{s.collection}-{where}{part}.lock"


def take_writer_lock(s: Settings, wait: float, partition: Partition = WHOLE) -> FileLock:
    lock = FileLock(writer_lock_path(s, partition), command_line())
    try:
        lock.acquire(wait)
    except BusyError as exc:
        who = exc.holder.describe() if exc.holder else "another process"
        raise BusyError(
            f"another ingest into collection {s.collection!r} ({target(s)}"
            f"{'' if partition == WHOLE else f', partition {partition}'}) is running: {who}; "
            f"it was still running after {wait:g} s (--wait SECONDS to wait longer)",
            exc.holder,
        ) from None
    if lock.stale:
        log.warning("took over the ingest lock from %s, which no longer runs", lock.stale.describe())
    return lock


def append_run(s: Settings, paths: list, report: dict, started: str, status: str, error: str | None) -> None:
    line = {
        "started_at": started,
        "finished_at": utc_now(),
        "status": status,
        "exit_code": EXIT_CODES.get(status, 2),
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
