"""Moving token sets between torch (the model) and numpy (the store) without losing a bit."""

from __future__ import annotations

import numpy as np


def to_numpy(tokens) -> np.ndarray:
    """bfloat16/float16 -> float32 is exact, and numpy has no bfloat16."""
    import torch

    return tokens.detach().to("cpu", torch.float32).numpy()


def to_torch(tokens: np.ndarray, dtype):
    import torch

    return torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.float32)).to(dtype)
