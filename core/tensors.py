"""Token sets between torch (the model) and numpy (the store), without losing a bit, and the array helpers every
stage shares."""

from __future__ import annotations

import array
import contextlib
import functools
import threading

import numpy as np


def to_numpy(tokens) -> np.ndarray:
    """bfloat16/float16 -> float32 is exact, and numpy has no bfloat16."""
    import torch

    return tokens.detach().to("cpu", torch.float32).numpy()


def to_torch(tokens: np.ndarray, dtype):
    import torch

    return torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.float32)).to(dtype)


def to_float16(x: np.ndarray) -> np.ndarray:
    """float32 -> float16, rounded to nearest (ties to even) as numpy's cast rounds, by torch: a tenth of numpy's
    time for a tiled page's 1.4 million values."""
    import torch

    return to_torch(x, torch.float16).numpy()


def from_float16(x: np.ndarray) -> np.ndarray:
    """float16 -> float32 (exact), by torch: a quarter of numpy's time."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float16)).to(torch.float32).numpy()


def unit_length(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float32); all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    # einsum's sum of squares, a third of np.linalg.norm's time on a tiled page (no temporary of squares)
    norms = np.sqrt(np.einsum("...i,...i->...", x, x))[..., None]
    return x / np.maximum(norms, np.float32(1e-12))


def bfloat16_values(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), as the encoder outputs them."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32)


def shared_floats(x: np.ndarray) -> np.ndarray:
    """A float16 or uint8 array's values as an object array of Python floats, shared among all arrays: one table
    lookup. qdrant-client's models take lists of Python floats, and making a new float for each of a tiled page's
    two million values costs more than the conversions after it; these are made once."""
    if x.dtype == np.float16:
        return _float_table(16)[x.view(np.uint16)]
    if x.dtype == np.uint8:
        return _float_table(8)[x]
    raise TypeError(f"no table of {x.dtype} values")


def float32_rows(x: np.ndarray) -> list[array.array] | array.array:
    """A vector's values as float32 arrays, one a row (one for a single vector). The embedded engine's Python API
    reads a vector a value at a time from any sequence; an array.array hands out Python floats from C, several times
    faster than numpy's scalars and faster than looking up shared floats (a tiled page: 34 ms against 55). float32
    loses nothing the engine keeps: it reads every value as float32."""
    values = from_float16(x) if x.dtype == np.float16 else np.ascontiguousarray(x, dtype=np.float32)
    if values.ndim == 1:
        return array.array("f", values.tobytes())
    return [array.array("f", row.tobytes()) for row in values]


@functools.cache
def _float_table(bits: int) -> np.ndarray:
    """Every value of a float16 (indexed by its bit pattern) or of a byte, as a Python float."""
    values = np.arange(1 << bits, dtype=np.uint32)
    values = values.astype(np.uint16).view(np.float16) if bits == 16 else values
    return np.array(values.astype(np.float64).tolist(), dtype=object)


@functools.lru_cache(maxsize=1)
def _thread_pools():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


_blas = threading.Lock()
_blas_holders = 0
_blas_limit = None


@contextlib.contextmanager
def one_blas_thread():
    """A block in which numpy's matrix products run on one thread: for a query's small ones, and for the vectors an
    ingest derives beside a busy encoder. A multi-threaded OpenBLAS keeps its threads spinning for a while after each
    product, on the cores that the Qdrant query coming next (README, "Query latency") or the encoder needs. The limit
    is process-wide: blocks of several threads share one, set by the first to enter and lifted by the last to leave."""
    global _blas_holders, _blas_limit
    with _blas:
        if _blas_holders == 0:
            _blas_limit = _thread_pools().limit(limits=1, user_api="blas")
        _blas_holders += 1
    try:
        yield
    finally:
        with _blas:
            _blas_holders -= 1
            if _blas_holders == 0:
                _blas_limit.restore_original_limits()


def on_one_blas_thread(fn):
    """`fn` run in a `one_blas_thread` block."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with one_blas_thread():
            return fn(*args, **kwargs)

    return run
