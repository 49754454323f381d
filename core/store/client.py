"""A collection on a Qdrant server through qdrant-client (`:memory:` runs the same API in-process), translated from
the schema and query language.

No request is larger than the server accepts (TOKENDIRECT_QDRANT_MAX_REQUEST_MB, Qdrant's default 32 MiB): a page
whose vectors do not fit in one is written in several, its `tokens` chunk last, so a page cut off half way is never
found (pages are the points that have `tokens`) and the next write of it replaces it whole. Sizes are bounded from
above per value: 4 bytes in gRPC's packed floats, 24 in REST's JSON (the longest text of a float16 value, 23
characters, and its comma; 4 for a sign code, "255,"). Page writes go over gRPC when the server's gRPC port is
known (a full-size page is about 10 MB there and 32 MB as JSON); the in-process mode is held to the REST bound, the
stricter one.
Known failures of the server or the connection become one-line StoreErrors; writes are retried with exponential
backoff on transient ones (connection lost, timeouts, HTTP 5xx / 429); every write is an idempotent upsert or delete.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np

from core.errors import CollectionExists, StoreError, first_line
from core.store.base import NOT_IN_HITS, PageStore, Raw
from core.store.cluster import FIELDS, Distribution
from core.store.layout import FINE, POOLED, SearchLayout
from core.store.schema import TOKENS, Filter, Fusion, Stage, VectorSpec
from core.store.sharing import HANDLES
from core.tensors import shared_floats
from core.text import SparseVector

log = logging.getLogger("tokendirect.store")

MEMORY = ":memory:"
GRPC_VALUE_BYTES = 4  # a float in a packed protobuf field
REST_VALUE_BYTES = 24  # the longest JSON text of a float16 value (23 characters), and its comma
CODE_VALUE_BYTES = 4  # a sign code (uint8) in JSON: "255,"; in gRPC a float, 4 bytes too
ENVELOPE_BYTES = 64 << 10  # a request's own fields: ids, names, brackets, options
SIGN_CODED = frozenset({POOLED, FINE})  # the vectors a collection of SearchLayout.coded stores as sign codes


def request_groups(vectors: dict[str, Any], payload: dict, max_bytes: int, value_bytes: int) -> list[list[str]]:
    """The page's named vectors in groups, one request each, none over `max_bytes`: the payload travels with the
    first group, and `tokens` in the last, so a page is complete (found) only once everything is written."""

    def size(v) -> int:
        if isinstance(v, SparseVector):
            return len(v.indices) * (value_bytes + 12)
        per = min(value_bytes, CODE_VALUE_BYTES) if getattr(v, "dtype", None) == np.uint8 else value_bytes
        return np.size(v) * per + 4 * np.shape(v)[0]

    budget = max_bytes - ENVELOPE_BYTES
    groups: list[list[str]] = [[]]
    used = len(json.dumps(payload, ensure_ascii=False).encode())
    for name in sorted(vectors, key=lambda k: k == TOKENS):
        need = size(vectors[name])
        if need > budget:
            raise StoreError(
                f"the vector {name!r} of a page takes up to {need / (1 << 20):.1f} MiB in a request, more than the "
                f"server accepts ({max_bytes / (1 << 20):g} MiB, TOKENDIRECT_QDRANT_MAX_REQUEST_MB)"
            )
        if used + need > budget and groups[-1]:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += need
    return groups


class ClientStore(PageStore):
    record_wait = 60.0  # a collection is created, indexed, then given its record, in separate requests
    retry_attempts = 4
    retry_delay = 0.5  # seconds before the second attempt; doubles each time (0.5 + 1 + 2 s in all)

    def __init__(
        self,
        client,
        collection: str,
        where: str,
        timeout: float | None = None,
        grpc_port: int = 0,
        layout: SearchLayout | None = None,
        max_request_bytes: int = 32 << 20,
        distribution: Distribution = Distribution(),
    ):
        self.client = client
        self.collection = collection
        self.layout = layout or SearchLayout.from_settings()
        self.where = where
        self.timeout = timeout
        self.grpc_port = grpc_port
        self.max_request_bytes = max_request_bytes
        self.distribution_asked = distribution  # for a collection this store creates

    @classmethod
    def connect(
        cls,
        url: str,
        api_key: str | None,
        collection: str,
        timeout: int = 30,
        grpc_port: int = 6334,
        layout: SearchLayout | None = None,
        max_request_bytes: int = 32 << 20,
        distribution: Distribution = Distribution(),
    ) -> "ClientStore":
        from qdrant_client import QdrantClient

        if url == MEMORY:
            client = HANDLES.acquire(url, lambda: QdrantClient(location=MEMORY))
        else:
            client = QdrantClient(
                url=url,
                api_key=api_key,
                timeout=timeout,
                prefer_grpc=grpc_port > 0,
                grpc_port=grpc_port or 6334,
                check_compatibility=False,  # its warning would precede our own, clearer, error
            )
        store = cls(client, collection, url, timeout, grpc_port, layout, max_request_bytes, distribution)
        try:
            store._call(client.get_collections)  # fail now, clearly, if the server cannot be used
        except StoreError:
            store.close()
            raise
        return store

    @property
    def in_process(self) -> bool:
        return self.where == MEMORY

    @property
    def value_bytes(self) -> int:
        """The most bytes one vector value takes in a request over this store's transport."""
        return GRPC_VALUE_BYTES if self.grpc_port > 0 and not self.in_process else REST_VALUE_BYTES

    @property
    def max_query_rows(self) -> int:
        # a visual query carries its rows once per multivector stage (pooled ones and the exact one): one request
        stages = self.layout.multivector_stages
        fits = (self.max_request_bytes - ENVELOPE_BYTES) // (stages * self.value_bytes * int(self._built()["dim"]))
        return max(1, min(self.row_limit, fits))

    def close(self) -> None:
        if self.client is None:
            return
        if self.in_process:
            HANDLES.release(self.where, lambda client: client.close())
        else:
            self.client.close()
        self.client = None

    # -- calls, failures and retries -------------------------------------------------------------------------

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

    def _write(self, fn, *args, **kwargs):
        return self._call(fn, self.collection, *args, retry=True, **kwargs)

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
                reason = first_line(exc.details()).rsplit("last error: ", 1)[-1]
                return f"cannot reach {server} over gRPC (port {self.grpc_port}): {reason}", True
            transient = code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED)
            return f"{server} answered gRPC {code.name}: {first_line(exc.details())}", transient
        if isinstance(exc, ResponseHandlingException):
            exc = exc.source
        if isinstance(exc, httpx.TimeoutException):
            return self._timed_out(server), True
        if isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError)):
            return f"cannot reach {server} ({type(exc).__name__}: {first_line(str(exc))})", True
        return None

    def _timed_out(self, server: str) -> str:
        return f"{server} did not answer within {self.timeout:g} s (TOKENDIRECT_QDRANT_TIMEOUT)"

    # -- collection ------------------------------------------------------------------------------------------

    def _exists(self) -> bool:
        return bool(self._call(self.client.collection_exists, self.collection))

    def collections(self) -> list[str]:
        return sorted(c.name for c in self._call(self.client.get_collections).collections)

    def _create(self, vectors: list[VectorSpec]) -> None:
        from qdrant_client import models as m

        dense = {v.name: _vector_params(v) for v in vectors if v.size is not None}
        sparse = {
            v.name: m.SparseVectorParams(modifier=m.Modifier.IDF if v.idf else None) for v in vectors if v.size is None
        }
        try:
            self._write(
                self.client.create_collection,
                vectors_config=dense,
                sparse_vectors_config=sparse,
                **self.distribution_asked.requested(),
            )
        except Exception:
            if self._exists():  # another writer (an ingest worker on another host) created it at the same moment
                raise CollectionExists(f"collection {self.collection!r} was created by another writer") from None
            raise

    def distribution(self) -> dict:
        params = self._call(self.client.get_collection, self.collection).config.params
        return {name: getattr(params, name, None) for name in FIELDS}

    def _create_index(self, name: str, kind: str) -> None:
        from qdrant_client import models as m

        if self.in_process:
            return  # qdrant-client's in-process engine has no payload indexes (it filters by scanning)
        self._write(self.client.create_payload_index, name, field_schema=m.PayloadSchemaType(kind), wait=True)

    def payload_indexes(self) -> dict[str, str]:
        if not self._exists():
            return {}
        schema = self._call(self.client.get_collection, self.collection).payload_schema
        return {name: str(getattr(s.data_type, "value", s.data_type)).lower() for name, s in schema.items()}

    def _sparse_names(self) -> set[str]:
        info = self._call(self.client.get_collection, self.collection)
        return set(info.config.params.sparse_vectors or {})

    # -- points ----------------------------------------------------------------------------------------------

    def _upsert(self, rows) -> None:
        from qdrant_client import models as m

        # One page per request at most: a page is megabytes, so batching saves nothing and could pass the limit.
        for pid, vectors, payload in rows:
            first, *rest = request_groups(vectors, payload, self.max_request_bytes, self.value_bytes)
            point = m.PointStruct(id=pid, vector={k: _vector(vectors[k]) for k in first}, payload=payload)
            self._write(self.client.upsert, [point], wait=True)
            for names in rest:
                self._update_vectors(pid, {k: vectors[k] for k in names})

    def _retrieve(self, ids, vectors) -> list[Raw]:
        recs = self._call(self.client.retrieve, self.collection, ids, with_payload=True, with_vectors=vectors or False)
        return [(r.id, r.payload, r.vector, None) for r in recs]

    def _scroll(self, filter, offset, limit, vectors):
        records, offset = self._call(
            self.client.scroll,
            self.collection,
            scroll_filter=_filter(filter),
            limit=limit,
            offset=offset,
            with_payload=True,
            with_vectors=vectors or False,
        )
        return [(r.id, r.payload, r.vector, None) for r in records], offset

    def _set_payload(self, point_id, payload) -> None:
        self._call(self.client.set_payload, self.collection, payload, points=[point_id], wait=True)

    def _update_vectors(self, point_id, vectors) -> None:
        from qdrant_client import models as m

        update = [m.PointVectors(id=point_id, vector={k: _vector(v) for k, v in vectors.items()})]
        self._write(self.client.update_vectors, update, wait=True)

    def _delete_vectors(self, point_id, names) -> None:
        self._write(self.client.delete_vectors, names, points=[point_id], wait=True)

    def _count(self, filter) -> int:
        return self._call(self.client.count, self.collection, count_filter=_filter(filter), exact=True).count

    def _facet(self, key) -> dict[str, int]:
        res = self._call(self.client.facet, self.collection, key=key, limit=1_000_000, exact=True)
        return {h.value: h.count for h in res.hits}

    def _delete(self, filter) -> None:
        self._write(self.client.delete, points_selector=_filter(filter), wait=True)

    def drop(self) -> None:
        if self._exists():
            self._call(self.client.delete_collection, self.collection, retry=True)

    def _query(self, requests: list[Stage]) -> list[list[Raw]]:
        from qdrant_client import models as m

        exclude = m.PayloadSelectorExclude(exclude=NOT_IN_HITS)
        signed = SIGN_CODED if self.in_process and self.layout.coded else frozenset()
        batch = [m.QueryRequest(with_payload=exclude, **_stage(s, signed)) for s in requests]
        results = self._call(self.client.query_batch_points, self.collection, batch)
        return [[(p.id, p.payload, None, p.score) for p in res.points] for res in results]


# -- translation -------------------------------------------------------------------------------------------------


def _vector_params(v: VectorSpec):
    from qdrant_client import models as m

    return m.VectorParams(
        size=v.size,
        distance=m.Distance.COSINE if v.cosine else m.Distance.DOT,
        multivector_config=m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM) if v.multi else None,
        datatype=m.Datatype.UINT8 if v.uint8 else m.Datatype.FLOAT16,
        hnsw_config=m.HnswConfigDiff(m=v.hnsw_m, ef_construct=v.ef_construct if v.hnsw_m else None),
        on_disk=not v.in_ram,
        quantization_config=_quantization(v),
    )


def _quantization(v: VectorSpec):
    from qdrant_client import models as m

    if v.int8:
        return m.ScalarQuantization(
            scalar=m.ScalarQuantizationConfig(type=m.ScalarType.INT8, quantile=0.99, always_ram=True)
        )
    return m.BinaryQuantization(binary=m.BinaryQuantizationConfig(always_ram=True)) if v.binary else None


def _vector(v: Any):
    from qdrant_client import models as m

    if isinstance(v, SparseVector):
        return m.SparseVector(indices=v.indices, values=v.values)
    if not isinstance(v, np.ndarray):
        return v
    # Shared floats for float16 (see core/tensors.py); uint8 codes as ints, whose JSON the REST size bound counts.
    return (shared_floats(v) if v.dtype == np.float16 else v).tolist()


def _filter(f: Filter):
    from qdrant_client import models as m

    must = []
    if f.has_vector:
        must.append(m.HasVectorCondition(has_vector=f.has_vector))
    if f.doc_id:
        must.append(m.FieldCondition(key="doc_id", match=m.MatchValue(value=f.doc_id)))
    must_not = [m.HasVectorCondition(has_vector=f.lacks_vector)] if f.lacks_vector else None
    return m.Filter(must=must, must_not=must_not)


def _stage(s: Stage, signed: frozenset[str] = frozenset()) -> dict:
    """The keyword arguments that models.QueryRequest and models.Prefetch share. Queries to the vectors `signed`
    names go as +-1 rows: the in-process mode scores stored values as they are, not their binary codes as a server
    does. The dot product of a +-1 row with a page's 0/255 sign codes is 255 x (the components whose signs agree,
    less the row's negative ones): for each row, a server's binary score up to a factor and a constant, so pages
    rank as on a server, which 0/255 queries would not give."""
    from qdrant_client import models as m

    if isinstance(s.query, Fusion):
        if s.query.method == "dbsf":
            query = m.FusionQuery(fusion=m.Fusion.DBSF)
        else:
            query = m.RrfQuery(rrf=m.Rrf(k=s.query.k, weights=list(s.query.weights) if s.query.weights else None))
        args: dict = {"query": query}
    else:
        vector = s.query.vector
        if s.query.using in signed:
            vector = (np.asarray(vector) > 0).astype(np.float32) * 2 - 1
        args = {"query": _vector(vector), "using": s.query.using}
    args.update(limit=s.limit, filter=_filter(s.filter))
    if s.hnsw_ef is not None or s.rescore is not None:
        quantization = None if s.rescore is None else m.QuantizationSearchParams(rescore=s.rescore)
        args["params"] = m.SearchParams(hnsw_ef=s.hnsw_ef, quantization=quantization)
    if s.prefetch:
        args["prefetch"] = [m.Prefetch(**_stage(p, signed)) for p in s.prefetch]
    return args


def _server_reason(content: bytes) -> str:
    """The server's own error text (Qdrant answers {"status": {"error": ...}}), when there is one."""
    try:
        error = json.loads(content)["status"]["error"]
    except (ValueError, KeyError, TypeError):
        return ""
    return f": {first_line(str(error))}"
