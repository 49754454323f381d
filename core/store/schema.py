"""The collection's schema and the query language, as plain data: each engine translates them (edge.py,
client.py), so a named vector or a query stage is added here once, not once per engine.

Named vectors of a page point:
- `tokens`: the exact token set, as the decoder consumes it (Dot, never normalized: Qdrant rescales Cosine vectors
  on write, and the decoder needs them raw);
- `unit`: the same tokens at unit length, what exact MaxSim ranks by (raw dot products let a few long tokens win
  every comparison);
- `pooled` and `dense`: the fast path's small vectors, derived from the tokens (layout.py);
- `bm25`: the page text's BM25 sparse vector (IDF modifier: Qdrant supplies the corpus statistics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.store.layout import DENSE, POOLED, SearchLayout

TOKENS = "tokens"
UNIT = "unit"
BM25 = "bm25"
RRF_K = 60  # the usual reciprocal rank fusion constant: score = sum of 1 / (RRF_K + rank), rank from 0
# Payload fields people filter on (in the dashboard, or with --doc), indexed on every engine that has indexes.
INDEXED_FIELDS = {
    "doc_id": "keyword",
    "source": "keyword",
    "file_name": "keyword",
    "model": "keyword",
    "page": "integer",
    "ingested_at": "datetime",
    "text_source": "keyword",
}


@dataclass(frozen=True)
class VectorSpec:
    """One named vector of the collection. Float16 storage throughout."""

    name: str
    size: int | None  # None: a sparse vector
    multi: bool = False  # a multivector, compared by MaxSim
    cosine: bool = False  # else Dot
    in_ram: bool = False  # else on disk, paged in on use
    hnsw_m: int = 0  # 0: no graph (the vector is only scored in prefetch stages or by a full scan)
    ef_construct: int = 100
    int8: bool = False  # an int8 copy pinned in RAM; the float16 originals stay on disk
    idf: bool = False  # sparse: the IDF modifier


def schema(dim: int, layout: SearchLayout) -> list[VectorSpec]:
    """Every named vector of a collection of `dim`-dimension tokens built with `layout`."""
    quantized = layout.pooled_quantization
    return [
        VectorSpec(TOKENS, dim, multi=True),
        VectorSpec(UNIT, dim, multi=True),
        VectorSpec(POOLED, dim, multi=True, int8=quantized, in_ram=not quantized),
        VectorSpec(DENSE, layout.dense_size(dim), cosine=not layout.muvera, in_ram=True, hnsw_m=layout.hnsw_m),
        VectorSpec(BM25, None, idf=True),
    ]


@dataclass(frozen=True)
class Filter:
    """Points that have the named vector (pages, not the collection record), of one document when given."""

    has_vector: str | None = TOKENS
    doc_id: str | None = None


@dataclass(frozen=True)
class Nearest:
    """Score points by one named vector against `vector` (dense, multi or sparse, as the vector is)."""

    using: str
    vector: Any


@dataclass(frozen=True)
class Fusion:
    """Fuse the rankings of the prefetch stages: reciprocal rank fusion (optionally weighted) or DBSF."""

    method: str = "rrf"
    k: int = RRF_K
    weights: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Stage:
    """One step of a query: the top `limit` points by `query`, among those the `prefetch` stages found (all points
    when there are none). A request is a Stage; so is each prefetch nested in it."""

    query: Nearest | Fusion
    limit: int
    filter: Filter = Filter()
    prefetch: tuple["Stage", ...] = ()
    hnsw_ef: int | None = None  # HNSW search breadth, for a vector with a graph
    rescore: bool | None = None  # False: a quantized vector's int8 scores only, its originals stay on disk
