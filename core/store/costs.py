"""What a page costs on a Qdrant server: every request the store hands qdrant-client, measured with qdrant-client's
own serializers (REST JSON and gRPC protobuf) against a server's limits, the rows of each named vector, and the disk
a page takes in the embedded engine. `tokendirect bench page` prints it; the tests hold every write to it.

`RecordingClient` wraps a real client (in-process by default): every call still runs.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import grpc as g
from qdrant_client import models as m
from qdrant_client.conversions.conversion import RestToGrpc
from qdrant_client.http.api.points_api import jsonable_encoder

from core.model import ModelIdentity
from core.store.client import ClientStore
from core.store.edge import EdgeStore
from core.store.layout import SearchLayout
from core.store.schema import MULTIVECTOR_VALUES
from core.store.storage import ROWS_FIELD, PagePoint
from core.tensors import bfloat16_values

REQUEST_BYTES = 32 << 20  # a server's default request size limit (service.max_request_size_mb)


@dataclass
class Request:
    call: str
    rest_bytes: int
    grpc_bytes: int
    multivectors: list[tuple[str, int, int]] = field(default_factory=list)  # (name, rows, dimension)

    def largest(self) -> int:
        """The most values in one multivector of the request."""
        return max((rows * dim for _, rows, dim in self.multivectors), default=0)


class RecordingClient:
    def __init__(self, client: QdrantClient | None = None):
        self.client = client or QdrantClient(location=":memory:")
        self.requests: list[Request] = []

    def __getattr__(self, name):
        return getattr(self.client, name)

    def upsert(self, collection_name, points, **kwargs):
        grpc = g.UpsertPoints(
            collection_name=collection_name, points=[RestToGrpc.convert_point_struct(p) for p in points]
        )
        self._record("upsert", m.PointsList(points=points), grpc, [p.vector for p in points])
        return self.client.upsert(collection_name, points, **kwargs)

    def create_payload_index(self, *args, **kwargs):
        # the in-process engine warns that it keeps no payload indexes; a server would build them
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return self.client.create_payload_index(*args, **kwargs)

    def update_vectors(self, collection_name, points, **kwargs):
        converted = [RestToGrpc.convert_point_vectors(p) for p in points]
        grpc = g.UpdatePointVectors(collection_name=collection_name, points=converted)
        self._record("update_vectors", m.UpdateVectors(points=points), grpc, [p.vector for p in points])
        return self.client.update_vectors(collection_name, points, **kwargs)

    def query_batch_points(self, collection_name, requests, **kwargs):
        converted = [RestToGrpc.convert_query_request(r, collection_name) for r in requests]
        grpc = g.QueryBatchPoints(collection_name=collection_name, query_points=converted)
        vectors = [named for r in requests for named in _queries(r)]
        self._record("query", m.QueryRequestBatch(searches=requests), grpc, vectors)
        return self.client.query_batch_points(collection_name, requests, **kwargs)

    def _record(self, call, rest, grpc, vectors) -> None:
        request = Request(call, len(jsonable_encoder(rest)), grpc.ByteSize())
        for named in vectors:
            for name, v in (named or {}).items():
                if isinstance(v, list) and v and isinstance(v[0], list):
                    request.multivectors.append((name, len(v), len(v[0])))
        self.requests.append(request)

    def over_limits(self, transport: str) -> list[Request]:
        """The requests a server would refuse over `transport` ("rest" or "grpc")."""
        size = "rest_bytes" if transport == "rest" else "grpc_bytes"
        return [r for r in self.requests if r.largest() >= MULTIVECTOR_VALUES or getattr(r, size) > REQUEST_BYTES]


def _queries(request) -> list[dict]:
    """Each query vector of a request and its prefetches, as {using: vector}."""
    found = []
    if isinstance(request.query, list):
        found.append({request.using or "": request.query})
    for p in request.prefetch or []:
        found.extend(_queries(p))
    return found


def page_costs(dim: int = 1280, tokens: int = 1121, pages: int = 4, layout: SearchLayout | None = None) -> dict:
    """Store `pages` synthetic pages of `tokens` x `dim` bfloat16 values (the encoder's form) through qdrant-client
    (REST-bound and gRPC-bound) and the embedded engine; report per page what each request weighs, the rows of
    each named vector, the payload the store adds, and the disk the embedded engine uses."""
    layout = layout or SearchLayout.from_settings()
    rng = np.random.default_rng([dim, tokens])
    points = [
        PagePoint(
            f"00000000-0000-0000-0000-{k:012d}",
            {"doc_id": "page-costs", "page": k},
            bfloat16_values(rng.standard_normal((tokens, dim), dtype=np.float32)),
        )
        for k in range(1, pages + 1)
    ]
    identity = ModelIdentity("page-costs", "synthetic", dim, max_tokens=tokens)
    out: dict = {"dim": dim, "tokens": tokens, "pages": pages, "token_bytes": tokens * dim * 2}
    for transport, where, port in (("rest", ":memory:", 0), ("grpc", "http://recorded:6333", 6334)):
        client = RecordingClient()
        store = ClientStore(client, "costs", where, 30, port, layout)
        store.bind(identity)
        client.requests.clear()
        store.upsert(points)
        writes = client.requests
        size = f"{transport}_bytes"
        out[transport] = {
            "requests_per_page": len(writes) / pages,
            "bytes_per_page": sum(getattr(r, size) for r in writes) / pages,
            "largest_request_bytes": max(getattr(r, size) for r in writes),
            "over_limits": len(client.over_limits(transport)),
        }
        if transport == "rest":
            out["rows"] = {name: rows for name, rows, _ in writes[0].multivectors + writes[-1].multivectors}
            stored = store.retrieve([points[0].point_id])[0]
            out["exact"] = bool(np.array_equal(stored.tokens.view(np.uint32), points[0].tokens.view(np.uint32)))
            payload = client.client.retrieve("costs", [points[0].point_id], with_payload=True)[0].payload
            out["store_payload_bytes"] = len(str(payload[ROWS_FIELD]))
            out["patched_values"] = len(payload[ROWS_FIELD].get("patch", {}).get("i", []))
        store.close()
    with tempfile.TemporaryDirectory(prefix="tokendirect-page-") as tmp:
        shard = Path(tmp) / "costs"
        store = EdgeStore(shard, "costs", layout)
        store.bind(identity)
        store.close()
        empty = disk_bytes(shard / "segments")
        for start in range(0, pages, 4):
            store.upsert(points[start : start + 4])
        store.optimize()
        store.close()
        disk = disk_bytes(shard / "segments") - empty
        out["wal_bytes"] = disk_bytes(shard / "wal")
    # The write-ahead log holds recent writes until they are flushed into segments, then its files are reused:
    # a bounded cost per shard, not per page, so it is reported apart.
    out["disk_bytes_per_page"] = disk / pages
    out["disk_ratio"] = disk / pages / out["token_bytes"]
    return out


def disk_bytes(root: Path) -> int:
    """Bytes a folder's files take on disk (preallocated but never written blocks count nothing)."""
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            st = os.stat(Path(folder) / name)
            total += min(st.st_size, st.st_blocks * 512)
    return total
