"""Sharing a store between the stages of one process, and the embedded shard between processes.

In a process, every stage that opens the same shard (or qdrant-client's in-process engine) gets the same handle,
counted: a shard admits a single holder, and an in-process client's data lives in its handle.

Between processes, a qdrant-edge shard admits one at a time. A lock file beside the shard (`<collection>.lock`)
queues them and names the holder; a waiting process announces itself (core/locks.py), so a holder that keeps the
shard between short windows of work (ingest) gives it back when asked.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

from core.errors import BusyError, StoreError
from core.locks import FileLock, command_line
from core.store.disk import data_dir_problem, engine_problem

log = logging.getLogger("tokendirect.store")


class SharedHandles:
    """One handle per key (a shard's path, an in-process client) per process, counted."""

    def __init__(self):
        self._lock = threading.Lock()
        self._handles: dict[str, list] = {}

    def acquire(self, key: str, opener: Callable[[], Any]):
        with self._lock:
            entry = self._handles.get(key)
            if entry is None:
                entry = self._handles[key] = [opener(), 0]
            entry[1] += 1
            return entry[0]

    def release(self, key: str, closer: Callable[[Any], None]) -> None:
        with self._lock:
            entry = self._handles.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                del self._handles[key]
                closer(entry[0])


HANDLES = SharedHandles()


class HeldShard:
    """An open qdrant-edge shard and the lock file held for it; closing the shard gives the lock back."""

    def __init__(self, shard, lock: FileLock):
        self.shard = shard
        self.lock = lock
        # Exact counts by filter, kept till the next write: while this process holds the shard no other can write to
        # it, and every write here goes through EdgeStore._write, which clears them (a count scans every page).
        self.counts: dict = {}

    def wanted(self) -> bool:
        """Whether another process waits for this shard."""
        return self.lock.wanted()

    def close(self) -> None:
        try:
            self.shard.close()
        finally:
            self.lock.release()


def hold_shard(path: Path, opener: Callable[[], Any], wait: float) -> HeldShard:
    """Take the shard's lock file (waiting up to `wait` s), then open the shard with `opener`."""
    lock_path = path.parent / f"{path.name}.lock"
    lock = FileLock(lock_path, command_line())
    deadline = time.monotonic() + wait
    try:
        lock.acquire(wait)
    except BusyError as exc:
        raise StoreError(busy_message(path, exc.holder, wait)) from None
    except OSError as exc:  # a read-only data directory, for one
        raise StoreError(data_dir_problem(path, exc)) from None
    if lock.stale:
        log.info("took over the embedded store from %s, which no longer runs", lock.stale.describe())
    try:
        while True:
            try:
                shard = opener()
                break
            except StoreError:
                raise
            except Exception as exc:
                # A holder that does not take the lock file (an older version) still holds the WAL.
                if "WouldBlock" not in str(exc):
                    raise StoreError(engine_problem(path, exc)) from None
                if time.monotonic() >= deadline:
                    raise StoreError(busy_message(path, None, wait)) from None
                time.sleep(0.05)
    except BaseException:
        lock.release()
        raise
    return HeldShard(shard, lock)


def busy_message(path: Path, holder, wait: float) -> str:
    who = holder.describe() if holder else "another process"
    return (
        f"the embedded store {path} is in use by {who} and was not free within "
        f"{wait:g} s (TOKENDIRECT_STORE_WAIT); try again later, or run a Qdrant server "
        "(TOKENDIRECT_QDRANT_URL) for concurrent access"
    )


class Window:
    """`with store.window():` holds an embedded shard for the block only, then gives it back to other processes
    (unless an enclosing window, a `holding()` stretch or another stage of this process still uses it)."""

    def __init__(self, store):
        self.store = store

    def __enter__(self):
        self.store._depth += 1
        return self.store

    def __exit__(self, *exc) -> None:
        self.store._depth -= 1
        if self.store._depth == 0 and (not self.store._keep_open or self.store.wanted()):
            self.store.close()


class Holding:
    """`with store.holding():` keeps the shard open between windows (opening costs about a second) until another
    process asks for it; the holder calls `yield_if_wanted()` whenever it pauses."""

    def __init__(self, store):
        self.store = store

    def __enter__(self):
        self._before, self.store._keep_open = self.store._keep_open, True
        return self.store

    def __exit__(self, *exc) -> None:
        self.store._keep_open = self._before
