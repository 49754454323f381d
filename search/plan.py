"""What a search asks Qdrant, by mode: one query plan (schema.Stage, plain data) that every engine runs as one
native query.

- visual: MaxSim of the query's tokens. Through the fast path, dense HNSW -> pooled MaxSim (int8 scores only) ->
  exact MaxSim on `unit` over the survivors; with `exact=True` (or in a collection made before the fast path),
  exact MaxSim over every page.
- text: BM25 of the query text over the pages' `bm25` vectors.
- hybrid: both, fused by reciprocal rank fusion in the same query; the batch also asks for the text ranking alone,
  which tells which fused hits the text signal found.
- rerank: BM25 candidates ordered by exact MaxSim.
"""

from __future__ import annotations

import numpy as np

from core.errors import StoreError, UsageError
from core.pooling import spread_order
from core.store import PagePoint, PageStore
from core.store.layout import DENSE, POOLED
from core.store.schema import BM25, RRF_K, TOKENS, Filter, Fusion, Nearest, Stage
from core.tensors import unit_length
from core.text import embed_query

SEARCH_MODES = ("visual", "text", "hybrid", "rerank")


def check_mode(mode: str) -> None:
    if mode not in SEARCH_MODES:
        raise UsageError(f"unknown search mode {mode!r}; use one of: {', '.join(SEARCH_MODES)}")


def visual(store: PageStore, tokens: np.ndarray, limit: int, doc_id: str | None, fast: bool) -> Stage:
    """MaxSim of the query tokens against the pages: through the fast path's nested prefetch (its depths sized for
    `limit` hits), or exact over every page. A query of more rows than the store may take in one multivector keeps
    those that cover its directions best."""
    unit = unit_length(tokens)
    if len(unit) > store.max_query_rows:
        unit = unit[np.sort(spread_order(unit, store.max_query_rows)[: store.max_query_rows])]
    rows = unit.astype(np.float16).astype(np.float32).tolist()
    pages = Filter(TOKENS, doc_id)
    prefetch = ()
    if fast:
        layout = store.layout
        dense_limit, pooled_limit = layout.limits(limit)
        dense = Stage(Nearest(DENSE, layout.dense_query(tokens)), dense_limit, pages, hnsw_ef=dense_limit)
        # int8 scores only: the exact stage comes next, so the float16 originals stay on disk
        prefetch = (Stage(Nearest(POOLED, rows), pooled_limit, pages, (dense,), rescore=False),)
    return Stage(Nearest(store.ranking_vector, rows), limit, pages, prefetch)


def text(sparse, limit: int, doc_id: str | None) -> Stage:
    """BM25 of the query's sparse vector against the pages' `bm25` vectors."""
    return Stage(Nearest(BM25, sparse), limit, Filter(BM25, doc_id))


def search(
    store: PageStore,
    tokens: np.ndarray | None,
    limit: int,
    doc_id: str | None = None,
    *,
    exact: bool = False,
    text_query: str | None = None,
    mode: str = "visual",
) -> list[PagePoint]:
    """The best `limit` pages for a query: its tokens (visual signal) and/or its text (BM25), by `mode`. Each
    result's `signals` name the signals that found it."""
    check_mode(mode)
    query = None if tokens is None else np.asarray(tokens, dtype=np.float32)
    if mode != "text" and query is None:
        raise UsageError(f"search mode {mode!r} needs the query's tokens")
    fast = not exact and mode != "text" and store.has_fast_path()
    if mode == "visual":
        return _signed(store.query([visual(store, query, limit, doc_id, fast)])[0], ["visual"])
    if not store.has_text_index():
        raise StoreError(
            f"collection {store.collection!r} has no text index (it was made before text search): search it "
            "with mode 'visual', or ingest the documents again into a new TOKENDIRECT_COLLECTION"
        )
    sparse = embed_query(text_query)
    if sparse is None and mode != "hybrid":
        return []  # no searchable word in the query (empty, or only stop words)
    pool = max(4 * limit, 40)  # candidates each signal contributes to fusion or reranking
    by_text = None if sparse is None else text(sparse, pool, doc_id)
    if mode == "text":
        return _signed(store.query([text(sparse, limit, doc_id)])[0], ["text"])
    if mode == "rerank":
        exact_stage = visual(store, query, limit, doc_id, fast=False)
        rerank = Stage(exact_stage.query, limit, Filter(TOKENS, doc_id), (by_text,))
        return _signed(store.query([rerank])[0], ["text", "visual"])
    parts = (visual(store, query, pool, doc_id, fast),) + ((by_text,) if by_text else ())
    fused = Stage(Fusion(k=RRF_K), limit, Filter(TOKENS, doc_id), parts)
    results = store.query([fused] + ([by_text] if by_text else []))
    hits, text_hits = results[0], results[1] if by_text else []
    text_rank = {h.point_id: rank for rank, h in enumerate(text_hits)}
    for hit in hits:
        # A hit's fused score is the sum of 1 / (RRF_K + rank) over the signals that found it: whatever the text
        # rank does not account for came from the visual one (at least 1 / (RRF_K + pool)).
        rank = text_rank.get(hit.point_id)
        seen = hit.score - (0.0 if rank is None else 1.0 / (RRF_K + rank)) > 0.5 / (RRF_K + pool)
        hit.signals = (["visual"] if seen else []) + ([] if rank is None else ["text"])
    return hits


def _signed(hits: list[PagePoint], signals: list[str]) -> list[PagePoint]:
    for hit in hits:
        hit.signals = list(signals)
    return hits
