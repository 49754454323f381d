"""Advisory file locks that name their holder and survive a killed holder.

A lock is an `flock` on a small file that also records who holds it (pid, host, start time, command). The kernel
drops an `flock` when its process dies, SIGKILL included, so a lock left by a killed run is never in the way:
the file still names the dead holder, and the next taker reads that name, reports it as stale and overwrites it.

Limits: `flock` is local to one machine (and unreliable on some network file systems), so these locks exclude
processes that share a data directory on one host; they cannot see a process on another machine.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from core.clock import utc_now
from core.errors import BusyError

POLL_S = 0.02  # how often a waiting taker tries again: short, since windows of use are short


@dataclass
class Holder:
    pid: int
    host: str
    started_at: str
    command: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} ({self.command}, since {self.started_at})"

    @classmethod
    def current(cls, purpose: str) -> "Holder":
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=utc_now(),
            command=purpose,
        )


class FileLock:
    """An exclusive lock on `path`. `acquire(wait)` waits at most `wait` seconds; `release()` gives it back."""

    def __init__(self, path: str | Path, purpose: str):
        self.path = Path(path)
        self.purpose = purpose
        self._fd: int | None = None
        self.waited_s = 0.0  # how long the last acquire waited
        self.stale: Holder | None = None  # a killed holder this lock was taken over from

    @property
    def held(self) -> bool:
        return self._fd is not None

    @property
    def want_path(self) -> Path:
        return self.path.with_name(self.path.name + ".want")

    def acquire(self, wait: float = 0.0) -> "FileLock":
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        want = None
        start = time.monotonic()
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() - start >= wait:
                        raise BusyError(f"{self.path} is held", read_holder(self.path)) from None
                    if want is None and wait > 0:
                        want = _announce(self.want_path)  # lets a holder that could keep the lock see us
                    time.sleep(POLL_S)
            self.waited_s = time.monotonic() - start
            # We hold the lock, so whoever the file still names is gone (killed, or it crashed).
            self.stale = _parse(os.pread(fd, 4096, 0))
            record = json.dumps(Holder.current(self.purpose).__dict__).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, record, 0)
        except BaseException:
            os.close(fd)
            raise
        finally:
            if want is not None:
                os.close(want)
        self._fd = fd
        return self

    def wanted(self) -> bool:
        """Whether another process is waiting for this lock (it holds a shared lock on the `.want` file)."""
        try:
            fd = os.open(self.want_path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # drops the probe's lock, if it got one

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # an empty file: released cleanly, nothing stale to report
        except OSError:
            pass
        finally:
            os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _announce(path: Path) -> int | None:
    """A shared lock on `path`, held while waiting: waiters announce themselves without excluding each other."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:  # a holder probing at this instant: announce on the next try
        os.close(fd)
        return None
    return fd


def read_holder(path: str | Path) -> Holder | None:
    try:
        with open(path, "rb") as f:
            return _parse(f.read(4096))
    except OSError:
        return None


def _parse(data: bytes) -> Holder | None:
    try:
        return Holder(**json.loads(data)) if data.strip() else None
    except (ValueError, TypeError):
        return None


def command_line() -> str:
    """This process's command, short enough for a one-line message."""
    args = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
    text = " ".join(args)
    return text if len(text) <= 120 else text[:117] + "..."
