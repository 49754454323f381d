"""How the fast search path's vectors are derived from a page's tokens, and how deep each stage looks.

The derivation (`BUILT` fields) is fixed when a collection is created and kept in its record, so every page of a
collection is pooled alike; the prefetch depths are read from the settings on every open. Defaults: Settings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from config import Settings, defaults
from core.pooling import (
    dense_vector,
    muvera_fde,
    muvera_size,
    pool_tokens,
    pooled_count,
    sketch,
    spread_order,
    spread_seeds,
)

POOLED = "pooled"  # a few pooled unit vectors per page: the middle stage, quantized, in RAM
DENSE = "dense"  # one vector per page, HNSW-indexed: the first stage


@dataclass(frozen=True)
class SearchLayout:
    pooling: str
    pool_size: int
    pooled_quantization: bool
    hnsw_m: int
    prefetch_dense: int
    prefetch_pooled: int
    first_stage: str

    BUILT = ("pooling", "pool_size", "pooled_quantization", "hnsw_m", "first_stage")

    @classmethod
    def from_settings(cls, s: Settings | None = None) -> "SearchLayout":
        s = s or defaults()
        return cls(
            s.pooling, s.pool_size, s.pooled_quantization, s.hnsw_m, s.prefetch_dense, s.prefetch_pooled, s.first_stage
        )

    @property
    def muvera(self) -> bool:
        return self.first_stage == "muvera"

    def dense_size(self, dim: int) -> int:
        return muvera_size() if self.muvera else dim

    def dense_query(self, tokens: np.ndarray) -> list[float]:
        """The first stage's query vector: the query's mean vector, or its MUVERA encoding (a sum, not a mean)."""
        return (muvera_fde(tokens, query=True) if self.muvera else dense_vector(tokens)).tolist()

    def built(self) -> dict:
        return {k: getattr(self, k) for k in self.BUILT}

    def adopt(self, built: dict) -> "SearchLayout":
        """This layout with the derivation a collection was built with (collections from before MUVERA: mean)."""
        return replace(self, **{"first_stage": "mean", **{k: built[k] for k in self.BUILT if k in built}})

    def limits(self, limit: int) -> tuple[int, int]:
        """(dense, pooled) prefetch limits for a query asking for `limit` hits."""
        pooled = max(limit, self.prefetch_pooled)
        return max(pooled, self.prefetch_dense), pooled

    def derive(self, unit: np.ndarray, keep: int) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        """The fast path's vectors of one page, from its unit-length tokens, and - when it has more than `keep`
        rows - the order of its rows that puts the `keep` covering it best first (core/pooling.py). Both use one
        farthest-point order on the page's sketch."""
        n = len(unit)
        sketched = sketch(unit)
        seeds = spread_seeds(sketched, max(pooled_count(n, self.pool_size), keep if n > keep else 0))
        order = spread_order(unit, keep, seeds) if n > keep else None
        pooled = pool_tokens(unit, self.pool_size, self.pooling, sketched=sketched, seeds=seeds)
        dense = muvera_fde(unit, query=False) if self.muvera else dense_vector(unit)
        return order, {POOLED: pooled.astype(np.float16), DENSE: dense.astype(np.float16)}
