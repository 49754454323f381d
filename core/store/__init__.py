"""The page store: one Qdrant point per page, on the embedded qdrant-edge engine or a Qdrant server.

base.py       PageStore: what every engine does alike (record, model guard, storage form, derived vectors)
schema.py     the named vectors and the query language, as plain data
edge.py       the embedded engine's translation (qdrant-edge)
client.py     a Qdrant server's translation (qdrant-client; `:memory:` in-process)
layout.py     the fast path's derived vectors and prefetch depths
record.py     the collection record: the model a collection was built with
storage.py    tokens in float16, exactly recoverable
sharing.py    one handle per process; the embedded shard between processes
transfer.py   export and import through one portable file
"""

from __future__ import annotations

from config import Settings
from core.errors import ModelMismatchError, StoreError
from core.store.base import PageStore
from core.store.client import ClientStore
from core.store.edge import EdgeStore
from core.store.layout import SearchLayout
from core.store.storage import PagePoint


def open_store(settings: Settings | None = None) -> PageStore:
    """The store the settings name: a server or in-process client when QDRANT_URL is set, else the shard."""
    s = settings or Settings()
    layout = SearchLayout.from_settings(s)
    if s.qdrant_url:
        return ClientStore.connect(
            s.qdrant_url,
            s.qdrant_api_key or None,
            s.collection,
            s.qdrant_timeout,
            s.qdrant_grpc_port,
            layout,
            int(s.qdrant_max_request_mb * (1 << 20)),
        )
    return EdgeStore(s.shard_path(), s.collection, layout, s.store_wait)


__all__ = [
    "open_store",
    "PageStore",
    "EdgeStore",
    "ClientStore",
    "PagePoint",
    "SearchLayout",
    "StoreError",
    "ModelMismatchError",
]
