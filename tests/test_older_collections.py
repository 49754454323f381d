"""A collection made before the tokens were kept once in chunks (schema 2: `tokens` raw in float16 with a patch,
`unit` ranked) is still searched, decoded and exported on both engines, and refuses new pages with the way out."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import StoreError
from core.model import ModelIdentity
from core.pages import point_id
from core.store import PagePoint, open_store
from core.store.layout import DENSE, POOLED
from core.store.record import META_ID
from core.store.schema import BM25, LEGACY_UNIT, TOKENS, VectorSpec
from core.store.storage import LEGACY_PATCH_FIELD, to_storage
from core.store.transfer import ExportFile, export_collection
from core.tensors import unit_length
from search.plan import search
from tests.helpers import bfloat16_tokens

DIM = 32
IDENTITY = ModelIdentity("test/older", "rev", DIM)


def schema_2_collection(store, pages: list[PagePoint]) -> None:
    """Write the layout and the points as the previous version did, through the engine's own operations."""
    layout = store.layout.adopt({})  # a dense first stage, no fine pooled vectors
    store._create(
        [
            VectorSpec(TOKENS, DIM, multi=True),
            VectorSpec(LEGACY_UNIT, DIM, multi=True),
            VectorSpec(POOLED, DIM, multi=True, int8=True),
            VectorSpec(DENSE, DIM, cosine=True, in_ram=True, hnsw_m=16),
            VectorSpec(BM25, None, idf=True),
        ]
    )
    record = {
        "kind": "collection",
        "schema": 2,
        "model": IDENTITY.model,
        "revision": IDENTITY.revision,
        "dim": DIM,
        "layout": {k: v for k, v in layout.built().items() if k != "fine_pool_size"},
        "created_at": "2026-01-01T00:00:00+00:00",
    }
    rows = [(META_ID, {}, record)]
    for p in pages:
        form = to_storage(p.tokens)
        _, derived = layout.derive(unit_length(p.tokens), len(p.tokens))
        vectors = {TOKENS: form.vectors, LEGACY_UNIT: unit_length(p.tokens).astype(np.float16), **derived}
        rows.append((p.point_id, vectors, {**p.payload, LEGACY_PATCH_FIELD: form.patch}))
    store._upsert(rows)


@pytest.fixture
def older(backend_settings):
    rng = np.random.default_rng(5)
    pages = [
        PagePoint(point_id("old", k), {"doc_id": "old", "source": "/old.pdf", "page": k}, bfloat16_tokens(rng, 12, DIM))
        for k in (1, 2, 3)
    ]
    pages[0].tokens[0, :2] = [1e-7, 70144.0]  # values float16 cannot hold: the old patch brings them back
    settings = backend_settings.model_copy(update={"collection": "older"})
    with open_store(settings) as writer:
        schema_2_collection(writer, pages)
        with open_store(settings) as store:  # a fresh handle reads the collection as it finds it
            yield store, pages
        writer.drop()


def test_it_is_bound_searched_and_read_back_exactly(older):
    store, pages = older
    store.bind(IDENTITY, create=False)
    for page in pages:
        assert search(store, page.tokens, 1)[0].point_id == page.point_id
        assert search(store, page.tokens, 1, exact=True)[0].point_id == page.point_id
        back = store.get(page.point_id)
        assert np.array_equal(back.tokens.view(np.uint32), page.tokens.view(np.uint32))


def test_it_exports_every_page_exactly(older, tmp_path):
    store, pages = older
    export_collection(store, tmp_path / "old.zip")
    with ExportFile(tmp_path / "old.zip") as file:
        exported = {p.point_id: p.tokens for batch in file.pages() for p in batch}
    assert all(np.array_equal(exported[p.point_id].view(np.uint32), p.tokens.view(np.uint32)) for p in pages)


def test_it_refuses_new_pages_with_the_way_out(older):
    store, pages = older
    store.bind(IDENTITY, create=False)
    with pytest.raises(StoreError, match="older storage layout .* export it and import it"):
        store.upsert(pages[:1])
