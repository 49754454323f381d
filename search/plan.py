"""What a search asks Qdrant, by mode: one query plan (schema.Stage, plain data) that every engine runs as one
native query.

- visual: MaxSim of the query's tokens. Through the fast path, the pages sharing the most codebook centroids with
  the query's tokens (an inverted index: core/codebook.py; none in searches of one document, or before the
  collection's codebook is learned) -> MaxSim of its tokens on the survivors' fine pooled vectors (binary scores,
  in RAM) -> exact MaxSim on `tokens` over the last survivors, the only float16 rows read from disk. Collections
  made without a codebook scan every page's coarse pooled vectors first (MaxSim of the query's pooled tokens, binary
  scores, in RAM); those made before that, dense HNSW -> pooled MaxSim, int8 scores -> exact. With `exact=True`,
  in a collection made before the fast path, in one of at most `exact_below` pages, or where the stage before exact
  would hand on every page (`SearchLayout.limits`), exact MaxSim over every page.
- text: BM25 of the query text over the pages' `bm25` vectors.
- hybrid: both, fused by weighted reciprocal rank fusion in the same query (search/fusion.py says with which
  weights); the batch also asks for the text ranking alone, which tells which fused hits the text signal found.
- rerank: BM25 candidates ordered by exact MaxSim.
"""

from __future__ import annotations

import numpy as np

from config import defaults
from core.codebook import query_vector
from core.errors import StoreError, UsageError
from core.pooling import spread_order
from core.store import PagePoint, PageStore
from core.store.layout import CENTROIDS, DENSE, FINE, POOLED, codes
from core.store.schema import BM25, TOKENS, Filter, Nearest, Stage
from core.tensors import on_one_blas_thread, unit_length
from core.text import embed_query
from search.fusion import FusionWeights, contribution, from_settings

SEARCH_MODES = ("visual", "text", "hybrid", "rerank")


def check_mode(mode: str) -> None:
    if mode not in SEARCH_MODES:
        raise UsageError(f"unknown search mode {mode!r}; use one of: {', '.join(SEARCH_MODES)}")


def visual(store: PageStore, tokens: np.ndarray, limit: int, doc_id: str | None, fast: int) -> Stage:
    """MaxSim of the query tokens against the pages: through the fast path's nested prefetch (its depths sized for
    `limit` hits in a collection of `fast` pages: `fast_path_pages`), or exact over every page (`fast` 0)."""
    rows = query_rows(store, tokens)
    pages = Filter(TOKENS, doc_id)
    prefetch = ()
    # One document's pages are few, and the fine stage's scores of all of them cheap: it keeps every one that can
    # rank, where a page sharing no centroid with the query would drop out of the codebook's.
    centroids = store.centroids() if fast and doc_id is None else None
    first_limit, last_limit = store.layout.limits(limit, fast, store.dim, codebook=centroids is not None)
    # `fast` 0, or a last stage that would take every page: exact MaxSim alone, which scores them all anyway
    if last_limit < fast:
        first = first_stage(store, tokens, first_limit, doc_id, centroids)
        # quantized scores only: the exact stage comes next, so the originals stay on disk
        last = FINE if store.layout.pooled_first else POOLED
        prefetch = (Stage(Nearest(last, coded(store, rows)), last_limit, pages, first, rescore=False),)
    return Stage(Nearest(store.ranking_vector, rows), limit, pages, prefetch)


def query_rows(store: PageStore, tokens: np.ndarray) -> np.ndarray:
    """The query's multivector: its unit rows in float16 (the engines take float16 and uint8 arrays as they are:
    core/store/edge.py, client.py). A query of more rows than the store may take in one multivector keeps those
    that cover its directions best."""
    unit = unit_length(tokens)
    if len(unit) > store.max_query_rows:
        unit = unit[np.sort(spread_order(unit, store.max_query_rows)[: store.max_query_rows])]
    return unit.astype(np.float16)


def coded(store: PageStore, rows: np.ndarray) -> np.ndarray:
    """Query rows for a pooled vector: as sign codes where the collection stores those (SearchLayout.coded)."""
    return codes(rows) if store.layout.coded else rows


def first_stage(
    store: PageStore, tokens: np.ndarray, limit: int, doc_id: str | None = None, centroids: np.ndarray | None = None
) -> tuple[Stage, ...]:
    """The fast path's first stage for `limit` pages: given the collection's codebook (`centroids`), the pages whose
    codebook vectors best match the query's (core/codebook.py); none in a collection built for a codebook without
    it (the next stage scores every page); MaxSim of the query's pooled tokens (`SearchLayout.coarse_query`) on every
    page's coarse pooled vectors (binary scores) in one made without; or - in collections made before that - one
    HNSW search over the dense vectors per probe (the next stage scores the union of what they found)."""
    layout = store.layout
    pages = Filter(TOKENS, doc_id)
    if centroids is not None:
        lookup = query_vector(unit_length(tokens), centroids, layout.codebook_probes)
        return (Stage(Nearest(CENTROIDS, lookup), limit, pages),)
    if layout.codebook:
        return ()
    if layout.pooled_first:
        rows = coded(store, query_rows(store, layout.coarse_query(tokens)))
        return (Stage(Nearest(POOLED, rows), limit, pages, rescore=False),)
    return tuple(Stage(Nearest(DENSE, p), limit, pages, hnsw_ef=limit) for p in layout.dense_probes(tokens))


def fast_path_pages(store: PageStore) -> int:
    """The collection's page count when a visual search goes through the fast path, else 0. It does when the
    collection has the fast path's vectors and more pages than `exact_below` (in a smaller one exact MaxSim over
    every page costs a few milliseconds, and is exact)."""
    if not store.has_fast_path():
        return 0
    pages = store.count()
    return pages if pages > store.layout.exact_below else 0


def text(sparse, limit: int, doc_id: str | None) -> Stage:
    """BM25 of the query's sparse vector against the pages' `bm25` vectors."""
    return Stage(Nearest(BM25, sparse), limit, Filter(BM25, doc_id))


@on_one_blas_thread  # the query's matrix products are small: see core/tensors.py
def search(
    store: PageStore,
    tokens: np.ndarray | None,
    limit: int,
    doc_id: str | None = None,
    *,
    exact: bool = False,
    text_query: str | None = None,
    mode: str = "visual",
    fusion: FusionWeights | None = None,
) -> list[PagePoint]:
    """The best `limit` pages for a query: its tokens (visual signal) and/or its text (BM25), by `mode`; `fusion`:
    hybrid's weights (default: the settings' defaults). Each result's `signals` name the signals that found it."""
    check_mode(mode)
    query = None if tokens is None else np.asarray(tokens, dtype=np.float32)
    if mode != "text" and query is None:
        raise UsageError(f"search mode {mode!r} needs the query's tokens")
    fast = 0 if exact or mode == "text" else fast_path_pages(store)
    if mode == "visual":
        return _signed(store.query([visual(store, query, limit, doc_id, fast)])[0], ["visual"])
    _require_text_index(store)
    sparse = embed_query(text_query)
    if sparse is None and mode != "hybrid":
        return []  # no searchable word in the query (empty, or only stop words)
    if mode == "text":
        return _signed(store.query([text(sparse, limit, doc_id)])[0], ["text"])
    if mode == "rerank":
        exact_stage = visual(store, query, limit, doc_id, fast=0)
        rerank = Stage(exact_stage.query, limit, Filter(TOKENS, doc_id), (text(sparse, pool_for(limit), doc_id),))
        return _signed(store.query([rerank])[0], ["text", "visual"])
    weights = fusion or from_settings(defaults())
    by_visual, by_text = signal_stages(query, sparse, store, limit, doc_id, fast)
    parts = (by_visual,) + ((by_text,) if by_text else ())
    fused = Stage(weights.query(with_text=by_text is not None), limit, Filter(TOKENS, doc_id), parts)
    results = store.query([fused] + ([by_text] if by_text else []))
    hits, text_hits = results[0], results[1] if by_text else []
    text_rank = {h.point_id: rank for rank, h in enumerate(text_hits)}
    least_visual = contribution(by_visual.limit - 1, weights.visual, weights.k)  # the visual ranking's last page
    for hit in hits:
        # A hit's fused score is the sum of what each signal that found it adds: whatever the text rank does not
        # account for came from the visual one (at least `least_visual`).
        rank = text_rank.get(hit.point_id)
        from_text = 0.0 if rank is None else contribution(rank, weights.text, weights.k)
        seen = hit.score - from_text > 0.5 * least_visual
        hit.signals = (["visual"] if seen else []) + ([] if rank is None else ["text"])
    return hits


def pool_for(limit: int) -> int:
    """Candidates each signal contributes to fusion or reranking, for `limit` hits."""
    return max(4 * limit, 40)


def signal_stages(
    query: np.ndarray, sparse, store: PageStore, limit: int, doc_id: str | None, fast: int
) -> tuple[Stage, Stage | None]:
    """The two rankings hybrid fuses for `limit` hits, each `pool_for(limit)` deep: the visual one (the fast path,
    or exact) and the text one (None when the query has no searchable word). Run on their own, they give what the
    fused stage fuses (calibration fuses them again with other weights without asking Qdrant each time)."""
    pool = pool_for(limit)
    return visual(store, query, pool, doc_id, fast), (None if sparse is None else text(sparse, pool, doc_id))


def signal_rankings(
    store: PageStore, tokens: np.ndarray, text_query: str, limit: int, doc_id: str | None = None, exact: bool = False
) -> tuple[list[PagePoint], list[PagePoint]]:
    """The visual and the text ranking that hybrid would fuse for `limit` hits (the text one empty when the query
    has no searchable word)."""
    _require_text_index(store)
    fast = 0 if exact else fast_path_pages(store)  # the path hybrid itself takes, small collections exact
    query = np.asarray(tokens, dtype=np.float32)
    by_visual, by_text = signal_stages(query, embed_query(text_query), store, limit, doc_id, fast)
    results = store.query([by_visual] + ([by_text] if by_text else []))
    return results[0], (results[1] if by_text else [])


def _require_text_index(store: PageStore) -> None:
    if not store.has_text_index():
        raise StoreError(
            f"collection {store.collection!r} has no text index (it was made before text search): search it "
            "with mode 'visual', or ingest the documents again into a new TOKENDIRECT_COLLECTION"
        )


def _signed(hits: list[PagePoint], signals: list[str]) -> list[PagePoint]:
    for hit in hits:
        hit.signals = list(signals)
    return hits
