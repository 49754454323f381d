"""The page store: one Qdrant point per page, on the embedded qdrant-edge engine or a Qdrant server.

base.py       PageStore: what every engine does alike (record, model guard, storage form, derived vectors)
schema.py     the named vectors and the query language, as plain data
edge.py       the embedded engine's translation (qdrant-edge)
client.py     a Qdrant server's translation (qdrant-client; `:memory:` in-process)
cluster.py    how a server collection is spread over a cluster: shards, replicas, write consistency
layout.py     the fast path's derived vectors and prefetch depths
record.py     the collection record: the model a collection was built with
storage.py    tokens in float16, exactly recoverable
sharing.py    one handle per process; the embedded shard between processes
transfer.py   export and import through one portable file
disk.py       free space checked before the embedded engine writes; a data directory it cannot use
"""

from __future__ import annotations

import logging

from config import Settings, check_collection_name
from core.errors import ConfigError, ModelMismatchError, StoreError
from core.store.base import PageStore
from core.store.client import ClientStore
from core.store.cluster import Distribution
from core.store.disk import check_data_dir
from core.store.edge import EdgeStore
from core.store.layout import SearchLayout
from core.store.storage import PagePoint


def open_store(settings: Settings | None = None) -> PageStore:
    """The store the settings name: a server or in-process client when QDRANT_URL is set, else the shard."""
    s = settings or Settings()
    collection_name(s)
    check_data_dir(s.data_dir)  # a server's collections need it too: ingest keeps its lock and run log there
    layout = SearchLayout.from_settings(s)
    distribution = Distribution.from_settings(s)
    if s.qdrant_url:
        return ClientStore.connect(
            s.qdrant_url,
            s.qdrant_api_key or None,
            s.collection,
            s.qdrant_timeout,
            s.qdrant_grpc_port,
            layout,
            int(s.qdrant_max_request_mb * (1 << 20)),
            distribution=distribution,
        )
    if distribution.requested():
        logging.getLogger("tokendirect.store").warning(
            "%s apply to a Qdrant server only: the embedded store is one shard in this process and ignores them",
            ", ".join(f"TOKENDIRECT_{k.upper()}" for k in distribution.requested()),
        )
    return EdgeStore(s.shard_path(), s.collection, layout, s.store_wait)


def collection_name(settings: Settings) -> str:
    """The configured collection's name, checked on every engine (settings copied with another name skip the
    settings' own check): a name that would leave the data directory, or be no name at all, is refused."""
    try:
        return check_collection_name(settings.collection)
    except ValueError as exc:
        raise ConfigError(f"TOKENDIRECT_COLLECTION: {exc}") from None


__all__ = [
    "open_store",
    "collection_name",
    "PageStore",
    "EdgeStore",
    "ClientStore",
    "PagePoint",
    "SearchLayout",
    "StoreError",
    "ModelMismatchError",
]
