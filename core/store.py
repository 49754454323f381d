"""The page store: one Qdrant point per page, the page's whole token set in the multivector `tokens`.

`tokens` holds the encoder's values exactly (Dot, never normalized: Qdrant rescales Cosine vectors on write,
and the decoder needs them raw). Ranking by raw dot products lets a few long tokens win every comparison -
with it a page does not even find itself first - so exact MaxSim runs on `unit`, the same tokens at unit length
(on disk, Float16, no index, like `tokens`).

Exact MaxSim over every page's full token set does not scale, so each page also gets, derived from its tokens in
`upsert`: `pooled`, about one unit vector per `pool_size` tokens (core/pooling.py), int8-quantized and held in
RAM without an index; and `dense`, one vector per page with an HNSW index. A search is one Qdrant query with
nested prefetch: dense HNSW -> pooled MaxSim (quantized scores only) -> exact MaxSim on `unit` over the survivors.
`exact=True` skips the prefetch and ranks every page by exact MaxSim.

Two engines, one schema: the embedded qdrant-edge shard (default, no server) and qdrant-client (a Qdrant
server, or its in-process mode). Both keep a record of the model the collection was built with, as a point
of its own, so a server shared by several machines refuses a mismatched model too. tests/test_store_contract.py
holds every engine to the same behaviour.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from config import Settings
from core.locks import FileLock, LockBusyError, command_line
from core.model import ModelIdentity
from core.pooling import dense_vector, muvera_fde, muvera_size, pool_tokens
from core.text import SparseVector, embed_document, embed_query, text_fields

TOKENS = "tokens"  # the exact token set, as the decoder consumes it
UNIT = "unit"  # the same tokens scaled to unit length: what exact MaxSim ranks by
POOLED = "pooled"  # a few pooled unit vectors per page: the middle stage, quantized, in RAM
DENSE = "dense"  # one vector per page, HNSW-indexed: the first stage
BM25 = "bm25"  # sparse BM25 vector of the page text (IDF modifier): the text signal
# visual: MaxSim over the tokens; text: BM25 over the page text; hybrid: both, fused by reciprocal rank fusion
# in one Qdrant query; rerank: BM25 candidates ordered by exact MaxSim.
SEARCH_MODES = ("visual", "text", "hybrid", "rerank")
RRF_K = 60  # the usual reciprocal rank fusion constant: score = sum of 1 / (RRF_K + rank), rank from 0
# 2: the collection has `pooled` and `dense` (schema 1 collections are searched exactly; re-import to upgrade)
SCHEMA_VERSION = 2
FAST_SCHEMA = 2
# Payload kept out of search results: it only matters when tokens are read back for decoding.
PATCH_FIELD = "token_patch"
NOT_IN_HITS = [PATCH_FIELD, "text"]  # the page text can be kilobytes; hits do not need it
META_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "token-direct/collection-record"))
# Payload fields people filter on (in the dashboard, or with --doc), indexed on both engines.
INDEXED_FIELDS = {
    "doc_id": "keyword",
    "source": "keyword",
    "file_name": "keyword",
    "model": "keyword",
    "page": "integer",
    "ingested_at": "datetime",
    "text_source": "keyword",
}
FLOAT16_MAX = 65504.0
# The embedded engine indexes new pages when asked; a writer asks after this many pages (and `optimize()` at will).
OPTIMIZE_EVERY = 1024

log = logging.getLogger("tokendirect.store")


class StoreError(RuntimeError):
    """The store cannot be used as asked (unreachable, locked, or built for another model)."""


class ModelMismatchError(StoreError):
    pass


@dataclass
class PagePoint:
    """A page as stored: its id, payload and (when asked for) its exact token set."""

    point_id: str
    payload: dict[str, Any]
    tokens: np.ndarray | None = None  # float32 holding the encoder's exact values, shape [n, dim]
    score: float | None = None
    signals: list[str] = field(default_factory=list)  # in a search result: "visual", "text" or both


@dataclass(frozen=True)
class SearchLayout:
    """How the fast path's vectors are derived and searched. The derivation (`BUILT` fields) is fixed when a
    collection is created and kept in its record, so every page of it is pooled alike; the prefetch depths are
    read from the settings on every open. Defaults: Settings, measured in README ("Search at scale")."""

    pooling: str = "cluster"
    pool_size: int = 8
    pooled_quantization: bool = True
    hnsw_m: int = 16
    prefetch_dense: int = 200
    prefetch_pooled: int = 30
    first_stage: str = "mean"

    BUILT = ("pooling", "pool_size", "pooled_quantization", "hnsw_m", "first_stage")

    @classmethod
    def from_settings(cls, s: Settings) -> "SearchLayout":
        return cls(s.pooling, s.pool_size, s.pooled_quantization, s.hnsw_m, s.prefetch_dense, s.prefetch_pooled,
                   s.first_stage)

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

    def limits(self, limit: int) -> tuple[int, int]:
        """(dense, pooled) prefetch limits for a query asking for `limit` hits."""
        pooled = max(limit, self.prefetch_pooled)
        return max(pooled, self.prefetch_dense), pooled

    def derive(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
        """The fast path's vectors of one page, from its exact tokens."""
        return {
            POOLED: pool_tokens(tokens, self.pool_size, self.pooling).astype(np.float16),
            DENSE: (muvera_fde(tokens, query=False) if self.muvera else dense_vector(tokens)).astype(np.float16),
        }


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


def unit_rows(tokens: np.ndarray) -> np.ndarray:
    x = np.asarray(tokens, dtype=np.float32)
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float16)


def from_storage(vectors: Any, patch: dict | None) -> np.ndarray:
    arr = np.asarray(vectors, dtype=np.float32).copy()
    if patch:
        arr.ravel()[np.asarray(patch["i"], dtype=np.int64)] = np.asarray(patch["v"], dtype=np.float32)
    return arr


class PageStore(ABC):
    """What ingest, search and decode need from Qdrant, whichever engine holds the collection."""

    collection: str
    layout: SearchLayout = SearchLayout()
    _fast: bool | None = None  # whether the collection has the fast path's vectors; None: not read yet
    _bm25_known: bool = False  # the collection has the `bm25` vector (only "yes" is kept: it never goes away)
    # Sharing with other processes (the embedded shard): a writer may keep the store between windows and give it
    # back when another process asks. A server needs neither, so here they do nothing.
    keep_open: bool = False

    # -- collection record -----------------------------------------------------------------------------------

    def bind(self, identity: ModelIdentity, create: bool = True) -> None:
        """Create the collection for `identity`, or check that it was built with exactly that model."""
        record = self.record()
        if record is None:
            if not create:
                raise StoreError(f"collection {self.collection!r} does not exist yet; ingest documents first")
            self._create(identity.dim)
            try:
                self.ensure_indexes()
                self._write_record(
                    {
                        "kind": "collection",
                        "schema": SCHEMA_VERSION,
                        "model": identity.model,
                        "revision": identity.revision,
                        "dim": identity.dim,
                        "layout": self.layout.built(),
                        "created_at": _now(),
                    }
                )
                self._fast = True
            except BaseException:
                # A collection without its record would be refused forever ("not made by token-direct").
                self.discard()
                raise
            return
        self._adopt(record)
        built = ModelIdentity(record["model"], record["revision"], int(record["dim"]))
        if built != identity:
            raise ModelMismatchError(
                f"collection {self.collection!r} was built with {_describe(built)}; "
                f"the configured model is {_describe(identity)}. Tokens from one checkpoint are never searched "
                "or decoded with another: set TOKENDIRECT_MODEL back, or use another TOKENDIRECT_COLLECTION."
            )
        if create:
            self.ensure_indexes()  # collections made before an index was added get it on their next ingest

    def _adopt(self, record: dict) -> None:
        """Take the derivation the collection was built with from its record."""
        self._fast = int(record.get("schema", 1)) >= FAST_SCHEMA and "layout" in record
        if self._fast:
            built = {k: record["layout"][k] for k in SearchLayout.BUILT if k in record["layout"]}
            self.layout = replace(self.layout, **{"first_stage": "mean", **built})
        else:
            log.warning("collection %r was made before the fast search path: every search runs exact MaxSim "
                        "(export and import it into a new collection to add the fast path)", self.collection)

    def has_fast_path(self) -> bool:
        if self._fast is None:
            record = self.record()
            if record is None:
                return False
            self._adopt(record)
        return bool(self._fast)

    def ensure_indexes(self) -> None:
        """Create the payload indexes of INDEXED_FIELDS that the collection lacks."""
        have = self.payload_indexes()
        for name, kind in INDEXED_FIELDS.items():
            if have.get(name) != kind:
                self._create_index(name, kind)

    def discard(self) -> None:
        """Drop the collection after a failed write, keeping the original failure the one reported."""
        try:
            self.drop()
        except Exception as exc:  # the original failure is the one to report
            log.warning("could not remove the unfinished collection %r: %s", self.collection, exc)

    def record(self) -> dict | None:
        """The collection's record (model, revision, dim), or None when the collection does not exist."""
        if not self._exists():
            return None
        found = self._retrieve([META_ID], with_tokens=False)
        if not found:
            raise StoreError(
                f"collection {self.collection!r} exists but holds no token-direct record (another program made it, "
                "or its creation was cut off): delete it, or set another TOKENDIRECT_COLLECTION"
            )
        return found[0].payload

    # -- pages -----------------------------------------------------------------------------------------------

    def upsert(self, points: list[PagePoint]) -> None:
        """Store pages from their exact tokens; every other vector of a page is derived here."""
        ready = []
        # Writers bind first, which reads the record; a store never bound writes the current layout.
        fast = self._fast is not False
        indexed = any(p.payload.get("text") for p in points) and self.has_text_index()  # asks only when needed
        for p in points:
            form = to_storage(p.tokens)
            payload = dict(p.payload)
            if form.patch:
                payload[PATCH_FIELD] = form.patch
            vectors = {TOKENS: form.vectors, UNIT: unit_rows(p.tokens)}
            if fast:
                vectors.update(self.layout.derive(p.tokens))
            sparse = embed_document(payload.get("text")) if indexed else None
            if sparse is not None:
                vectors[BM25] = self._sparse(sparse)
            ready.append((p.point_id, vectors, payload))
        if ready:
            self._upsert(ready)

    def existing(self, point_ids: Iterable[str]) -> set[str]:
        return {p.point_id for p in self.retrieve(point_ids, with_tokens=False)}

    def retrieve(self, point_ids: Iterable[str], with_tokens: bool = True) -> list[PagePoint]:
        """The stored pages among `point_ids` (in any order; missing ones are left out)."""
        ids = list(point_ids)
        if not ids or not self._exists():
            return []
        return [p for p in self._retrieve(ids, with_tokens) if p.point_id != META_ID]

    def scroll(self, batch_size: int = 16, with_tokens: bool = True) -> Iterator[list[PagePoint]]:
        """Every page, in batches of at most `batch_size`, in point-id order: only one batch is held at a time."""
        if not self._exists():
            return
        offset = None
        while True:
            points, offset = self._scroll(offset, batch_size, with_tokens)
            if points:
                yield points
            if offset is None:
                return

    def set_payload(self, point_id: str, payload: dict) -> None:
        """Add or replace payload fields of a stored page; the tokens and other fields stay as they are."""
        if PATCH_FIELD in payload or payload.get("kind") == "collection":
            raise ValueError(f"payload field {PATCH_FIELD!r} and kind 'collection' are the store's own")
        if point_id == META_ID or not self.existing([point_id]):
            raise StoreError(f"no page with point id {point_id!r} in collection {self.collection!r}")
        self._set_payload(point_id, payload)

    def set_text(self, point_id: str, text: str | None, source: str | None) -> None:
        """Give a stored page its text (payload `text`, `text_source`) and the BM25 vector made from it."""
        fields = text_fields(text, source)
        self.set_payload(point_id, fields)
        if self.has_text_index():
            sparse = embed_document(fields["text"])
            self._set_sparse(point_id, None if sparse is None else self._sparse(sparse))

    def has_text_index(self) -> bool:
        """Whether the collection has the `bm25` vector (collections made before text search do not)."""
        if not self._bm25_known:
            self._bm25_known = self._exists() and self._has_sparse(BM25)
        return self._bm25_known

    def text_pages(self) -> int:
        """How many pages BM25 can find (pages with text, in a collection with the `bm25` vector)."""
        return self._count(self._filter(None, BM25)) if self.has_text_index() else 0

    def get(self, point_id: str, with_tokens: bool = True) -> PagePoint | None:
        try:
            point_id = str(uuid.UUID(point_id))
        except ValueError:
            return None  # not a point id at all, so no such page
        found = self._retrieve([point_id], with_tokens=with_tokens)
        if not found or found[0].payload.get("kind") == "collection":
            return None
        return found[0]

    def search(
        self,
        tokens: np.ndarray | None,
        limit: int,
        doc_id: str | None = None,
        *,
        exact: bool = False,
        text: str | None = None,
        mode: str = "visual",
    ) -> list[PagePoint]:
        """The best `limit` pages for a query: its tokens (visual signal) and/or its text (BM25), by `mode`
        (SEARCH_MODES). Each result's `signals` name the signals that found it. The visual signal takes the fast
        path (dense HNSW -> pooled MaxSim -> exact MaxSim of the survivors), or with `exact=True` ranks every page
        by exact MaxSim."""
        if mode not in SEARCH_MODES:
            raise ValueError(f"unknown search mode {mode!r}; use one of: {', '.join(SEARCH_MODES)}")
        query = None if tokens is None else np.asarray(tokens, dtype=np.float32)
        if mode != "text" and query is None:
            raise ValueError(f"search mode {mode!r} needs the query's tokens")
        fast = not exact and mode != "text" and self.has_fast_path()
        if mode == "visual":
            return self._query(query, limit, doc_id, fast=fast)
        if not self.has_text_index():
            raise StoreError(
                f"collection {self.collection!r} has no text index (it was made before text search): search it "
                "with mode 'visual', or ingest the documents again into a new TOKENDIRECT_COLLECTION"
            )
        sparse = embed_query(text)
        if sparse is None and mode != "hybrid":
            return []  # no searchable word in the query (empty, or only stop words)
        native = None if sparse is None else self._sparse(sparse)
        return self._query(query, limit, doc_id, fast=fast, sparse=native, mode=mode)

    def _query(self, tokens, limit, doc_id, *, fast=False, sparse=None, mode="visual") -> list[PagePoint]:
        """One Qdrant query per mode, built from the engine's parts; hybrid also asks (in the same batch) for the
        text ranking alone, which tells which fused hits the text signal found."""
        pool = max(4 * limit, 40)  # candidates each signal contributes to fusion or reranking
        text = None if sparse is None else self._text_part(sparse, doc_id)
        if mode == "text":
            main, signals = text, ["text"]
        elif mode == "rerank":
            main, signals = self._maxsim_over(tokens, [(text, pool)], doc_id), ["text", "visual"]
        elif mode == "hybrid":
            parts = [(self._visual_part(tokens, doc_id, fast, pool), pool)] + ([(text, pool)] if text else [])
            main, signals = self._fused(parts, doc_id), None
        else:
            main, signals = self._visual_part(tokens, doc_id, fast, limit), ["visual"]
        if signals is not None:
            hits = self._run([(main, limit)])[0]
            for hit in hits:
                hit.signals = list(signals)
            return hits
        results = self._run([(main, limit)] + ([(text, pool)] if text else []))
        hits, by_text = results[0], results[1] if text else []
        text_rank = {h.point_id: rank for rank, h in enumerate(by_text)}
        for hit in hits:
            # A hit's fused score is the sum of 1 / (RRF_K + rank) over the signals that found it: whatever the
            # text rank does not account for came from the visual one (at least 1 / (RRF_K + pool)).
            rank = text_rank.get(hit.point_id)
            visual = hit.score - (0.0 if rank is None else 1.0 / (RRF_K + rank)) > 0.5 / (RRF_K + pool)
            hit.signals = (["visual"] if visual else []) + ([] if rank is None else ["text"])
        return hits

    def optimize(self) -> None:
        """Build the indexes of pages written since the last call (the embedded engine indexes on request)."""

    @abstractmethod
    def count(self, doc_id: str | None = None) -> int: ...

    @abstractmethod
    def documents(self) -> dict[str, int]:
        """doc_id -> number of stored pages."""

    @abstractmethod
    def delete_document(self, doc_id: str) -> None: ...

    @abstractmethod
    def payload_indexes(self) -> dict[str, str]:
        """field -> index type ("keyword", "integer", "datetime", ...) as the engine reports them."""

    @abstractmethod
    def drop(self) -> None:
        """Delete the whole collection, record included."""

    def close(self) -> None:
        pass

    def window(self):
        """A block of work that holds the store; the embedded shard is given back to other processes after it."""
        return contextlib.nullcontext(self)

    def yield_if_wanted(self) -> None:
        """Give the store back, outside any window, when another process waits for it."""

    def __enter__(self) -> "PageStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- engine specifics ------------------------------------------------------------------------------------

    @abstractmethod
    def _exists(self) -> bool: ...

    @abstractmethod
    def _create(self, dim: int) -> None: ...

    @abstractmethod
    def _write_record(self, payload: dict) -> None: ...

    @abstractmethod
    def _upsert(self, rows: list[tuple[str, dict[str, np.ndarray], dict]]) -> None: ...

    @abstractmethod
    def _retrieve(self, ids: list[str], with_tokens: bool) -> list[PagePoint]: ...

    # A query "part" is what the engine takes both as a whole query and as a prefetch nested in another one.

    @abstractmethod
    def _visual_part(self, tokens: np.ndarray, doc_id: str | None, fast: bool, limit: int) -> Any:
        """MaxSim of the query tokens against the pages: through the fast path's nested prefetch (its depths
        sized for `limit` hits), or exact over every page."""

    @abstractmethod
    def _text_part(self, sparse: Any, doc_id: str | None) -> Any:
        """BM25 of the query's sparse vector against the pages' `bm25` vectors."""

    @abstractmethod
    def _fused(self, parts: list[tuple[Any, int]], doc_id: str | None) -> Any:
        """Reciprocal rank fusion (RRF_K) of (part, candidates) prefetches."""

    @abstractmethod
    def _maxsim_over(self, tokens: np.ndarray, parts: list[tuple[Any, int]], doc_id: str | None) -> Any:
        """Exact MaxSim over the candidates of (part, candidates) prefetches."""

    @abstractmethod
    def _run(self, requests: list[tuple[Any, int]]) -> list[list[PagePoint]]:
        """(part, limit) queries as one batch; scored pages without the payload of NOT_IN_HITS."""

    @abstractmethod
    def _sparse(self, vector: SparseVector) -> Any:
        """The engine's own sparse vector type."""

    @abstractmethod
    def _has_sparse(self, name: str) -> bool: ...

    @abstractmethod
    def _set_sparse(self, point_id: str, vector: Any | None) -> None:
        """Replace (None: remove) a page's `bm25` vector."""

    @abstractmethod
    def _filter(self, doc_id: str | None, vector: str = TOKENS) -> Any:
        """Pages (points that have `vector`), of one document when `doc_id` is given."""

    @abstractmethod
    def _count(self, filter: Any) -> int: ...

    @abstractmethod
    def _scroll(self, offset: Any, limit: int, with_tokens: bool) -> tuple[list[PagePoint], Any]: ...

    @abstractmethod
    def _set_payload(self, point_id: str, payload: dict) -> None: ...

    @abstractmethod
    def _create_index(self, name: str, kind: str) -> None: ...


def _point(pid: Any, payload: dict | None, vector: Any = None, score: float | None = None) -> PagePoint:
    payload = dict(payload or {})
    patch = payload.pop(PATCH_FIELD, None)
    tokens = None
    if isinstance(vector, dict) and vector.get(TOKENS) is not None:
        tokens = from_storage(vector[TOKENS], patch)
    return PagePoint(point_id=str(pid), payload=payload, tokens=tokens, score=score)


# ---------------------------------------------------------------------------------------------------------------
# Embedded engine


class _Shared:
    """One handle per shard (or in-process client) per process, counted, so every stage in a process can
    open the store: a shard admits a single holder, and an in-process client's data lives in its handle."""

    def __init__(self):
        self._lock = threading.Lock()
        self._handles: dict[str, list] = {}

    def acquire(self, key: str, opener):
        with self._lock:
            entry = self._handles.get(key)
            if entry is None:
                entry = self._handles[key] = [opener(), 0]
            entry[1] += 1
            return entry[0]

    def release(self, key: str, closer) -> None:
        with self._lock:
            entry = self._handles.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                del self._handles[key]
                closer(entry[0])


_SHARED = _Shared()


class EdgeStore(PageStore):
    """A qdrant-edge shard on local disk. One process holds it at a time; stages within it share it.

    Other processes wait for the shard up to `wait` seconds (TOKENDIRECT_STORE_WAIT) rather than fail: a lock file
    beside the shard (`<collection>.lock`) queues them and names the holder when the wait runs out. Ingest holds
    the shard only in short windows (`window()`), so searches get in between its batches."""

    def __init__(self, path: Path, collection: str, layout: SearchLayout | None = None, wait: float = 30.0):
        self.collection = collection
        self.layout = layout or SearchLayout()
        self._unindexed = 0  # pages written through this handle since the last optimize
        self.path = Path(path)
        self.wait = wait
        self._key = str(self.path.resolve())
        self._shard = None
        self._depth = 0  # open windows; the shard is given back when the outermost one closes
        self.waited_s = 0.0  # how long the last open waited for another process
        # keep_open: keep the shard after a window while no other process waits for it (opening costs about a
        # second); the holder then calls `yield_if_wanted()` whenever it pauses.

    @property
    def lock_path(self) -> Path:
        return self.path.parent / f"{self.path.name}.lock"

    @property
    def shard(self):
        if self._shard is None and self._exists():
            self._shard = _SHARED.acquire(self._key, lambda: self._hold(self._load))
        return self._shard

    def window(self):
        return _Window(self)

    def wanted(self) -> bool:
        """Whether another process waits for the shard this store holds."""
        lock = _LOCKS.get(id(self._shard)) if self._shard is not None else None
        return lock is not None and lock.wanted()

    def yield_if_wanted(self) -> None:
        if self._depth == 0 and self.wanted():
            self.close()

    def _load(self):
        import qdrant_edge as q

        return q.EdgeShard.load(str(self.path))

    def _hold(self, opener):
        """Take the lock file (waiting up to `wait` s), then open the shard; the lock goes when the shard closes."""
        lock = FileLock(self.lock_path, command_line())
        deadline = time.monotonic() + self.wait
        try:
            lock.acquire(self.wait)
        except LockBusyError as exc:
            raise StoreError(self._busy(exc.holder)) from None
        except OSError as exc:  # a read-only data directory, for one
            raise StoreError(f"cannot open the embedded store {self.path}: {self.lock_path}: {exc.strerror}") from None
        if lock.stale:
            log.info("took over the embedded store from %s, which no longer runs", lock.stale.describe())
        try:
            while True:
                try:
                    shard = opener()
                    break
                except Exception as exc:
                    # A holder that does not take the lock file (an older version) still holds the WAL.
                    if "WouldBlock" in str(exc) and time.monotonic() < deadline:
                        time.sleep(0.05)
                        continue
                    if "WouldBlock" in str(exc):
                        raise StoreError(self._busy(None)) from None
                    raise StoreError(f"cannot open the embedded store {self.path}: {exc}") from None
        except BaseException:
            lock.release()
            raise
        self.waited_s = lock.waited_s
        _LOCKS[id(shard)] = lock
        return shard

    def _busy(self, holder) -> str:
        who = holder.describe() if holder else "another process"
        return (
            f"the embedded store {self.path} is in use by {who} and was not free within "
            f"{self.wait:g} s (TOKENDIRECT_STORE_WAIT); try again later, or run a Qdrant server "
            "(TOKENDIRECT_QDRANT_URL) for concurrent access"
        )

    def _exists(self) -> bool:
        return self._shard is not None or (self.path / "edge_config.json").exists() or (self.path / "wal").exists()

    def _create(self, dim: int) -> None:
        import qdrant_edge as q

        no_graph = q.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=1)

        def multivector(memory, quantization=None):
            return q.EdgeVectorParams(
                size=dim,
                distance=q.Distance.Dot,
                multivector_config=q.MultiVectorConfig(q.MultiVectorComparator.MaxSim),
                datatype=q.VectorStorageDatatype.Float16,
                hnsw_config=no_graph,
                memory=memory,
                quantization_config=quantization,
            )

        layout = self.layout
        int8 = q.ScalarQuantizationConfig(q.ScalarType.Int8, quantile=0.99, memory=q.Memory.Pinned)
        vectors = {
            TOKENS: multivector(q.Memory.Cold),  # on disk, paged in on use
            UNIT: multivector(q.Memory.Cold),
            # quantized: the int8 copy is pinned in RAM and the float16 originals stay on disk, never read by search
            POOLED: multivector(q.Memory.Cold, int8) if layout.pooled_quantization else multivector(q.Memory.Pinned),
            DENSE: q.EdgeVectorParams(
                size=layout.dense_size(dim),
                distance=q.Distance.Dot if layout.muvera else q.Distance.Cosine,
                datatype=q.VectorStorageDatatype.Float16,
                hnsw_config=q.HnswIndexConfig(m=layout.hnsw_m, ef_construct=100, full_scan_threshold=10,
                                              memory=q.Memory.Pinned),
                memory=q.Memory.Pinned,
            ),
        }
        # The engine builds indexes only when asked (`optimize`); any segment worth indexing then gets them.
        optimizers = q.EdgeOptimizersConfig(indexing_threshold=1000)
        sparse = {BM25: q.EdgeSparseVectorParams(modifier=q.Modifier.Idf)}  # IDF from the collection
        config = q.EdgeConfig(vectors=vectors, sparse_vectors=sparse, optimizers=optimizers)
        self.path.mkdir(parents=True, exist_ok=True)
        self._shard = _SHARED.acquire(self._key, lambda: self._hold(lambda: q.EdgeShard.create(str(self.path), config)))

    def _create_index(self, name: str, kind: str) -> None:
        import qdrant_edge as q

        schema = {"keyword": q.PayloadSchemaType.Keyword, "integer": q.PayloadSchemaType.Integer,
                  "datetime": q.PayloadSchemaType.Datetime}[kind]
        self.shard.update(q.UpdateOperation.create_field_index(name, schema))
        self.shard.flush()

    def payload_indexes(self) -> dict[str, str]:
        if self.shard is None:
            return {}
        schema = self.shard.info().payload_schema
        return {name: str(info.data_type).rsplit(".", 1)[-1].lower() for name, info in schema.items()}

    def _write_record(self, payload: dict) -> None:
        import qdrant_edge as q

        self.shard.update(q.UpdateOperation.upsert_points([q.Point(META_ID, {}, payload)]))
        self.shard.flush()

    def _upsert(self, rows) -> None:
        import qdrant_edge as q

        # numpy arrays go in as they are: a page as Python float lists would be ~90 MB of objects
        points = [q.Point(pid, vecs, payload) for pid, vecs, payload in rows]
        self.shard.update(q.UpdateOperation.upsert_points(points))
        self.shard.flush()
        self._unindexed += len(rows)
        if self._unindexed >= OPTIMIZE_EVERY:
            self.optimize()

    def optimize(self) -> None:
        if self.shard is not None:
            self.shard.optimize()
        self._unindexed = 0

    def _retrieve(self, ids, with_tokens):
        if self.shard is None:
            return []
        recs = self.shard.retrieve(ids, with_payload=True, with_vector=[TOKENS] if with_tokens else False)
        return [_point(r.id, r.payload, r.vector) for r in recs]

    def _scroll(self, offset, limit, with_tokens):
        import qdrant_edge as q

        records, offset = self.shard.scroll(
            q.ScrollRequest(
                offset=offset,
                limit=limit,
                filter=self._filter(None),
                with_payload=True,
                with_vector=[TOKENS] if with_tokens else False,
            )
        )
        return [_point(r.id, r.payload, r.vector) for r in records], offset

    def _set_payload(self, point_id, payload):
        import qdrant_edge as q

        try:
            self.shard.update(q.UpdateOperation.set_payload([point_id], payload))
            self.shard.flush()
        except Exception as exc:  # the engine raises plain Exceptions (a read-only disk, for one)
            raise StoreError(f"cannot update the embedded store {self.path}: {exc}") from None

    # A part is the keyword arguments that q.QueryRequest and q.Prefetch share.

    def _visual_part(self, tokens, doc_id, fast, limit):
        import qdrant_edge as q

        unit = unit_rows(tokens).astype(np.float32).tolist()
        part = {"query": q.Query.Nearest(unit, using=UNIT), "filter": self._filter(doc_id)}
        if fast:
            dense_limit, pooled_limit = self.layout.limits(limit)
            dense = q.Prefetch(
                limit=dense_limit,
                query=q.Query.Nearest(self.layout.dense_query(tokens), using=DENSE),
                filter=self._filter(doc_id),
                params=q.SearchParams(hnsw_ef=dense_limit),
            )
            pooled = q.Prefetch(
                limit=pooled_limit,
                query=q.Query.Nearest(unit, using=POOLED),
                prefetches=[dense],
                filter=self._filter(doc_id),
                # int8 scores only: the exact stage comes next, so the float16 originals stay on disk
                params=q.SearchParams(quantization=q.QuantizationSearchParams(rescore=False)),
            )
            part["prefetches"] = [pooled]
        return part

    def _text_part(self, sparse, doc_id):
        import qdrant_edge as q

        return {"query": q.Query.Nearest(sparse, using=BM25), "filter": self._filter(doc_id, BM25)}

    def _fused(self, parts, doc_id):
        import qdrant_edge as q

        return {"query": q.Fusion.Rrf(k=RRF_K), "prefetches": self._prefetches(parts), "filter": self._filter(doc_id)}

    def _maxsim_over(self, tokens, parts, doc_id):
        return dict(self._visual_part(tokens, doc_id, False, 0), prefetches=self._prefetches(parts))

    @staticmethod
    def _prefetches(parts):
        import qdrant_edge as q

        return [q.Prefetch(limit=limit, **part) for part, limit in parts]

    def _run(self, requests):
        import qdrant_edge as q

        exclude = q.PayloadSelector.Exclude(NOT_IN_HITS)
        batch = [q.QueryRequest(limit=limit, with_payload=exclude, **part) for part, limit in requests]
        results = self.shard.query_batch(q.QueryBatchRequest(batch)) if len(batch) > 1 else [self.shard.query(batch[0])]
        return [[_point(p.id, p.payload, score=p.score) for p in points] for points in results]

    def _sparse(self, vector):
        import qdrant_edge as q

        return q.SparseVector(vector.indices, vector.values)

    def _has_sparse(self, name):
        import json

        try:
            config = json.loads((self.path / "edge_config.json").read_text())
        except (OSError, ValueError):
            return False
        return name in (config.get("sparse_vectors") or {})

    def _set_sparse(self, point_id, vector):
        import qdrant_edge as q

        if vector is None:
            op = q.UpdateOperation.delete_vectors([point_id], [BM25])
        else:
            op = q.UpdateOperation.update_vectors([q.PointVectors(point_id, {BM25: vector})])
        try:
            self.shard.update(op)
            self.shard.flush()
        except Exception as exc:  # the engine raises plain Exceptions
            raise StoreError(f"cannot update the embedded store {self.path}: {exc}") from None

    @staticmethod
    def _filter(doc_id: str | None, vector: str = TOKENS):
        import qdrant_edge as q

        must = [q.HasVectorCondition(vector)]
        if doc_id:
            must.append(q.FieldCondition(key="doc_id", match=q.MatchValue(doc_id)))
        return q.Filter(must=must)

    def _count(self, filter) -> int:
        import qdrant_edge as q

        return self.shard.count(q.CountRequest(exact=True, filter=filter)) if self.shard is not None else 0

    def count(self, doc_id=None) -> int:
        return self._count(self._filter(doc_id))

    def documents(self) -> dict[str, int]:
        import qdrant_edge as q

        if self.shard is None:
            return {}
        response = self.shard.facet(q.FacetRequest(key="doc_id", limit=1_000_000, exact=True))
        return {h.value: h.count for h in response.hits if h.count}  # a deleted document stays, at count 0

    def delete_document(self, doc_id: str) -> None:
        import qdrant_edge as q

        if self.shard is None:
            return
        self.shard.update(
            q.UpdateOperation.delete_points_by_filter(
                q.Filter(must=[q.FieldCondition(key="doc_id", match=q.MatchValue(doc_id))])
            )
        )
        self.shard.flush()

    def drop(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)

    def close(self) -> None:
        if self._shard is not None:
            self._shard = None
            _SHARED.release(self._key, _close_shard)


def _close_shard(shard) -> None:
    try:
        shard.close()
    finally:
        lock = _LOCKS.pop(id(shard), None)
        if lock is not None:
            lock.release()


_LOCKS: dict[int, FileLock] = {}  # open shard -> the lock file held for it


class _Window:
    """`with store.window():` holds an embedded shard for the block only, then gives it back to other processes
    (unless an enclosing window, or another stage of this process, still uses it)."""

    def __init__(self, store: EdgeStore):
        self.store = store

    def __enter__(self):
        self.store._depth += 1
        return self.store

    def __exit__(self, *exc) -> None:
        self.store._depth -= 1
        if self.store._depth == 0 and (not self.store.keep_open or self.store.wanted()):
            self.store.close()


# ---------------------------------------------------------------------------------------------------------------
# Qdrant server (or qdrant-client's in-process mode)


class ClientStore(PageStore):
    """A collection on a Qdrant server through qdrant-client; `:memory:` runs the same API in-process.

    Page tokens travel over gRPC when the server's gRPC port is known: as REST JSON one full-size page
    (1121 tokens x 1280 x 2 vectors) is about 47 MB, more than a server's default 32 MB request limit,
    and about 11.5 MB as protobuf. Writes are retried with exponential backoff on transient failures
    (connection lost, timeouts, HTTP 5xx / 429); every write is an idempotent upsert or delete.
    """

    retry_attempts = 4
    retry_delay = 0.5  # seconds before the second attempt; doubles each time (0.5 + 1 + 2 s in all)

    def __init__(self, client, collection: str, where: str, timeout: float | None = None, grpc_port: int = 0,
                 layout: SearchLayout | None = None):
        self.client = client
        self.collection = collection
        self.layout = layout or SearchLayout()
        self.where = where
        self.timeout = timeout
        self.grpc_port = grpc_port

    @classmethod
    def connect(
        cls, url: str, api_key: str | None, collection: str, timeout: int = 30, grpc_port: int = 6334,
        layout: SearchLayout | None = None,
    ) -> "ClientStore":
        from qdrant_client import QdrantClient

        if url == ":memory:":
            client = _SHARED.acquire(url, lambda: QdrantClient(location=":memory:"))
        else:
            client = QdrantClient(
                url=url,
                api_key=api_key,
                timeout=timeout,
                prefer_grpc=grpc_port > 0,
                grpc_port=grpc_port or 6334,
                check_compatibility=False,  # its warning would precede our own, clearer, error
            )
        store = cls(client, collection, url, timeout, grpc_port, layout)
        try:
            store._call(client.get_collections)  # fail now, clearly, if the server cannot be used
        except StoreError:
            store.close()
            raise
        return store

    @property
    def in_process(self) -> bool:
        return self.where == ":memory:"

    def _call(self, fn, *args, retry: bool = False, **kwargs):
        """Run one client call; known failures become one-line StoreErrors. Writes (`retry=True`) are tried
        again after transient failures, a bounded number of times."""
        attempts = self.retry_attempts if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                failure = self._failure(exc)
                if failure is None:
                    raise
                message, transient = failure
                if not transient or attempt == attempts:
                    if transient and attempts > 1:
                        message += f" ({attempts} attempts)"
                    raise StoreError(message) from None
                delay = self.retry_delay * 2 ** (attempt - 1)
                log.warning("%s; trying again in %.1f s (attempt %d of %d)", message, delay, attempt + 1, attempts)
                time.sleep(delay)

    def _failure(self, exc: Exception) -> tuple[str, bool] | None:
        """(one-line message, transient?) for a failure of the server or the connection; None for others."""
        import grpc
        import httpx
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        server = f"the Qdrant server at {self.where}"
        key_hint = (
            "set TOKENDIRECT_QDRANT_API_KEY to the key the server was started with (a read-only key cannot write)"
        )
        if isinstance(exc, UnexpectedResponse):
            code = exc.status_code or 0
            if code in (401, 403):
                return f"{server} refused the API key (HTTP {code}); {key_hint}", False
            return f"{server} answered HTTP {code}{_server_reason(exc.content)}", code >= 500 or code == 429
        if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
            code = exc.code()
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                return f"{server} refused the API key (gRPC {code.name}); {key_hint}", False
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return self._timed_out(server), True
            if code == grpc.StatusCode.UNAVAILABLE:
                reason = _first_line(exc.details()).rsplit("last error: ", 1)[-1]
                return f"cannot reach {server} over gRPC (port {self.grpc_port}): {reason}", True
            transient = code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED)
            return f"{server} answered gRPC {code.name}: {_first_line(exc.details())}", transient
        if isinstance(exc, ResponseHandlingException):
            exc = exc.source
        if isinstance(exc, httpx.TimeoutException):
            return self._timed_out(server), True
        if isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError)):
            return f"cannot reach {server} ({type(exc).__name__}: {_first_line(str(exc))})", True
        return None

    def _timed_out(self, server: str) -> str:
        return f"{server} did not answer within {self.timeout:g} s (TOKENDIRECT_QDRANT_TIMEOUT)"

    def _exists(self) -> bool:
        return bool(self._call(self.client.collection_exists, self.collection))

    def _create(self, dim: int) -> None:
        from qdrant_client import models as m

        def multivector(on_disk, quantization=None):
            return m.VectorParams(
                size=dim,
                distance=m.Distance.DOT,
                multivector_config=m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM),
                datatype=m.Datatype.FLOAT16,
                hnsw_config=m.HnswConfigDiff(m=0),
                on_disk=on_disk,
                quantization_config=quantization,
            )

        int8 = m.ScalarQuantization(
            scalar=m.ScalarQuantizationConfig(type=m.ScalarType.INT8, quantile=0.99, always_ram=True)
        )
        quantized = self.layout.pooled_quantization
        vectors = {
            TOKENS: multivector(True),
            UNIT: multivector(True),
            POOLED: multivector(True, int8) if quantized else multivector(False),
            DENSE: m.VectorParams(
                size=self.layout.dense_size(dim),
                distance=m.Distance.DOT if self.layout.muvera else m.Distance.COSINE,
                datatype=m.Datatype.FLOAT16,
                hnsw_config=m.HnswConfigDiff(m=self.layout.hnsw_m, ef_construct=100),
                on_disk=False,
            ),
        }
        self._call(
            self.client.create_collection,
            self.collection,
            vectors_config=vectors,
            sparse_vectors_config={BM25: m.SparseVectorParams(modifier=m.Modifier.IDF)},  # IDF from the collection
            retry=True,
        )

    def _create_index(self, name: str, kind: str) -> None:
        from qdrant_client import models as m

        if self.in_process:
            return  # qdrant-client's in-process engine has no payload indexes (it filters by scanning)
        schema = {"keyword": m.PayloadSchemaType.KEYWORD, "integer": m.PayloadSchemaType.INTEGER,
                  "datetime": m.PayloadSchemaType.DATETIME}[kind]
        self._call(self.client.create_payload_index, self.collection, name, field_schema=schema, wait=True, retry=True)

    def payload_indexes(self) -> dict[str, str]:
        if not self._exists():
            return {}
        info = self._call(self.client.get_collection, self.collection)
        schema = info.payload_schema
        return {name: str(getattr(s.data_type, "value", s.data_type)).lower() for name, s in schema.items()}

    def _write_record(self, payload: dict) -> None:
        from qdrant_client import models as m

        point = m.PointStruct(id=META_ID, vector={}, payload=payload)
        self._call(self.client.upsert, self.collection, [point], wait=True, retry=True)

    def _upsert(self, rows) -> None:
        from qdrant_client import models as m

        # One page per request: a page is megabytes, so batching saves nothing and could pass a size limit.
        for pid, vecs, payload in rows:
            vector = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in vecs.items()}
            point = m.PointStruct(id=pid, vector=vector, payload=payload)
            self._call(self.client.upsert, self.collection, [point], wait=True, retry=True)

    def _retrieve(self, ids, with_tokens):
        recs = self._call(
            self.client.retrieve,
            self.collection,
            ids,
            with_payload=True,
            with_vectors=[TOKENS] if with_tokens else False,
        )
        return [_point(r.id, r.payload, r.vector) for r in recs]

    def _scroll(self, offset, limit, with_tokens):
        records, offset = self._call(
            self.client.scroll,
            self.collection,
            scroll_filter=self._filter(None),
            limit=limit,
            offset=offset,
            with_payload=True,
            with_vectors=[TOKENS] if with_tokens else False,
        )
        return [_point(r.id, r.payload, r.vector) for r in records], offset

    def _set_payload(self, point_id, payload):
        self._call(self.client.set_payload, self.collection, payload, points=[point_id], wait=True)

    def _filter(self, doc_id, vector=TOKENS):
        from qdrant_client import models as m

        must = [m.HasVectorCondition(has_vector=vector)]
        if doc_id:
            must.append(m.FieldCondition(key="doc_id", match=m.MatchValue(value=doc_id)))
        return m.Filter(must=must)

    # A part is the keyword arguments that models.QueryRequest and models.Prefetch share.

    def _visual_part(self, tokens, doc_id, fast, limit):
        from qdrant_client import models as m

        unit = unit_rows(tokens).astype(np.float32).tolist()
        part = {"query": unit, "using": UNIT, "filter": self._filter(doc_id)}
        if fast:  # the same three stages as EdgeStore._visual_part
            dense_limit, pooled_limit = self.layout.limits(limit)
            dense = m.Prefetch(
                query=self.layout.dense_query(tokens),
                using=DENSE,
                limit=dense_limit,
                filter=self._filter(doc_id),
                params=m.SearchParams(hnsw_ef=dense_limit),
            )
            part["prefetch"] = m.Prefetch(
                query=unit,
                using=POOLED,
                limit=pooled_limit,
                prefetch=dense,
                filter=self._filter(doc_id),
                params=m.SearchParams(quantization=m.QuantizationSearchParams(rescore=False)),
            )
        return part

    def _text_part(self, sparse, doc_id):
        return {"query": sparse, "using": BM25, "filter": self._filter(doc_id, BM25)}

    def _fused(self, parts, doc_id):
        from qdrant_client import models as m

        rrf = m.RrfQuery(rrf=m.Rrf(k=RRF_K))
        return {"query": rrf, "prefetch": self._prefetches(parts), "filter": self._filter(doc_id)}

    def _maxsim_over(self, tokens, parts, doc_id):
        return dict(self._visual_part(tokens, doc_id, False, 0), prefetch=self._prefetches(parts))

    @staticmethod
    def _prefetches(parts):
        from qdrant_client import models as m

        return [m.Prefetch(limit=limit, **part) for part, limit in parts]

    def _run(self, requests):
        from qdrant_client import models as m

        exclude = m.PayloadSelectorExclude(exclude=NOT_IN_HITS)
        batch = [m.QueryRequest(limit=limit, with_payload=exclude, **part) for part, limit in requests]
        results = self._call(self.client.query_batch_points, self.collection, batch)
        return [[_point(p.id, p.payload, score=p.score) for p in res.points] for res in results]

    def _sparse(self, vector):
        from qdrant_client import models as m

        return m.SparseVector(indices=vector.indices, values=vector.values)

    def _has_sparse(self, name):
        info = self._call(self.client.get_collection, self.collection)
        return name in (info.config.params.sparse_vectors or {})

    def _set_sparse(self, point_id, vector):
        from qdrant_client import models as m

        if vector is None:
            self._call(self.client.delete_vectors, self.collection, [BM25], points=[point_id], wait=True, retry=True)
        else:
            update = [m.PointVectors(id=point_id, vector={BM25: vector})]
            self._call(self.client.update_vectors, self.collection, update, wait=True, retry=True)

    def _count(self, filter) -> int:
        if not self._exists():
            return 0
        return self._call(self.client.count, self.collection, count_filter=filter, exact=True).count

    def count(self, doc_id=None) -> int:
        return self._count(self._filter(doc_id))

    def documents(self) -> dict[str, int]:
        if not self._exists():
            return {}
        res = self._call(self.client.facet, self.collection, key="doc_id", limit=1_000_000, exact=True)
        return {h.value: h.count for h in res.hits if h.count}

    def delete_document(self, doc_id: str) -> None:
        from qdrant_client import models as m

        if not self._exists():
            return
        selector = m.Filter(must=[m.FieldCondition(key="doc_id", match=m.MatchValue(value=doc_id))])
        self._call(self.client.delete, self.collection, points_selector=selector, wait=True, retry=True)

    def drop(self) -> None:
        if self._exists():
            self._call(self.client.delete_collection, self.collection, retry=True)

    def close(self) -> None:
        if self.client is None:
            return
        if self.in_process:
            _SHARED.release(self.where, lambda client: client.close())
        else:
            self.client.close()
        self.client = None


def open_store(settings: Settings | None = None) -> PageStore:
    """The store the settings name: a server or in-process client when QDRANT_URL is set, else the shard."""
    s = settings or Settings()
    if s.qdrant_url:
        return ClientStore.connect(
            s.qdrant_url, s.qdrant_api_key or None, s.collection, s.qdrant_timeout, s.qdrant_grpc_port,
            SearchLayout.from_settings(s),
        )
    return EdgeStore(
        Path(s.data_dir) / "qdrant" / s.collection, s.collection, SearchLayout.from_settings(s), s.store_wait
    )


def _describe(identity: ModelIdentity) -> str:
    return f"model {identity.model!r} (revision {identity.revision}, dimension {identity.dim})"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0][:300] if lines else "no details"


def _server_reason(content: bytes) -> str:
    """The server's own error text (Qdrant answers {"status": {"error": ...}}), when there is one."""
    import json

    try:
        error = json.loads(content)["status"]["error"]
    except (ValueError, KeyError, TypeError):
        return ""
    return f": {_first_line(str(error))}"
