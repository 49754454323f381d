"""The published model's page shape, end to end: 1280-dimension tokens and 1121-token pages (six tiles).

A Qdrant server refuses a multivector of 1,048,576 values or more and, by default, a request over 32 MiB; neither
engine that runs here checks either, so every request the store hands qdrant-client is recorded (tests/helpers.py)
and held to them. The pipeline runs with a test model of the published token dimension on both engines.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from cli.sample import write_text_pdf
from core.model import ModelIdentity, OcrModel
from core.pages import file_digest, point_id
from core.pooling import SKETCH_DIM
from core.store import ClientStore, PagePoint, SearchLayout, open_store
from core.store.costs import RecordingClient
from core.store.layout import CENTROIDS
from core.store.schema import MULTIVECTOR_VALUES, TOKENS, Filter, rows_per_vector, token_chunks
from core.store.transfer import export_collection, import_collection
from core.testmodel import make_test_model
from decode import Decoder
from ingest import Ingestor
from search import Searcher
from search.bench import stage_chain
from search.plan import SEARCH_MODES, search
from tests.helpers import bfloat16_tokens, page_image

PUBLISHED_DIM = 1280
PUBLISHED_TOKENS = 1121  # 256 (global view) + 6 x 144 (tiles) + 1 (separator)


def recording_store(transport: str, dim: int, client: RecordingClient | None = None, **layout) -> ClientStore:
    """A store on a real in-process client that records what it is handed. "rest" is the in-process mode (held to
    the JSON bound); "grpc" is what a server with a gRPC port gets."""
    where, port = (":memory:", 0) if transport == "rest" else ("http://recorded:6333", 6334)
    # the fast path's queries too, however few pages
    layout = replace(SearchLayout.from_settings(), exact_below=0, **layout)
    store = ClientStore(client or RecordingClient(), f"shape-{uuid.uuid4().hex[:8]}", where, 30, port, layout)
    store.bind(ModelIdentity("test/shape", "rev", dim, max_tokens=PUBLISHED_TOKENS))
    return store


def synthetic_pages(dim: int, rows=(PUBLISHED_TOKENS, 257)) -> list[PagePoint]:
    rng = np.random.default_rng(dim)
    return [
        PagePoint(
            point_id("shape", k), {"doc_id": "shape", "source": "/shape.pdf", "page": k}, bfloat16_tokens(rng, n, dim)
        )
        for k, n in enumerate(rows, 1)
    ]


# -- the server's limits, whatever the dimension ------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["rest", "grpc"])
@pytest.mark.parametrize("dim", [PUBLISHED_DIM, 4096])
def test_no_write_or_query_breaks_a_servers_limits(dim, transport):
    store = recording_store(transport, dim)
    pages = synthetic_pages(dim)
    store.upsert(pages)
    back = {p.point_id: p.tokens for p in store.retrieve([p.point_id for p in pages])}
    for page in pages:  # split across as many multivectors as it takes, and put together bit for bit
        assert np.array_equal(back[page.point_id].view(np.uint32), page.tokens.view(np.uint32))
    query = pages[0].tokens[:700]  # more rows than a 4096-dimension multivector may hold
    assert search(store, query, 2)[0].point_id == pages[0].point_id
    search(store, query, 2, exact=True)

    client = store.client
    assert not client.over_limits(transport), [vars(r) for r in client.over_limits(transport)]
    rows = [rows for r in client.requests for _, rows, _ in r.multivectors]
    assert max(rows) <= rows_per_vector(dim) == (MULTIVECTOR_VALUES - 1) // dim  # 819 at 1280, 255 at 4096
    writes = [r for r in client.requests if r.call != "query"]
    assert len(writes) > len(pages)  # the records written once, then each page in more than one request


def test_the_codebook_and_the_pages_codebook_vectors_keep_to_a_servers_limits():
    """A codebook of twice the default size (4096 centroids: learned from 16 pages' 256-token samples; its width is
    the sketches', whatever the tokens') is written as a point of the collection, and every page stored before it gets
    its codebook vector. Each request is measured as REST and as gRPC would carry it."""
    store = recording_store("rest", PUBLISHED_DIM, codebook=4096, codebook_pages=16, prefetch_dim=0, prefetch_pooled=4)
    pages = synthetic_pages(PUBLISHED_DIM, rows=(257,) * 15 + (PUBLISHED_TOKENS,) * 2)
    store.upsert(pages[:12])
    assert store.centroids(ready=False) is None
    store.upsert(pages[12:])
    assert store.centroids().shape == (4096, SKETCH_DIM)
    assert store._count(Filter(TOKENS, lacks_vector=CENTROIDS)) == 0
    client = store.client
    for transport in ("rest", "grpc"):
        assert not client.over_limits(transport), [vars(r) for r in client.over_limits(transport)]
    # the codebook went in one request of its own, a point without vectors: float16 values as base64 payload
    (written,) = [r for r in client.requests if r.call == "upsert" and not r.multivectors and r.grpc_bytes > 1 << 20]
    assert 4096 * 256 * 2 < written.grpc_bytes < written.rest_bytes < 4 << 20
    assert "update_vectors" in {r.call for r in client.requests}  # the pages written before it got their vectors
    query = pages[3].tokens[:40]
    assert stage_chain(store, query)[0].query.using == CENTROIDS
    assert search(store, query, 2)[0].point_id == pages[3].point_id


def test_the_recorder_catches_a_multivector_a_server_refuses():
    """Negative control: the same page as one multivector, handed straight to the client, is flagged."""
    from qdrant_client import models as m

    client = RecordingClient()
    client.create_collection(
        "raw",
        vectors_config={
            "t": m.VectorParams(
                size=PUBLISHED_DIM,
                distance=m.Distance.DOT,
                multivector_config=m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM),
            )
        },
    )
    tokens = synthetic_pages(PUBLISHED_DIM, rows=(PUBLISHED_TOKENS,))[0].tokens
    client.upsert("raw", [m.PointStruct(id=1, vector={"t": tokens.tolist()})])
    assert client.over_limits("grpc") == client.requests and client.requests[0].largest() == 1121 * 1280


# -- the pipeline at the published shape, on both engines ----------------------------------------------------------


@pytest.fixture(scope="module")
def wide_model_dir(tmp_path_factory):
    return make_test_model(tmp_path_factory.mktemp("wide-model"), hidden_size=PUBLISHED_DIM)


@pytest.fixture(scope="module")
def wide_docs(tmp_path_factory):
    """A born-digital two-page PDF (a text layer) and a scanned page; PDF pages are rasterized to 1024 px and cut
    into six tiles, and the 1200 x 1600 scan too."""
    folder = tmp_path_factory.mktemp("wide-docs")
    write_text_pdf(
        folder / "manual.pdf",
        [["Pump manual", "Bleed the valve before service."], ["Warranty", "Two years from the date of purchase."]],
    )
    page_image(["Delivery note", "Pallet scanner, 2 units"], size=(1200, 1600)).save(folder / "note.png")
    return folder


@pytest.fixture(scope="module", params=["edge", "memory"])
def wide(request, wide_model_dir, wide_docs, tmp_path_factory):
    """The documents ingested once per engine; the tests only read."""
    from config import Settings

    s = Settings(
        model=str(wide_model_dir),
        data_dir=tmp_path_factory.mktemp("wide-data"),
        device="cpu",
        batch_size=2,
        max_new_tokens=12,
        qdrant_url=None if request.param == "edge" else ":memory:",
        qdrant_api_key=None,
    )
    model = OcrModel.from_settings(s)
    with open_store(s) as store:
        report = Ingestor(model, store, s).ingest([wide_docs])
        yield model, store, s, report


def test_tiled_pages_are_stored_whole_in_chunks_the_server_accepts(wide):
    model, store, _, report = wide
    assert model.dim == PUBLISHED_DIM and model.max_tokens == PUBLISHED_TOKENS
    assert report.ok and report.pages_added == 3
    pages = [p for batch in store.scroll(with_tokens=True) for p in batch]
    assert {p.payload["n_tokens"] for p in pages} == {PUBLISHED_TOKENS}
    assert all(p.tokens.shape == (PUBLISHED_TOKENS, PUBLISHED_DIM) for p in pages)
    raw = store._retrieve([pages[0].point_id], token_chunks(2))[0][2]
    assert [len(raw[name]) for name in token_chunks(2)] == [819, PUBLISHED_TOKENS - 819]


@pytest.mark.parametrize("mode", SEARCH_MODES)
def test_every_search_mode_runs(wide, mode):
    model, store, s, _ = wide
    hits = Searcher(model, store, s).search("Warranty two years", top_k=3, mode=mode)
    assert hits and all(h.page >= 1 for h in hits)
    if mode == "text":
        assert (hits[0].source.endswith("manual.pdf"), hits[0].page) == (True, 2)


def test_decoding_from_stored_tokens_is_decoding_the_pixels(wide, wide_docs):
    import torch

    model, store, s, _ = wide
    image = Image.open(wide_docs / "note.png")
    encoded = model.encode_pages([image])[0]
    stored = point_id(file_digest(wide_docs / "note.png"), 1)
    decoder = Decoder(model, store, s)
    assert torch.equal(decoder.tokens(stored), encoded)  # bit for bit, across the chunks
    assert decoder.decode(stored) == decoder.decode_image(image)


def test_export_from_the_embedded_engine_imports_into_a_server_within_its_limits(wide, tmp_path):
    _, store, s, _ = wide
    if s.qdrant_url:
        pytest.skip("export runs from the embedded engine here")
    file = tmp_path / "pages.zip"
    export_collection(store, file)
    client = RecordingClient()
    target = ClientStore(client, "imported", ":memory:", 30, 0, SearchLayout.from_settings(s))
    report = import_collection(target, file)
    assert report.ok and report.verified == report.points == 3
    assert not client.over_limits("rest")
    assert TOKENS in {name for r in client.requests for name, _, _ in r.multivectors}
