"""The collection's schema and the query language, as plain data: each engine translates them (edge.py,
client.py), so a named vector or a query stage is added here once, not once per engine.

Named vectors of a page point:
- `tokens`, `tokens_2`, ...: the page's token rows at unit length, float16, split so that no multivector holds
  1,048,576 values or more (a Qdrant server refuses those: at 1280 dimensions, 819 rows). `tokens` is what exact
  MaxSim ranks by: all of a page's rows when they fit, else the rows that cover its directions best; the other
  chunks hold the rest. With the lengths the payload keeps, the chunks give the encoder's tokens back exactly
  (storage.py). Dot on unit rows is cosine per token: raw dot products would let a few long tokens win every
  comparison, and Qdrant's Cosine would rescale what is written.
- `pooled_fine`, and `pooled` in collections made without a codebook (`pooled` and `dense` in collections made
  before): the fast path's small vectors, derived from the tokens (layout.py), stored as uint8 sign codes where only
  their binary copies are scored (collections made before: float16);
- `centroids`: the codebook centroids nearest the page's tokens, a sparse vector of weight-1 entries
  (core/codebook.py): the fast path's first stage, once the collection's codebook is learned;
- `bm25`: the page text's BM25 sparse vector (IDF modifier: Qdrant supplies the corpus statistics).
Collections of schema 2 had `tokens` (raw float16) and `unit` instead; they are still read and searched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.store.layout import CENTROIDS, DENSE, FINE, POOLED, SearchLayout

TOKENS = "tokens"
LEGACY_UNIT = "unit"  # schema 2: the unit-length copy exact MaxSim ranked by
BM25 = "bm25"
# A Qdrant server refuses a multivector of this many values (rows x dimension) or more, on REST and gRPC alike.
MULTIVECTOR_VALUES = 1 << 20
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
    """One named vector of the collection: float16 values, or uint8 ones (`uint8`)."""

    name: str
    size: int | None  # None: a sparse vector
    multi: bool = False  # a multivector, compared by MaxSim
    cosine: bool = False  # else Dot
    in_ram: bool = False  # else on disk, paged in on use
    hnsw_m: int = 0  # 0: no graph (the vector is only scored in prefetch stages or by a full scan)
    ef_construct: int = 100
    int8: bool = False  # an int8 copy pinned in RAM; the float16 originals stay on disk
    binary: bool = False  # a binary copy (1 bit a value) pinned in RAM; the originals stay on disk
    idf: bool = False  # sparse: the IDF modifier
    uint8: bool = False  # stored as uint8 values (sign codes: SearchLayout.coded), else float16


def rows_per_vector(dim: int) -> int:
    """The most rows one multivector of `dim` dimensions may hold on a Qdrant server."""
    return (MULTIVECTOR_VALUES - 1) // dim


def token_chunks(count: int) -> list[str]:
    """The names of a collection's `count` token chunks, in row order: `tokens`, `tokens_2`, ..."""
    return [TOKENS] + [f"{TOKENS}_{k}" for k in range(2, count + 1)]


def chunks_for(dim: int, max_rows: int) -> int:
    """How many token chunks a page of up to `max_rows` rows needs."""
    return max(1, -(-max_rows // rows_per_vector(dim)))


def schema(dim: int, layout: SearchLayout, chunks: int) -> list[VectorSpec]:
    """Every named vector of a collection of `dim`-dimension tokens in `chunks` chunks, built with `layout`."""
    quantized = layout.pooled_quantization
    tokens = [VectorSpec(name, dim, multi=True) for name in token_chunks(chunks)]
    if layout.pooled_first:
        fast = [
            VectorSpec(name, dim, multi=True, binary=quantized, in_ram=not quantized, uint8=layout.coded)
            for name in ((POOLED, FINE) if layout.coarse else (FINE,))
        ]
    else:
        fast = [
            VectorSpec(POOLED, dim, multi=True, int8=quantized, in_ram=not quantized),
            VectorSpec(DENSE, layout.dense_size(dim), cosine=not layout.muvera, in_ram=True, hnsw_m=layout.hnsw_m),
        ]
    if layout.codebook:
        fast.append(VectorSpec(CENTROIDS, None))
    return [*tokens, *fast, VectorSpec(BM25, None, idf=True)]


@dataclass(frozen=True)
class Filter:
    """Points that have the named vector (pages, not the collection's own points), of one document when given, and
    without the vector `lacks_vector` when given."""

    has_vector: str | None = TOKENS
    doc_id: str | None = None
    lacks_vector: str | None = None


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
    rescore: bool | None = None  # False: a quantized vector's quantized scores only, its originals stay on disk
