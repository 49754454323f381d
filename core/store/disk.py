"""The embedded engine's disk: free space checked before it writes, and plain words for a data directory that cannot
be used.

qdrant-edge maps its files into memory and grows them in chunks of up to 32 MB. When the disk fills while it writes
through such a mapping, the kernel kills the process with SIGBUS: no error, no message, exit code 135. So space is
checked before the engine gets the chance: before the shard is opened or created, before each write (for the pages
about to be written) and before the index build. Measured (README, "Storage"): a page costs about 2.9 times its
float16 tokens on disk (2.6 times the bytes of all its vectors) in a shard with a write-ahead log (shards made
before the log was dropped), 1.4 times without; the index build at the end of a run adds about 0.07 times its
tokens; on tmpfs the engine allocates whole chunks at once (16 MB to create a collection, 35 to 77 MB when it opens
a shard or a chunk fills).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

from core.errors import ConfigError, DiskSpaceError, first_line

MB = 1 << 20
RESERVE = 256 * MB  # always left free: the engine's chunk allocations (several 32 MB chunks at once on tmpfs)
# Bytes on disk per byte of vectors written: measured 2.6 while shards kept a write-ahead log (a page's vectors in the
# segment and again in the log), which shards made before still do; 1.04 without one (`tokendirect bench page`).
WRITE_FACTOR = 3.0
INDEX_FACTOR = 0.5  # bytes the index build may add per byte of vectors written since the last build (measured 0.06)


def free_bytes(path: Path) -> int | None:
    """Free space (for an unprivileged writer) on the file system that holds `path`, or its nearest existing parent;
    None when that cannot be told."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        try:
            usage = shutil.disk_usage(candidate)
        except OSError:
            continue
        return usage.free
    return None


def require(path: Path, needed: int, doing: str) -> None:
    """Raise DiskSpaceError unless the disk holding `path` has `needed` bytes free beyond RESERVE."""
    free = free_bytes(path)
    if free is None or free >= needed + RESERVE:
        return
    raise DiskSpaceError(
        f"not enough free space to {doing}: the disk holding {path} has {free / MB:.0f} MB free, and the embedded "
        f"store needs about {(needed + RESERVE) / MB:.0f} MB ({RESERVE // MB} MB of it kept in hand for the engine "
        "to grow its files); free some space or move TOKENDIRECT_DATA_DIR to a larger disk. Nothing stored so far "
        "is lost"
    )


def check_data_dir(data_dir: Path) -> None:
    """Refuse a data directory that is a file, or lies under one, before anything tries to write there."""
    problem = _file_in_the_way(Path(data_dir))
    if problem:
        raise ConfigError(problem)


def _file_in_the_way(data_dir: Path) -> str | None:
    for candidate in (data_dir, *data_dir.parents):
        if candidate.exists():
            if candidate.is_dir():
                return None
            where = "is a file" if candidate == data_dir else f"cannot be made: {candidate} is a file"
            return f"the data directory {data_dir} (TOKENDIRECT_DATA_DIR) {where}, not a folder; set another"
    return None


def data_dir_problem(path: Path, exc: OSError) -> str:
    """Why the embedded store at `path` (DATA_DIR/qdrant/<collection>) cannot be opened, in words that say what to
    do."""
    in_the_way = _file_in_the_way(Path(path).parent.parent)
    if in_the_way:
        return in_the_way
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        why = "is on a read-only file system" if exc.errno == errno.EROFS else "cannot be written by this user"
        return (
            f"the embedded store {path} {why}: the embedded engine writes to its files even to read them. Copy the "
            "data directory to a writable place and point TOKENDIRECT_DATA_DIR there, or import an export of it "
            "into a Qdrant server (TOKENDIRECT_QDRANT_URL), which can serve it read-only"
        )
    if exc.errno == errno.ENOSPC:
        return f"the disk holding the embedded store {path} is full; free some space"
    return f"cannot open the embedded store {path}: {exc.strerror or exc}"


def engine_problem(path: Path, exc: Exception, doing: str = "open") -> str:
    """The engine's own failure to `doing` (open, update, ...) the store at `path`, in the words of
    `data_dir_problem` when it was the file system that refused (the engine's messages end in `(os error N)`)."""
    found = re.search(r"\(os error (\d+)\)", str(exc))
    if found is not None:
        code = int(found.group(1))
        return data_dir_problem(path, OSError(code, os.strerror(code)))
    return f"cannot {doing} the embedded store {path}: {first_line(exc)}"
