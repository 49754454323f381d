"""The page store: one Qdrant point per page, whichever engine holds the collection.

`PageStore` holds everything that does not depend on the engine: the collection record and the model guard, the
storage form of tokens, the vectors derived from them, payload rules and search results. An engine subclass
(edge.py, client.py) only translates the schema, the query language (schema.py) and a few plain operations into
its own client's calls.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from abc import ABC, abstractmethod
from typing import Any, Iterable, Iterator

import numpy as np

from core import codebook
from core.clock import utc_now
from core.errors import CollectionExists, StoreError, UsageError
from core.model import ModelIdentity
from core.pooling import SKETCH_DIM, sketch
from core.store import record as records
from core.store.cluster import EMBEDDED
from core.store.layout import CENTROIDS, SearchLayout
from core.store.schema import (
    BM25,
    INDEXED_FIELDS,
    LEGACY_UNIT,
    TOKENS,
    Filter,
    Stage,
    VectorSpec,
    chunks_for,
    rows_per_vector,
    schema,
    token_chunks,
)
from core.store.storage import (
    LEGACY_PATCH_FIELD,
    ROWS_FIELD,
    STORE_FIELDS,
    PagePoint,
    from_rows,
    from_storage,
    to_rows,
    unit_rows,
)
from core.tensors import one_blas_thread, unit_length
from core.text import SparseVector, embed_document, text_fields

NOT_IN_HITS = [*STORE_FIELDS, "text"]  # payload search results leave out: the page text can be kilobytes

log = logging.getLogger("tokendirect.store")

# What an engine hands back for a point: id, payload, named vectors (those asked for), score (in a search).
Raw = tuple[Any, dict | None, dict | None, float | None]


class PageStore(ABC):
    """What ingest, search and decode need from Qdrant, whichever engine holds the collection."""

    collection: str
    layout: SearchLayout
    _record: dict | None = None  # the collection record, once read (or written)
    _bm25_known: bool = False  # the collection has the `bm25` vector (only "yes" is kept: it never goes away)
    _centroids: np.ndarray | None = None  # the collection's codebook, once read (or learned)
    _codebook_ready: bool = False  # ... and every page has its vector (only "yes" is kept)
    # Seconds a writer waits for the record of a collection that exists without one: where others can see a new
    # collection before its record (a server), another writer may have just created it. 0: creation is atomic.
    record_wait: float = 0.0

    # -- collection record -----------------------------------------------------------------------------------

    def bind(self, identity: ModelIdentity, create: bool = True) -> None:
        """Create the collection for `identity`, or check that it was built with exactly that model. Writers on
        several hosts may create it at the same moment; the one that loses the race takes the winner's collection
        once its record is written."""
        record = self.record(wait=self.record_wait if create else 0)
        if record is None:
            if not create:
                raise StoreError(f"collection {self.collection!r} does not exist yet; ingest documents first")
            chunks = chunks_for(identity.dim, identity.max_tokens)
            try:
                self._create(schema(identity.dim, self.layout, chunks))
            except CollectionExists:
                record = self.record(wait=self.record_wait)  # checked below like any existing collection's
            else:
                try:
                    self.ensure_indexes()
                    record = records.new_record(identity, self.layout, chunks)
                    self._upsert([(records.META_ID, {}, record)])
                    self._record = record
                except BaseException:
                    # A collection without its record would be refused forever ("not made by token-direct").
                    self.discard()
                    raise
                return
        self._adopt(record)
        records.check_model(record, identity, self.collection)
        if create:
            self.ensure_indexes()  # collections made before an index was added get it on their next ingest

    def distribution(self) -> dict:
        """How the collection is spread over a cluster (shard_number, replication_factor, write_consistency_factor)."""
        return EMBEDDED.to_dict()

    def _adopt(self, record: dict) -> None:
        """Take the derivation the collection was built with from its record."""
        self._record = record
        if records.has_fast_path(record):
            self.layout = self.layout.adopt(record["layout"])
        else:
            log.warning(
                "collection %r was made before the fast search path: every search runs exact MaxSim "
                "(export and import it into a new collection to add the fast path)",
                self.collection,
            )

    def _built(self) -> dict | None:
        """The collection record, read once."""
        if self._record is None:
            record = self.record()
            if record is not None:
                self._adopt(record)
        return self._record

    def has_fast_path(self) -> bool:
        record = self._built()
        return record is not None and records.has_fast_path(record)

    @property
    def ranking_vector(self) -> str:
        """The multivector exact MaxSim ranks by."""
        record = self._built()
        return TOKENS if record is None or records.schema_of(record) >= 3 else LEGACY_UNIT

    @property
    def dim(self) -> int:
        """The collection's token dimension (0 before it exists)."""
        record = self._built()
        return int(record["dim"]) if record else 0

    @property
    def row_limit(self) -> int:
        """The most rows a multivector of this collection may hold (the query's included)."""
        record = self._built()
        return rows_per_vector(self.dim) if record else 0

    @property
    def max_query_rows(self) -> int:
        """The most rows a query's multivector may have here."""
        return self.row_limit

    def _token_vectors(self) -> list[str]:
        """The named vectors that hold a page's tokens."""
        record = self._built()
        return token_chunks(int(record.get("chunks", 1))) if record else [TOKENS]

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

    def record(self, wait: float = 0.0) -> dict | None:
        """The collection's record (model, revision, dim), or None when the collection does not exist. A collection
        without a record is waited on up to `wait` seconds: another writer may have just created it."""
        deadline = time.monotonic() + wait
        while self._exists():
            found = self._retrieve([records.META_ID], None)
            if found:
                return dict(found[0][1] or {})
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"collection {self.collection!r} exists but holds no token-direct record (another program made "
                    "it, or its creation was cut off): delete it, or set another TOKENDIRECT_COLLECTION"
                )
            time.sleep(0.2)
        return None

    def save_fusion(self, fields: dict) -> None:
        """Keep hybrid search's calibrated weights in the collection record (record.FUSION), for every later search."""
        if self.record() is None:
            raise StoreError(f"collection {self.collection!r} does not exist yet; ingest documents first")
        self._set_payload(records.META_ID, {records.FUSION: fields})

    # -- pages -----------------------------------------------------------------------------------------------

    def upsert(self, points: list[PagePoint]) -> None:
        """Store pages from their exact tokens; every other vector of a page is derived here. The write that brings
        the collection to `codebook_pages` pages learns its codebook."""
        rows = self.prepare(points)
        if rows:
            self._upsert(rows)
            due = self._record is not None and self.layout.codebook and self._centroids is None
            if due and self.count() >= self.layout.codebook_pages:
                self.complete_codebook()

    def prepare(self, points: list[PagePoint]) -> list[tuple[str, dict[str, Any], dict]]:
        """Pages in the form the engine stores them, (id, named vectors, payload) each: the tokens' storage form
        and the vectors derived from them. A page that does not fit the collection fails the batch here, before
        anything is written."""
        # Writers bind first, which reads the record; a store never bound writes the current layout.
        record = self._record
        if record is not None and records.schema_of(record) < records.SCHEMA_VERSION:
            raise StoreError(
                f"collection {self.collection!r} was made with an older storage layout (schema "
                f"{records.schema_of(record)}); it can be searched, decoded and exported, but not added to: export "
                "it and import it into a new TOKENDIRECT_COLLECTION"
            )
        indexed = any(p.payload.get("text") for p in points) and self.has_text_index()  # asks only when needed
        centroids = self.centroids(ready=False) if record is not None else None
        with one_blas_thread():  # see core/tensors.py: a writer shares the machine with an encoder
            return [self._row(p, record, indexed, centroids) for p in points]

    def _row(self, p: PagePoint, record: dict | None, indexed: bool, centroids: np.ndarray | None = None):
        """A page as the engine stores it: (id, named vectors, payload)."""
        n, dim = p.tokens.shape
        limit = rows_per_vector(dim)
        names = token_chunks(int(record["chunks"]) if record else chunks_for(dim, n))
        if n > limit * len(names):
            raise StoreError(
                f"a page of {n} tokens does not fit collection {self.collection!r}, made for at most "
                f"{limit * len(names)} a page"
            )
        norms, unit = unit_rows(p.tokens)
        order, derived = self.layout.derive(unit, limit, centroids)
        stored, form = to_rows(p.tokens, norms, unit, order)
        vectors: dict[str, Any] = {name: stored[k * limit : (k + 1) * limit] for k, name in enumerate(names)}
        vectors = {name: chunk for name, chunk in vectors.items() if len(chunk)}
        vectors.update(derived)
        payload = {**p.payload, ROWS_FIELD: form}
        sparse = embed_document(payload.get("text")) if indexed else None
        if sparse is not None:
            vectors[BM25] = sparse
        return p.point_id, vectors, payload

    def existing(self, point_ids: Iterable[str]) -> set[str]:
        return {p.point_id for p in self.retrieve(point_ids, with_tokens=False)}

    def retrieve(self, point_ids: Iterable[str], with_tokens: bool = True) -> list[PagePoint]:
        """The stored pages among `point_ids` (in any order; missing ones are left out)."""
        ids = list(point_ids)
        if not ids or not self._exists():
            return []
        raws = self._retrieve(ids, self._token_vectors() if with_tokens else None)
        return [_point(raw) for raw in raws if str(raw[0]) not in records.OWN_POINTS]

    def get(self, point_id: str, with_tokens: bool = True) -> PagePoint | None:
        try:
            point_id = str(uuid.UUID(point_id))
        except ValueError:
            return None  # not a point id at all, so no such page
        found = self.retrieve([point_id], with_tokens)
        return found[0] if found else None

    def scroll(self, batch_size: int = 16, with_tokens: bool = True) -> Iterator[list[PagePoint]]:
        """Every page, in batches of at most `batch_size`, in point-id order: only one batch is held at a time."""
        if self._exists():
            yield from self._scroll_pages(Filter(), batch_size, with_tokens)

    def vector_rows(self, name: str, pages: int = 64) -> list[int]:
        """How many rows the multivector `name` has on each of the first `pages` pages that have it."""
        if not self._exists():
            return []
        raw, _ = self._scroll(Filter(name), None, pages, [name])
        return [len(vectors[name]) for _, _, vectors, _ in raw if vectors and name in vectors]

    def set_payload(self, point_id: str, payload: dict) -> None:
        """Add or replace payload fields of a stored page; the tokens and other fields stay as they are."""
        if any(name in payload for name in STORE_FIELDS) or payload.get("kind") == "collection":
            raise UsageError(f"payload fields {', '.join(STORE_FIELDS)} and kind 'collection' are the store's own")
        if point_id in records.OWN_POINTS or not self.existing([point_id]):
            raise StoreError(f"no page with point id {point_id!r} in collection {self.collection!r}")
        self._set_payload(point_id, payload)

    def set_text(self, point_id: str, text: str | None, source: str | None) -> None:
        """Give a stored page its text (payload `text`, `text_source`) and the BM25 vector made from it."""
        fields = text_fields(text, source)
        self.set_payload(point_id, fields)
        if self.has_text_index():
            sparse = embed_document(fields["text"])
            if sparse is None:
                self._delete_vectors(point_id, [BM25])
            else:
                self._update_vectors(point_id, {BM25: sparse})

    def has_text_index(self) -> bool:
        """Whether the collection has the `bm25` vector (collections made before text search do not)."""
        if not self._bm25_known:
            self._bm25_known = self._exists() and BM25 in self._sparse_names()
        return self._bm25_known

    def text_pages(self) -> int:
        """How many pages BM25 can find (pages with text, in a collection with the `bm25` vector)."""
        return self._count(Filter(BM25)) if self.has_text_index() else 0

    def count(self, doc_id: str | None = None) -> int:
        return self._count(Filter(TOKENS, doc_id)) if self._exists() else 0

    def documents(self) -> dict[str, int]:
        """doc_id -> number of stored pages."""
        return {value: n for value, n in self._facet("doc_id").items() if n} if self._exists() else {}

    def collections(self) -> list[str]:
        """The names of the collections this store holds (this one among them once it exists)."""
        return [self.collection] if self._exists() else []

    def delete_document(self, doc_id: str) -> None:
        if self._exists():
            self._delete(Filter(None, doc_id))

    def query(self, requests: list[Stage]) -> list[list[PagePoint]]:
        """Run `requests` as one batch; each gives scored pages without the payload of NOT_IN_HITS."""
        return [[_point(raw) for raw in raws] for raws in self._query(requests)]

    def optimize(self) -> None:
        """Build the indexes of pages written since the last call (the embedded engine indexes on request), and give
        every page its codebook vector once the codebook is due."""
        if self.layout.codebook and self._exists() and self.count() >= self.layout.codebook_pages:
            self.complete_codebook()

    # -- the codebook first stage (core/codebook.py) ------------------------------------------------------------

    def centroids(self, ready: bool = True) -> np.ndarray | None:
        """The collection's codebook ([K, the sketches' width]), or None before it is learned (and in collections made
        without one). `ready`: only once every page stored before it has its codebook vector, so that a search
        through it misses none. Not having one is never cached: a long-lived searcher takes it up once learned."""
        if self._built() is None or not self.layout.codebook:
            return None
        if self._centroids is None or (ready and not self._codebook_ready):
            found = self._retrieve([records.CODEBOOK_ID], None)
            if found:
                payload = found[0][1] or {}
                self._centroids = codebook.decode(payload["centroids"], min(self.dim, SKETCH_DIM))
                self._codebook_ready = bool(payload.get("ready"))
        if ready and not self._codebook_ready:
            return None
        return self._centroids

    def complete_codebook(self, batch_size: int = 16) -> None:
        """Learn the codebook from the first `codebook_pages` pages (in point-id order, which is unrelated to the
        order they came in) unless the collection has one, then give every page without a codebook vector its
        vector. Safe to run again, and cut off anywhere: a page gets its vector once."""
        centroids = self.centroids(ready=False)
        if centroids is None:
            centroids = self._learn_codebook(batch_size)
        self._assign(Filter(TOKENS, lacks_vector=CENTROIDS), centroids, batch_size)
        # Writers on a server that reach the size together each learn one, and the last one written is kept: a
        # writer whose codebook was replaced gives every page its vector again, from the one kept.
        self._centroids = None
        kept = self.centroids(ready=False)
        if not np.array_equal(kept, centroids):
            log.warning("another writer learned the codebook of %r at the same time: using its", self.collection)
            self._assign(Filter(TOKENS), kept, batch_size)
        if not self._codebook_ready:
            self._set_payload(records.CODEBOOK_ID, {"ready": True})
            self._codebook_ready = True

    def _assign(self, pages: Filter, centroids: np.ndarray, batch_size: int) -> None:
        """Give `pages` their codebook vectors."""
        with one_blas_thread():
            for batch in self._scroll_pages(pages, batch_size):
                for page in batch:
                    vector = codebook.page_vector(
                        sketch(unit_length(page.tokens)), centroids, self.layout.codebook_spread
                    )
                    self._update_vectors(page.point_id, {CENTROIDS: vector})

    def _learn_codebook(self, batch_size: int) -> np.ndarray:
        rng = np.random.default_rng(0)
        sample, pages = [], 0
        for batch in self._scroll_pages(Filter(TOKENS), batch_size):
            for page in batch[: self.layout.codebook_pages - pages]:
                rows = sketch(unit_length(page.tokens))
                # a bounded share of each page, so that tiled pages weigh no more than small ones
                take = rng.choice(len(rows), min(len(rows), codebook.TOKENS_PER_PAGE), replace=False)
                sample.append(rows[np.sort(take)])
            pages += len(batch)
            if pages >= self.layout.codebook_pages:
                break
        centroids = codebook.train(np.concatenate(sample), self.layout.codebook)
        log.info("learned the codebook of %r from %d pages", self.collection, len(sample))
        about = {"kind": "codebook", "centroids": codebook.encode(centroids), "pages": len(sample)}
        self._upsert([(records.CODEBOOK_ID, {}, {**about, "ready": False, "created_at": utc_now()})])
        # what is stored now, should another writer have learned one at the same moment: all pages get the one kept
        self._centroids = None
        return self.centroids(ready=False)

    def _scroll_pages(self, filter: Filter, batch_size: int, with_tokens: bool = True) -> Iterator[list[PagePoint]]:
        offset = None
        while True:
            raws, offset = self._scroll(filter, offset, batch_size, self._token_vectors() if with_tokens else None)
            if raws:
                yield [_point(raw) for raw in raws]
            if offset is None:
                return

    # -- sharing with other processes (the embedded shard admits one at a time; a server needs none of this) --

    def window(self):
        """A block of work that holds the store; the embedded shard is given back to other processes after it."""
        return contextlib.nullcontext(self)

    def holding(self):
        """A stretch of work (an ingest) during which the store stays open between windows, until another
        process asks for it."""
        return contextlib.nullcontext(self)

    def yield_if_wanted(self) -> None:
        """Give the store back, outside any window, when another process waits for it."""

    def release(self) -> None:
        """Give the store back to other processes now; it opens again on the next use."""

    def allow_wait(self, seconds: float) -> None:
        """Wait up to `seconds` (at least) when another process holds the store."""

    def abandon_unfinished(self) -> bool:
        """Remove a collection whose creation was cut off before its record was written, when that is safe (it
        holds no page, and this program made it); True when it was removed."""
        return False

    # -- lifetime --------------------------------------------------------------------------------------------

    def close(self) -> None:
        pass

    def __enter__(self) -> "PageStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what each engine translates ------------------------------------------------------------------------

    @abstractmethod
    def _exists(self) -> bool: ...

    @abstractmethod
    def _create(self, vectors: list[VectorSpec]) -> None: ...

    @abstractmethod
    def _create_index(self, name: str, kind: str) -> None: ...

    @abstractmethod
    def payload_indexes(self) -> dict[str, str]:
        """field -> index type ("keyword", "integer", "datetime", ...) as the engine reports them."""

    @abstractmethod
    def _sparse_names(self) -> set[str]:
        """The collection's sparse vector names."""

    @abstractmethod
    def _upsert(self, rows: list[tuple[str, dict[str, Any], dict]]) -> None:
        """Write points: (id, named vectors as float16 arrays or SparseVectors, payload)."""

    @abstractmethod
    def _retrieve(self, ids: list[str], vectors: list[str] | None) -> list[Raw]: ...

    @abstractmethod
    def _scroll(self, filter: Filter, offset: Any, limit: int, vectors: list[str] | None) -> tuple[list[Raw], Any]: ...

    @abstractmethod
    def _set_payload(self, point_id: str, payload: dict) -> None: ...

    @abstractmethod
    def _update_vectors(self, point_id: str, vectors: dict[str, Any]) -> None: ...

    @abstractmethod
    def _delete_vectors(self, point_id: str, names: list[str]) -> None: ...

    @abstractmethod
    def _count(self, filter: Filter) -> int: ...

    @abstractmethod
    def _facet(self, key: str) -> dict[str, int]: ...

    @abstractmethod
    def _delete(self, filter: Filter) -> None: ...

    @abstractmethod
    def _query(self, requests: list[Stage]) -> list[list[Raw]]: ...

    @abstractmethod
    def drop(self) -> None:
        """Delete the whole collection, record included."""


def _point(raw: Raw) -> PagePoint:
    pid, payload, vectors, score = raw
    payload = dict(payload or {})
    form = payload.pop(ROWS_FIELD, None)
    patch = payload.pop(LEGACY_PATCH_FIELD, None)
    tokens = None
    if isinstance(vectors, dict) and vectors.get(TOKENS) is not None:
        if form is None:  # schema 2: the raw tokens in float16
            tokens = from_storage(vectors[TOKENS], patch)
        else:
            chunks = [vectors[name] for name in token_chunks(len(vectors)) if vectors.get(name) is not None]
            tokens = from_rows(np.concatenate([np.asarray(c, dtype=np.float32) for c in chunks]), form)
    return PagePoint(point_id=str(pid), payload=payload, tokens=tokens, score=score)


__all__ = ["PageStore", "SparseVector", "NOT_IN_HITS"]
