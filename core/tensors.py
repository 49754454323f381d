"""Token sets between torch (the model) and numpy (the store), without losing a bit, and the array helpers every
stage shares."""

from __future__ import annotations

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
