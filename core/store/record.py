"""The collection record: which model built the collection and how, kept as a point of the collection itself, so a
server shared by several machines refuses a mismatched model as the embedded store does."""

from __future__ import annotations

import uuid

from core.clock import utc_now
from core.errors import ModelMismatchError
from core.model import ModelIdentity
from core.store.layout import SearchLayout

META_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "token-direct/collection-record"))
# The codebook of the fast path's first stage (core/codebook.py), once learned: a point of its own, as its payload
# (1.4 MB at K = 2048) would weigh on every read of the record. Like the record, it has no `tokens`: not a page.
CODEBOOK_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "token-direct/codebook"))
OWN_POINTS = (META_ID, CODEBOOK_ID)
# 2: the collection has `pooled` and `dense` (schema 1 collections are searched exactly).
# 3: the tokens are kept once, as unit rows in chunks that a Qdrant server accepts (schema.py); a collection of an
#    older schema is read and searched, and takes new pages once exported and imported into a new collection.
SCHEMA_VERSION = 3
FAST_SCHEMA = 2
FUSION = "fusion"  # hybrid search's weights, once calibrated for the collection (search/fusion.py)


def new_record(identity: ModelIdentity, layout: SearchLayout, chunks: int) -> dict:
    return {
        "kind": "collection",
        "schema": SCHEMA_VERSION,
        "model": identity.model,
        "revision": identity.revision,
        "dim": identity.dim,
        "max_tokens": identity.max_tokens,
        "chunks": chunks,
        "layout": layout.built(),
        "created_at": utc_now(),
    }


def built_with(record: dict) -> ModelIdentity:
    return ModelIdentity(record["model"], record["revision"], int(record["dim"]), int(record.get("max_tokens", 0)))


def schema_of(record: dict) -> int:
    return int(record.get("schema", 1))


def has_fast_path(record: dict) -> bool:
    return schema_of(record) >= FAST_SCHEMA and "layout" in record


def check_model(record: dict, identity: ModelIdentity, collection: str) -> None:
    """Refuse a model other than the one the collection was built with."""
    built = built_with(record)
    if not built.same_weights(identity):
        raise ModelMismatchError(
            f"collection {collection!r} was built with {describe(built)}; "
            f"the configured model is {describe(identity)}. Tokens from one checkpoint are never searched "
            "or decoded with another: set TOKENDIRECT_MODEL back, or use another TOKENDIRECT_COLLECTION."
        )


def describe(identity: ModelIdentity) -> str:
    return f"model {identity.model!r} (revision {identity.revision}, dimension {identity.dim})"
