"""Token sets between torch (the model) and numpy (the store), without losing a bit, and the array helpers every
stage shares."""

from __future__ import annotations

import functools

import numpy as np


def to_numpy(tokens) -> np.ndarray:
    """bfloat16/float16 -> float32 is exact, and numpy has no bfloat16."""
    import torch

    return tokens.detach().to("cpu", torch.float32).numpy()


def to_torch(tokens: np.ndarray, dtype):
    import torch

    return torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.float32)).to(dtype)


def unit_length(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float32); all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def bfloat16_values(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), as the encoder outputs them."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32)


@functools.lru_cache(maxsize=1)
def _thread_pools():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def one_blas_thread():
    """A block in which numpy's matrix products run on one thread: for a query's small ones. A multi-threaded
    OpenBLAS keeps its threads spinning for a while after each product, on the cores that the Qdrant query coming
    next needs (README, "Query latency")."""
    return _thread_pools().limit(limits=1, user_api="blas")


def on_one_blas_thread(fn):
    """`fn` run in a `one_blas_thread` block."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with one_blas_thread():
            return fn(*args, **kwargs)

    return run
