"""A page as the store holds it, and its tokens in the store's float16 form, exactly recoverable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

FLOAT16_MAX = 65504.0
# Payload the store keeps for itself: the few token values float16 cannot hold (read back with the tokens).
PATCH_FIELD = "token_patch"


@dataclass
class PagePoint:
    """A page as stored: its id, payload and (when asked for) its exact token set."""

    point_id: str
    payload: dict[str, Any]
    tokens: np.ndarray | None = None  # float32 holding the encoder's exact values, shape [n, dim]
    score: float | None = None
    signals: list[str] = field(default_factory=list)  # in a search result: "visual", "text" or both


@dataclass
class StorageForm:
    """Tokens as the store holds them: float16 values plus the few entries float16 cannot hold exactly."""

    vectors: np.ndarray
    patch: dict[str, list] = field(default_factory=dict)


def to_storage(tokens: np.ndarray) -> StorageForm:
    """Float16 keeps a bfloat16 value exactly when it lies in float16's normal range; the rare values
    outside it (tiny magnitudes, or beyond 65504) are kept verbatim in a patch so decoding stays exact."""
    exact = np.asarray(tokens, dtype=np.float32)
    half = np.clip(exact, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)
    wrong = np.flatnonzero(half.astype(np.float32) != exact)
    patch = {"i": wrong.tolist(), "v": exact.ravel()[wrong].tolist()} if wrong.size else {}
    return StorageForm(vectors=half, patch=patch)


def from_storage(vectors: Any, patch: dict | None) -> np.ndarray:
    arr = np.asarray(vectors, dtype=np.float32).copy()
    if patch:
        arr.ravel()[np.asarray(patch["i"], dtype=np.int64)] = np.asarray(patch["v"], dtype=np.float32)
    return arr
