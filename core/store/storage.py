"""A page as the store holds it, and its tokens in the store's form, recoverable bit for bit.

A page's tokens are kept once, at unit length, in float16 (the rows exact MaxSim ranks by), split into named
multivectors of at most the rows a Qdrant server accepts in one (schema.py); the payload keeps each row's length
(float32), the order the rows were stored in, and the few values the rows and lengths do not give back exactly.
Why that is exact: the encoder's values are bfloat16 (8 significant bits). A unit row in float16 (11 bits) times
its float32 length is within 2^-11 of the original value, closer than half the distance between two bfloat16
values, so rounding the product to bfloat16 gives the original back; only values whose unit-length form is too
small for float16's normal range (under 2^-14 of their row's length) can miss, and those go to the patch.

Collections from before this form (schema 2) kept the raw tokens in float16 plus a patch (`to_storage`); that form
is still read, and export files use it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.tensors import bfloat16_values, from_float16, to_float16

FLOAT16_MAX = 65504.0
ROWS_FIELD = "token_rows"  # payload the store keeps for itself: lengths, order and patch of a page's rows
LEGACY_PATCH_FIELD = "token_patch"  # schema 2: the values float16 could not hold
STORE_FIELDS = (ROWS_FIELD, LEGACY_PATCH_FIELD)


@dataclass
class PagePoint:
    """A page as stored: its id, payload and (when asked for) its exact token set."""

    point_id: str
    payload: dict[str, Any]
    tokens: np.ndarray | None = None  # float32 holding the encoder's exact values, shape [n, dim]
    score: float | None = None
    signals: list[str] = field(default_factory=list)  # in a search result: "visual", "text" or both


# -- the store's form: unit rows + lengths + order + patch --------------------------------------------------------


def unit_rows(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float32 row lengths, float32 unit rows) of a token set."""
    x = np.asarray(tokens, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float32))
    return norms, x / np.maximum(norms, np.float32(1e-30))[:, None]


def to_rows(
    tokens: np.ndarray, norms: np.ndarray, unit: np.ndarray, order: np.ndarray | None
) -> tuple[np.ndarray, dict]:
    """The rows to store (float16, unit length, in `order`) and the payload that makes them exact again."""
    exact = np.ascontiguousarray(tokens, dtype=np.float32)
    half = to_float16(unit)
    back = bfloat16_values(from_float16(half) * norms[:, None])
    wrong = np.flatnonzero(back.view(np.uint32) != exact.view(np.uint32))
    form = {"norms": _b64(norms.astype("<f4"))}
    if order is not None:
        form["order"] = _b64(order.astype("<u2"))
    if wrong.size:
        form["patch"] = {"i": wrong.tolist(), "v": exact.ravel()[wrong].tolist()}
    return (half if order is None else half[order]), form


def from_rows(rows: np.ndarray, form: dict) -> np.ndarray:
    """The exact tokens from stored rows (in stored order) and their payload."""
    norms = np.frombuffer(base64.b64decode(form["norms"]), dtype="<f4")
    stored = np.asarray(rows, dtype=np.float32)
    if "order" in form:
        order = np.frombuffer(base64.b64decode(form["order"]), dtype="<u2")
        unit = np.empty_like(stored)
        unit[order] = stored
    else:
        unit = stored
    tokens = bfloat16_values(unit * norms[:, None])
    patch = form.get("patch")
    if patch:
        tokens.ravel()[np.asarray(patch["i"], dtype=np.int64)] = np.asarray(patch["v"], dtype=np.float32)
    return tokens


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(array.tobytes()).decode("ascii")


# -- raw float16 + patch: export files, and collections of schema 2 -------------------------------------------------


@dataclass
class StorageForm:
    """Tokens as float16 values plus the few entries float16 cannot hold exactly."""

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
