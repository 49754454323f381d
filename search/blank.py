"""The tokens the encoder makes of a blank canvas, by canvas size: the reference that query tokens carrying only blank
canvas are told apart by (search/__init__.py). They depend only on the weights, their dtype and the canvas size,
so they are encoded once and kept, in memory and on disk under DATA_DIR/cache/blank-canvas/, where later processes
(each command-line search is one) read them instead of encoding a blank canvas again.

A file that cannot be read or does not fit is encoded again and replaced; a cache folder that cannot be written
only costs the encoding.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger("tokendirect.search")

FOLDER = Path("cache") / "blank-canvas"


class BlankCanvases:
    """Blank-canvas tokens per canvas size, for one model (identified by `key`)."""

    MEMORY = 16  # sizes kept in memory (rendered queries differ only in height)

    def __init__(self, data_dir: str | Path | None, key: str, dim: int):
        self.folder = None if data_dir is None else Path(data_dir) / FOLDER / key
        self.dim = dim
        self._memory: dict[tuple[int, int], np.ndarray] = {}

    @staticmethod
    def key(model: str, revision: str, dtype: str) -> str:
        """One folder per set of weights and dtype: the revision says which weights, not the folder they sit in."""
        return hashlib.sha256(f"{revision}\n{dtype}".encode()).hexdigest()[:20] + "-" + _slug(model)

    def get(self, size: tuple[int, int]) -> np.ndarray | None:
        """The tokens of a blank canvas of `size`, from memory or disk; None when they must be encoded."""
        tokens = self._memory.get(size)
        if tokens is None and self.folder is not None:
            tokens = self._read(self._file(size))
            if tokens is not None:
                self._remember(size, tokens)
        return tokens

    def put(self, size: tuple[int, int], tokens: np.ndarray) -> np.ndarray:
        tokens = np.ascontiguousarray(tokens, dtype=np.float32)
        self._remember(size, tokens)
        if self.folder is not None:
            self._write(self._file(size), tokens)
        return tokens

    def _remember(self, size, tokens) -> None:
        if size not in self._memory and len(self._memory) >= self.MEMORY:
            self._memory.pop(next(iter(self._memory)))
        self._memory[size] = tokens

    def _file(self, size: tuple[int, int]) -> Path:
        return self.folder / f"{size[0]}x{size[1]}.npy"

    def _read(self, path: Path) -> np.ndarray | None:
        try:
            tokens = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.debug("blank-canvas cache %s unreadable (%s); encoding it again", path, exc)
            return None
        if tokens.ndim != 2 or tokens.shape[1] != self.dim or tokens.dtype != np.float32:
            log.debug("blank-canvas cache %s has shape %s; encoding it again", path, tokens.shape)
            return None
        return tokens

    def _write(self, path: Path, tokens: np.ndarray) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    np.save(f, tokens, allow_pickle=False)
                os.replace(tmp, path)  # whole or not at all, for a process reading it at the same moment
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            log.debug("blank-canvas cache not written to %s: %s", path, exc)


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in Path(name).name)[:40] or "model"
