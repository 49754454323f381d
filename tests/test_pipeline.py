"""Ingest -> store -> search -> decode through the Python API, on both store engines."""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from types import SimpleNamespace

import pytest
from PIL import Image

from config import Settings
from core.errors import ModelMismatchError, PointNotFoundError, StoreError
from core.model import OcrModel
from core.pages import point_id, render_pages
from core.render import CANVAS_WIDTH, render_query
from core.store import open_store
from decode import Decoder
from ingest import Ingestor
from search import Searcher
from search.plan import search
from tests.helpers import BACKENDS, make_docs, on_engine, settings_for

PAYLOAD_FIELDS = {"doc_id", "source", "page", "pages", "width", "height", "n_tokens", "model", "ingested_at"}


@pytest.fixture(scope="module", params=BACKENDS)
def ingested(request, tmp_path_factory, tiny_model_dir):
    """The five test pages ingested once per engine for the tests that read them (the store is opened here and
    shared by every stage a test makes): each ingest encodes every page, the suite's dearest step. A collection of
    its own: the process's in-process client holds every `:memory:` collection."""
    root = tmp_path_factory.mktemp("ingested")
    settings = on_engine(settings_for(tiny_model_dir, root / "data", collection="ingested"), request.param)
    docs = make_docs(root / "docs")
    model = OcrModel.from_settings(settings)
    with open_store(settings) as store:
        ingestor = Ingestor(model, store, settings)
        report = ingestor.ingest([docs])
        yield SimpleNamespace(model=model, store=store, settings=settings, ingestor=ingestor, report=report, docs=docs)


def test_every_page_becomes_one_point_with_its_payload(ingested):
    ingestor, report, store = ingested.ingestor, ingested.report, ingested.store
    assert report.ok and report.pages_added == 5 and report.pages_skipped == 0
    assert len(report.documents_added) == 3
    assert store.count() == 5

    pdf = ingested.docs / "report.pdf"
    doc_id = hashlib.sha256(pdf.read_bytes()).hexdigest()
    assert store.documents()[doc_id] == 2
    for page in (1, 2):
        pid = str(uuid.uuid5(uuid.UUID("6f1c1f3e-8f0a-5d9c-9b7e-2a4d5c6b7e80"), f"{doc_id}:{page}"))
        assert pid == point_id(doc_id, page)
        point = store.get(pid, with_tokens=True)
        assert PAYLOAD_FIELDS <= set(point.payload)
        assert point.payload["page"] == page and point.payload["pages"] == 2
        assert point.payload["source"] == str(pdf.resolve())
        assert point.payload["model"] == ingestor.model.name
        assert point.tokens.shape == (point.payload["n_tokens"], ingestor.model.dim)
        # PDFs are rasterized so the long side is the processor's 1024 px global view.
        assert max(point.payload["width"], point.payload["height"]) == 1024


def test_reingesting_changes_nothing(ingested):
    store = ingested.store
    before = {pid: store.get(pid, with_tokens=False).payload for pid in _all_ids(store)}
    again = ingested.ingestor.ingest([ingested.docs])
    assert again.pages_added == 0 and again.pages_skipped == 5 and again.ok
    assert len(again.documents_skipped) == 3
    assert store.count() == 5
    after = {pid: store.get(pid, with_tokens=False).payload for pid in before}
    assert after == before  # not even ingested_at moved


def test_a_page_image_used_as_query_finds_that_page_first(ingested):
    searcher = Searcher(ingested.model, ingested.store, ingested.settings)
    for page in render_pages(ingested.docs / "report.pdf", "query"):
        hits = searcher.search_image(page.image, top_k=5)
        assert len(hits) == 5
        assert hits[0].source.endswith("report.pdf") and hits[0].page == page.page
        assert hits[0].score >= hits[1].score


def test_text_search_ranks_pages_without_blank_canvas_tokens(ingested):
    searcher = Searcher(ingested.model, ingested.store, ingested.settings)
    hits = searcher.search("Invoice total due", top_k=3)
    assert len(hits) == 3
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # a one-line query is a single 1024 px view, 257 tokens, most of them blank canvas: those are left out
    assert len({h.query_tokens for h in hits}) == 1 and 0 < hits[0].query_tokens < 257


def test_text_search_filtered_by_document(ingested):
    searcher = Searcher(ingested.model, ingested.store, ingested.settings)
    invoice_id = hashlib.sha256((ingested.docs / "invoice.png").read_bytes()).hexdigest()
    only = searcher.search("anything", top_k=5, doc_id=invoice_id)
    assert [h.doc_id for h in only] == [invoice_id]


def test_a_hit_decodes_and_unknown_points_and_modes_are_refused(ingested):
    hit = Searcher(ingested.model, ingested.store, ingested.settings).search("Invoice total due", top_k=1)[0]
    decoder = Decoder(ingested.model, ingested.store, ingested.settings)
    assert isinstance(decoder.decode(hit.point_id, mode="markdown"), str)
    with pytest.raises(PointNotFoundError, match="00000000-0000-0000-0000-000000000000"):
        decoder.decode("00000000-0000-0000-0000-000000000000")
    with pytest.raises(ValueError, match="unknown mode"):
        decoder.decode(hit.point_id, mode="poem")


@pytest.mark.parametrize("stage", ["search", "decode", "ingest"])
def test_another_model_is_refused_naming_both(ingested, other_model_dir, stage):
    settings = ingested.settings
    other = OcrModel.from_settings(settings.model_copy(update={"model": str(other_model_dir)}))
    assert other.dim == ingested.model.dim  # same shapes: only the record of the revision tells them apart
    attempts = {
        "search": lambda: Searcher(other, ingested.store, settings),
        "decode": lambda: Decoder(other, ingested.store, settings),
        "ingest": lambda: Ingestor(other, ingested.store, settings).ingest([ingested.docs / "invoice.png"]),
    }
    with pytest.raises(ModelMismatchError) as err:
        attempts[stage]()
    message = str(err.value)
    assert str(other_model_dir) in message and ingested.model.name in message
    assert ingested.model.revision in message and other.revision in message
    assert ingested.store.count() == 5


def test_search_before_any_ingest_says_so(settings):
    with pytest.raises(StoreError, match="ingest documents first"):
        Searcher.from_settings(settings)


def test_query_rendering_is_wrapped_and_tight():
    short = render_query("total due")
    assert short.width == CANVAS_WIDTH and short.height < 60
    long = render_query(" ".join(["quarterly revenue by region"] * 30))
    assert long.width == CANVAS_WIDTH and long.height > 3 * short.height  # about 7 lines
    # ink reaches the last line: nothing was cut off
    assert long.convert("L").crop((0, long.height - 30, CANVAS_WIDTH, long.height)).getextrema()[0] < 128
    with pytest.raises(ValueError):
        render_query("   ")


def _all_ids(store):
    return [
        p
        for doc in store.documents()
        for p in (point_id(doc, k) for k in range(1, 3))
        if store.get(p, with_tokens=False)
    ]


def test_settings_read_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENDIRECT_COLLECTION", "books")
    monkeypatch.setenv("TOKENDIRECT_TOP_K", "9")
    monkeypatch.setenv("TOKENDIRECT_DATA_DIR", str(tmp_path))
    s = Settings()
    assert (s.collection, s.top_k, s.data_dir, s.model) == ("books", 9, tmp_path, "deepseek-community/DeepSeek-OCR-2")


@contextlib.contextmanager
def shallow_store(settings, docs):
    """The five pages, searched with a prefetch of 3: the coarse and fine pooled stages must keep the right ones."""
    s = settings.model_copy(update={"prefetch_dense": 3, "prefetch_at": 0, "prefetch_pooled": 3, "exact_below": 0})
    model = OcrModel.from_settings(s)
    with open_store(s) as store:
        Ingestor(model, store, s).ingest([docs])
        yield SimpleNamespace(model=model, store=store, settings=s)


@pytest.fixture
def shallow(backend_settings, docs):
    with shallow_store(backend_settings, docs) as ready:
        yield ready


@pytest.fixture
def shallow_edge(settings, docs):
    """The same on the embedded engine alone: the searcher's own work is the same on every engine."""
    with shallow_store(settings, docs) as ready:
        yield ready


def test_fast_path_agrees_with_exact(shallow):
    store = shallow.store
    for page in [p for batch in store.scroll(with_tokens=True) for p in batch]:
        query = page.tokens  # a stored page as the query: its own tokens
        fast, exact = search(store, query, 3), search(store, query, 3, exact=True)
        assert fast[0].point_id == exact[0].point_id == page.point_id
        assert fast[0].score == pytest.approx(exact[0].score)
    assert len(search(store, query, 5, exact=True)) == 5  # exact ranks every page, not what a prefetch kept


def test_blank_query_tokens_are_left_out_and_counted(shallow_edge):
    from core.pooling import keep_mask
    from core.tensors import to_numpy

    model, store, s = shallow_edge.model, shallow_edge.store, shallow_edge.settings
    searcher = Searcher(model, store, s)
    text_query = render_query("Annual report revenue")
    blank_canvas = Image.new("RGB", text_query.size, "white")
    tokens, blank = (to_numpy(t) for t in model.encode_pages([text_query, blank_canvas]))
    kept = int(keep_mask(tokens, blank, s.blank_similarity).sum())
    assert 0 < kept < 257 and {h.query_tokens for h in searcher.search_image(text_query, top_k=5)} == {kept}
    every = Searcher(model, store, s.model_copy(update={"blank_similarity": 1.0}))
    assert {h.query_tokens for h in every.search_image(text_query, top_k=5)} == {257}
    assert searcher.search_image(blank_canvas, top_k=1)[0].query_tokens == 257  # never none: all kept
