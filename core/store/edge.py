"""The embedded engine: a qdrant-edge shard on local disk, translated from the schema and query language.

One process holds a shard at a time; the stages within it share it (sharing.py). Other processes wait for it up to
`wait` seconds (TOKENDIRECT_STORE_WAIT). Ingest holds the shard only in short windows (`window()`), so searches get
in between its batches.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import CollectionExists, StoreError
from core.store import disk
from core.store.base import NOT_IN_HITS, PageStore, Raw
from core.store.layout import SearchLayout
from core.store.schema import Filter, Fusion, Stage, VectorSpec
from core.store.sharing import HANDLES, HeldShard, Holding, Window, hold_shard
from core.tensors import float32_rows
from core.text import SparseVector

# The engine indexes new pages when asked; a writer asks after this many pages (and `optimize()` at will).
OPTIMIZE_EVERY = 1024
INDEX_KINDS = {"keyword": "Keyword", "integer": "Integer", "datetime": "Datetime"}


class EdgeStore(PageStore):
    def __init__(self, path: Path, collection: str, layout: SearchLayout | None = None, wait: float = 30.0):
        self.path = Path(path)
        self.collection = collection
        self.layout = layout or SearchLayout.from_settings()
        self.wait = wait
        self.waited_s = 0.0  # how long the last open waited for another process
        self._key = str(self.path.resolve())
        self._held: HeldShard | None = None
        self._depth = 0  # open windows; the shard is given back when the outermost one closes
        self._keep_open = False  # inside `holding()`
        self._unindexed = 0  # pages written through this handle since the last optimize
        self._unindexed_bytes = 0  # and the bytes of their vectors

    # -- holding the shard -----------------------------------------------------------------------------------

    @property
    def shard(self):
        if self._held is None and self._exists():
            self._held = HANDLES.acquire(self._key, lambda: self._hold(lambda: _edge().EdgeShard.load(str(self.path))))
        return None if self._held is None else self._held.shard

    @property
    def is_open(self) -> bool:
        """Whether this handle holds the shard now (looking does not open it)."""
        return self._held is not None

    def _hold(self, opener) -> HeldShard:
        disk.require(self.path, 0, "open the embedded store")  # opening may grow its files (WAL, mapped chunks)
        held = hold_shard(self.path, opener, self.wait)
        self.waited_s = held.lock.waited_s
        return held

    def window(self):
        return Window(self)

    def holding(self):
        return Holding(self)

    def wanted(self) -> bool:
        return self._held is not None and self._held.wanted()

    def yield_if_wanted(self) -> None:
        if self._depth == 0 and self.wanted():
            self.close()

    def release(self) -> None:
        self.close()

    def allow_wait(self, seconds: float) -> None:
        self.wait = max(self.wait, seconds)

    def abandon_unfinished(self) -> bool:
        if self.count() != 0:
            return False
        self.drop()
        return True

    def close(self) -> None:
        if self._held is not None:
            self._held = None
            HANDLES.release(self._key, HeldShard.close)

    def drop(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)

    # -- collection ------------------------------------------------------------------------------------------

    def collections(self) -> list[str]:
        """The collections of this data directory (each a shard folder beside this one); nothing is opened."""
        try:
            return sorted(p.name for p in self.path.parent.iterdir() if (p / "edge_config.json").is_file())
        except OSError:
            return []

    def _exists(self) -> bool:
        return self._held is not None or (self.path / "edge_config.json").exists() or (self.path / "wal").exists()

    def _create(self, vectors: list[VectorSpec]) -> None:
        q = _edge()
        dense = {v.name: _vector_params(v) for v in vectors if v.size is not None}
        sparse = {
            v.name: q.EdgeSparseVectorParams(modifier=q.Modifier.Idf if v.idf else None)
            for v in vectors
            if v.size is None
        }
        # The engine builds indexes only when asked (`optimize`); any segment worth indexing then gets them.
        config = q.EdgeConfig(
            vectors=dense,
            sparse_vectors=sparse,
            optimizers=q.EdgeOptimizersConfig(indexing_threshold=1000),
            wal_enabled=False,
        )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(disk.data_dir_problem(self.path, exc)) from None

        def create():
            if self._exists():  # another process made it while this one waited for the shard
                raise CollectionExists(f"collection {self.collection!r} was created by another process")
            return q.EdgeShard.create(str(self.path), config)

        self._held = HANDLES.acquire(self._key, lambda: self._hold(create))

    def _create_index(self, name: str, kind: str) -> None:
        q = _edge()
        self._write(q.UpdateOperation.create_field_index(name, getattr(q.PayloadSchemaType, INDEX_KINDS[kind])))

    def payload_indexes(self) -> dict[str, str]:
        if self.shard is None:
            return {}
        schema = self.shard.info().payload_schema
        return {name: str(info.data_type).rsplit(".", 1)[-1].lower() for name, info in schema.items()}

    def _sparse_names(self) -> set[str]:
        try:
            config = json.loads((self.path / "edge_config.json").read_text())
        except (OSError, ValueError):
            return set()
        return set(config.get("sparse_vectors") or {})

    # -- points ----------------------------------------------------------------------------------------------

    def _upsert(self, rows) -> None:
        q = _edge()
        size = sum(getattr(v, "nbytes", 0) for _, vecs, _ in rows for v in vecs.values())
        disk.require(self.path, int(disk.WRITE_FACTOR * size), f"write {len(rows)} more pages")
        # A point copies its vectors into the engine when made, so only one page's lists live at a time.
        points = [q.Point(pid, {k: _vector(v) for k, v in vecs.items()}, payload) for pid, vecs, payload in rows]
        self._write(q.UpdateOperation.upsert_points(points))
        self._unindexed += len(rows)
        self._unindexed_bytes += size
        if self._unindexed >= OPTIMIZE_EVERY:
            self._index()

    def optimize(self) -> None:
        super().optimize()
        self._index()

    def _index(self) -> None:
        if self.shard is not None:
            disk.require(
                self.path,
                int(disk.INDEX_FACTOR * self._unindexed_bytes),
                "build the search index of the pages written (they are stored; searches work without it, slower)",
            )
            try:
                self.shard.optimize()
            except Exception as exc:  # the engine raises plain Exceptions
                raise StoreError(disk.engine_problem(self.path, exc, "build the search index of")) from None
        self._unindexed = 0
        self._unindexed_bytes = 0

    def _retrieve(self, ids, vectors) -> list[Raw]:
        if self.shard is None:
            return []
        recs = self.shard.retrieve(ids, with_payload=True, with_vector=vectors or False)
        return [(r.id, r.payload, r.vector, None) for r in recs]

    def _scroll(self, filter, offset, limit, vectors):
        q = _edge()
        records, offset = self.shard.scroll(
            q.ScrollRequest(
                offset=offset, limit=limit, filter=_filter(filter), with_payload=True, with_vector=vectors or False
            )
        )
        return [(r.id, r.payload, r.vector, None) for r in records], offset

    def _set_payload(self, point_id, payload) -> None:
        self._write(_edge().UpdateOperation.set_payload([point_id], payload))

    def _update_vectors(self, point_id, vectors) -> None:
        q = _edge()
        self._write(
            q.UpdateOperation.update_vectors([q.PointVectors(point_id, {k: _vector(v) for k, v in vectors.items()})])
        )

    def _delete_vectors(self, point_id, names) -> None:
        self._write(_edge().UpdateOperation.delete_vectors([point_id], names))

    def _count(self, filter) -> int:
        if self.shard is None:
            return 0
        counts = self._held.counts
        if filter not in counts:
            counts[filter] = self.shard.count(_edge().CountRequest(exact=True, filter=_filter(filter)))
        return counts[filter]

    def _facet(self, key) -> dict[str, int]:
        if self.shard is None:
            return {}
        response = self.shard.facet(_edge().FacetRequest(key=key, limit=1_000_000, exact=True))
        return {h.value: h.count for h in response.hits}  # a deleted document stays, at count 0

    def _delete(self, filter) -> None:
        if self.shard is not None:
            self._write(_edge().UpdateOperation.delete_points_by_filter(_filter(filter)))

    def _write(self, operation) -> None:
        disk.require(self.path, 0, "update the embedded store")  # small writes too: the log grows in chunks
        try:
            shard = self.shard
            self._held.counts.clear()  # the write may change any count
            shard.update(operation)
            shard.flush()
        except Exception as exc:  # the engine raises plain Exceptions (a read-only disk, for one)
            raise StoreError(disk.engine_problem(self.path, exc, "update")) from None

    def _query(self, requests: list[Stage]) -> list[list[Raw]]:
        q = _edge()
        exclude = q.PayloadSelector.Exclude(NOT_IN_HITS)
        batch = [q.QueryRequest(with_payload=exclude, **_stage(s)) for s in requests]
        results = self.shard.query_batch(q.QueryBatchRequest(batch)) if len(batch) > 1 else [self.shard.query(batch[0])]
        return [[(p.id, p.payload, None, p.score) for p in points] for points in results]


# -- translation -------------------------------------------------------------------------------------------------


def _edge():
    import qdrant_edge

    return qdrant_edge


def _vector_params(v: VectorSpec):
    q = _edge()
    memory = q.Memory.Pinned if v.in_ram else q.Memory.Cold  # Cold: on disk, paged in on use
    if v.hnsw_m:
        hnsw = q.HnswIndexConfig(m=v.hnsw_m, ef_construct=v.ef_construct, full_scan_threshold=10, memory=memory)
    else:
        hnsw = q.HnswIndexConfig(m=0, ef_construct=v.ef_construct, full_scan_threshold=1)
    return q.EdgeVectorParams(
        size=v.size,
        distance=q.Distance.Cosine if v.cosine else q.Distance.Dot,
        multivector_config=q.MultiVectorConfig(q.MultiVectorComparator.MaxSim) if v.multi else None,
        datatype=q.VectorStorageDatatype.Uint8 if v.uint8 else q.VectorStorageDatatype.Float16,
        hnsw_config=hnsw,
        memory=memory,
        quantization_config=_quantization(v),
    )


def _quantization(v: VectorSpec):
    q = _edge()
    if v.int8:
        return q.ScalarQuantizationConfig(q.ScalarType.Int8, quantile=0.99, memory=q.Memory.Pinned)
    return q.BinaryQuantizationConfig(memory=q.Memory.Pinned) if v.binary else None


def _vector(v: Any):
    if isinstance(v, SparseVector):
        return _edge().SparseVector(v.indices, v.values)
    if not isinstance(v, np.ndarray):
        return v
    return float32_rows(v)  # the engine reads a vector one Python float at a time: see core/tensors.py


def _filter(f: Filter):
    q = _edge()
    must = []
    if f.has_vector:
        must.append(q.HasVectorCondition(f.has_vector))
    if f.doc_id:
        must.append(q.FieldCondition(key="doc_id", match=q.MatchValue(f.doc_id)))
    must_not = [q.HasVectorCondition(f.lacks_vector)] if f.lacks_vector else None
    return q.Filter(must=must, must_not=must_not)


def _stage(s: Stage) -> dict:
    """The keyword arguments that q.QueryRequest and q.Prefetch share."""
    q = _edge()
    if isinstance(s.query, Fusion):
        weights = list(s.query.weights) if s.query.weights else None
        query = q.Fusion.Rrf(k=s.query.k, weights=weights) if s.query.method == "rrf" else q.Fusion.Dbsf()
    else:
        query = q.Query.Nearest(_vector(s.query.vector), using=s.query.using)
    params = None
    if s.hnsw_ef is not None or s.rescore is not None:
        quantization = None if s.rescore is None else q.QuantizationSearchParams(rescore=s.rescore)
        params = q.SearchParams(hnsw_ef=s.hnsw_ef, quantization=quantization)
    args = {"limit": s.limit, "query": query, "filter": _filter(s.filter)}
    if params is not None:
        args["params"] = params
    if s.prefetch:
        args["prefetches"] = [q.Prefetch(**_stage(p)) for p in s.prefetch]
    return args
