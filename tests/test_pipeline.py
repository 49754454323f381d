"""Ingest -> store -> search -> decode through the Python API, on both store engines."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from PIL import Image

from config import Settings
from core.model import OcrModel
from core.pages import point_id, render_pages
from core.render import CANVAS_WIDTH, render_query
from core.store import ModelMismatchError, StoreError, open_store
from decode import Decoder, PointNotFoundError
from ingest import Ingestor
from search import Searcher

PAYLOAD_FIELDS = {"doc_id", "source", "page", "pages", "width", "height", "n_tokens", "model", "ingested_at"}


@pytest.fixture
def ingested(backend_settings, docs):
    ingestor = Ingestor.from_settings(backend_settings)
    report = ingestor.ingest([docs])
    yield ingestor, report
    ingestor.store.close()


def test_every_page_becomes_one_point_with_its_payload(ingested, docs):
    ingestor, report = ingested
    assert report.ok and report.pages_added == 5 and report.pages_skipped == 0
    assert len(report.documents_added) == 3
    store = ingestor.store
    assert store.count() == 5

    pdf = docs / "report.pdf"
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


def test_reingesting_changes_nothing(ingested, docs):
    ingestor, _ = ingested
    before = {pid: ingestor.store.get(pid, with_tokens=False).payload for pid in _all_ids(ingestor, docs)}
    again = ingestor.ingest([docs])
    assert again.pages_added == 0 and again.pages_skipped == 5 and again.ok
    assert len(again.documents_skipped) == 3
    assert ingestor.store.count() == 5
    after = {pid: ingestor.store.get(pid, with_tokens=False).payload for pid in before}
    assert after == before  # not even ingested_at moved


def test_a_page_image_used_as_query_finds_that_page_first(ingested, docs):
    ingestor, _ = ingested
    searcher = Searcher(ingestor.model, ingestor.store, ingestor.settings)
    for page in render_pages(docs / "report.pdf", "query"):
        hits = searcher.search_image(page.image, top_k=5)
        assert len(hits) == 5
        assert hits[0].source.endswith("report.pdf") and hits[0].page == page.page
        assert hits[0].score >= hits[1].score


def test_text_search_filters_and_decodes(ingested, docs):
    ingestor, _ = ingested
    searcher = Searcher(ingestor.model, ingestor.store, ingestor.settings)
    hits = searcher.search("Invoice total due", top_k=3)
    assert len(hits) == 3
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # a one-line query is a single 1024 px view, 257 tokens, most of them blank canvas: those are left out
    assert len({h.query_tokens for h in hits}) == 1 and 0 < hits[0].query_tokens < 257

    invoice_id = hashlib.sha256((docs / "invoice.png").read_bytes()).hexdigest()
    only = searcher.search("anything", top_k=5, doc_id=invoice_id)
    assert [h.doc_id for h in only] == [invoice_id]

    decoder = Decoder(ingestor.model, ingestor.store, ingestor.settings)
    assert isinstance(decoder.decode(hits[0].point_id, mode="markdown"), str)
    with pytest.raises(PointNotFoundError, match="00000000-0000-0000-0000-000000000000"):
        decoder.decode("00000000-0000-0000-0000-000000000000")
    with pytest.raises(ValueError, match="unknown mode"):
        decoder.decode(hits[0].point_id, mode="poem")


def test_another_model_is_refused_naming_both(ingested, other_model_dir, backend_settings, docs):
    ingestor, _ = ingested
    other = OcrModel.from_settings(backend_settings.model_copy(update={"model": str(other_model_dir)}))
    assert other.dim == ingestor.model.dim  # same shapes: only the record of the revision tells them apart
    attempts = [
        lambda: Searcher(other, ingestor.store, backend_settings),
        lambda: Decoder(other, ingestor.store, backend_settings),
        lambda: Ingestor(other, ingestor.store, backend_settings).ingest([docs / "invoice.png"]),
    ]
    for attempt in attempts:
        with pytest.raises(ModelMismatchError) as err:
            attempt()
        message = str(err.value)
        assert str(other_model_dir) in message and ingestor.model.name in message
        assert ingestor.model.revision in message and other.revision in message
    assert ingestor.store.count() == 5


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


def _all_ids(ingestor, docs):
    return [p for doc in ingestor.store.documents() for p in (point_id(doc, k) for k in range(1, 3))
            if ingestor.store.get(p, with_tokens=False)]


def test_settings_read_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENDIRECT_COLLECTION", "books")
    monkeypatch.setenv("TOKENDIRECT_TOP_K", "9")
    monkeypatch.setenv("TOKENDIRECT_DATA_DIR", str(tmp_path))
    s = Settings()
    assert (s.collection, s.top_k, s.data_dir, s.model) == ("books", 9, tmp_path, "deepseek-community/DeepSeek-OCR-2")


def test_stages_opened_separately_share_one_store_in_a_process(backend_settings, docs):
    """A shard admits one holder and an in-process client keeps its data in its handle: both are shared."""
    ingestor = Ingestor.from_settings(backend_settings)
    ingestor.ingest([docs / "invoice.png"])
    searcher = Searcher.from_settings(backend_settings)
    decoder = Decoder.from_settings(backend_settings)
    hit = searcher.search("Invoice", top_k=1)[0]
    assert decoder.decode(hit.point_id)
    for stage in (ingestor, searcher, decoder):
        stage.store.close()
    reopened = open_store(backend_settings)
    # the embedded shard persists on disk; the in-process client's data ended with its last holder
    assert reopened.count() == (1 if backend_settings.qdrant_url is None else 0)
    reopened.close()


def test_only_bad_files_leave_no_collection_behind(backend_settings, tmp_path):
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    ingestor = Ingestor.from_settings(backend_settings)
    report = ingestor.ingest([tmp_path / "broken.pdf", tmp_path / "absent.png"])
    assert [f.path for f in report.failures] == [str(tmp_path / "absent.png"), str(tmp_path / "broken.pdf")]
    assert ingestor.store.record() is None
    ingestor.store.close()


def test_fast_path_agrees_with_exact_and_blank_query_tokens_are_counted(backend_settings, docs):
    from core.pooling import keep_mask
    from core.tensors import to_numpy

    # prefetch 3 of the 5 pages: the dense and pooled stages must keep the right ones
    shallow = backend_settings.model_copy(update={"prefetch_dense": 3, "prefetch_pooled": 3})
    ingestor = Ingestor.from_settings(shallow)
    try:
        ingestor.ingest([docs])
        store = ingestor.store
        for page in [p for batch in store.scroll(with_tokens=True) for p in batch]:
            query = page.tokens  # a stored page as the query: its own tokens
            fast, exact = store.search(query, 3), store.search(query, 3, exact=True)
            assert fast[0].point_id == exact[0].point_id == page.point_id
            assert fast[0].score == pytest.approx(exact[0].score)
        assert len(store.search(query, 5, exact=True)) == 5  # exact ranks every page, not what a prefetch kept
        if shallow.qdrant_url:
            return  # what follows is the searcher's own work, the same on every engine

        # blank-canvas query tokens are left out, and each hit says how many took part
        searcher = Searcher(ingestor.model, store, shallow)
        text_query = render_query("Annual report revenue")
        blank_canvas = Image.new("RGB", text_query.size, "white")
        tokens, blank = (to_numpy(t) for t in ingestor.model.encode_pages([text_query, blank_canvas]))
        kept = int(keep_mask(tokens, blank, shallow.blank_similarity).sum())
        assert 0 < kept < 257 and {h.query_tokens for h in searcher.search_image(text_query, top_k=5)} == {kept}
        every = Searcher(ingestor.model, store, shallow.model_copy(update={"blank_similarity": 1.0}))
        assert {h.query_tokens for h in every.search_image(text_query, top_k=5)} == {257}
        assert searcher.search_image(blank_canvas, top_k=1)[0].query_tokens == 257  # never none: all kept
    finally:
        ingestor.store.close()
