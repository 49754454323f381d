"""The text signal: per-page PDF text, BM25 vectors, and the four search modes on both store engines.

Store-level tests use synthetic token sets (no model), so each mode's behaviour is checked directly; the pipeline
tests at the end run the tiny model through ingest and search.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cli.sample import write_text_pdf
from core.errors import StoreError
from core.model import ModelIdentity, OcrModel
from core.pages import point_id
from core.store import PagePoint, open_store
from core.store.schema import BM25
from core.text import embed_document, embed_query, normalize, pdf_page_texts, text_fields
from search.plan import search
from tests.helpers import BACKENDS, on_engine, page_image, settings_for, write_pdf

DIM = 16
IDENTITY = ModelIdentity("test/text-model", "rev", DIM)
TEXTS = {
    1: "Brewing notes. Zymurgy is the study of fermentation in brewing and winemaking.",
    2: "Harbour report. The ferry timetable changes in winter; the harbour master posts notices.",
    3: None,  # a scanned page: no text layer
    4: "Orchard ledger. Apple harvest figures for the harbour district, with notes on winter pruning.",
}


def make_pages(doc_id: str = "doc-t") -> list[PagePoint]:
    rng = np.random.default_rng(3)
    pages = []
    for number, text in TEXTS.items():
        payload = {"doc_id": doc_id, "source": f"/docs/{doc_id}.pdf", "page": number, "pages": len(TEXTS)}
        payload.update(text_fields(text, "pdf"))
        tokens = rng.normal(size=(6 + number, DIM)).astype(np.float32)
        pages.append(PagePoint(point_id(doc_id, number), payload, tokens))
    return pages


PAGES = make_pages()


@pytest.fixture
def store(backend_settings):
    s = open_store(backend_settings.model_copy(update={"collection": "text-search"}))
    s.bind(IDENTITY)
    s.upsert(PAGES)
    yield s
    s.drop()
    s.close()


def pages_of(hits) -> list[int]:
    return [h.payload["page"] for h in hits]


# -- text extraction and BM25 ------------------------------------------------------------------------------------


def test_the_text_layer_is_read_per_page(tmp_path):
    pdf = write_text_pdf(tmp_path / "born-digital.pdf", [["First page", "about herons"], [], ["Third", "zymurgy"]])
    assert pdf_page_texts(pdf, 3) == ["First page\nabout herons", "", "Third\nzymurgy"]
    # an image-only PDF (a scan) has no text layer; a PNG has none to read
    scan = write_pdf(tmp_path / "scan.pdf", [["Scanned words"], ["More scanned words"]])
    assert pdf_page_texts(scan, 2) == ["", ""]
    assert pdf_page_texts(tmp_path / "page.png", 1) == [""]


def test_text_is_normalised_and_noise_is_no_text():
    assert normalize("co-\noperation  of\t\tthe\r\n\n\n\nﬁrms\x00") == "cooperation of the\n\nfirms"
    assert normalize(" 7 \n") == "" and normalize(None) == ""
    assert text_fields("  - 12 -  ", "pdf") == {"text": None, "text_source": None}
    assert text_fields("Heron colony", "decoded") == {"text": "Heron colony", "text_source": "decoded"}


def test_documents_and_queries_share_one_tokenisation():
    doc = embed_document("The herons were nesting by the river")
    query = embed_query("heron nests")  # stemmed like the document: heron(s), nest(ing)
    assert set(query.indices) <= set(doc.indices) and query.values == [1.0, 1.0]
    assert embed_query("the of and") is None and embed_document("") is None  # stop words only: no terms


# -- search modes on each engine ---------------------------------------------------------------------------------


def test_bm25_finds_the_page_holding_a_rare_word(store):
    hits = search(store, None, 3, text_query="zymurgy", mode="text")
    assert pages_of(hits) == [1] and hits[0].signals == ["text"]
    hits = search(store, None, 3, text_query="harbour winter", mode="text")
    assert sorted(pages_of(hits)) == [2, 4] and all(h.signals == ["text"] for h in hits)
    assert search(store, None, 3, text_query="the and", mode="text") == []  # nothing to match
    assert store.text_pages() == 3


def test_a_page_without_text_is_found_visually(store):
    scan = PAGES[2]
    hits = search(store, scan.tokens, 2, mode="visual")
    assert pages_of(hits)[0] == 3 and hits[0].signals == ["visual"]
    assert "text" not in hits[0].payload  # hits leave the page text out
    hits = search(store, scan.tokens, 4, text_query="zymurgy", mode="hybrid")
    assert pages_of(hits)[:2] == [3, 1] or pages_of(hits)[:2] == [1, 3]


def test_hybrid_returns_pages_found_by_either_signal(store):
    # The scanned page 3 is the visual match; the rare word is on page 1 only.
    hits = search(store, PAGES[2].tokens, 2, text_query="zymurgy", mode="hybrid")
    found = {h.payload["page"]: h.signals for h in hits}
    assert found[3] == ["visual"]  # no text: visual alone found it
    assert "text" in found[1]
    assert hits[0].score >= hits[1].score
    # The visual signal sees every page (4 < its candidate pool); text only the pages with the word.
    every = search(store, PAGES[2].tokens, 10, text_query="zymurgy", mode="hybrid")
    assert sorted(pages_of(every)) == [1, 2, 3, 4]
    assert {h.payload["page"] for h in every if "text" in h.signals} == {1}
    assert all("visual" in h.signals for h in every)


def test_rerank_orders_text_candidates_by_maxsim(store):
    query = PAGES[3].tokens  # page 4's own tokens
    hits = search(store, query, 5, text_query="harbour", mode="rerank")
    assert pages_of(hits) == [4, 2]  # only the pages holding the word; page 4 matches the tokens best
    assert hits[0].signals == ["text", "visual"]
    visual = {h.payload["page"]: h.score for h in search(store, query, 5, mode="visual")}
    assert [h.score for h in hits] == pytest.approx([visual[4], visual[2]], rel=1e-3)


def test_doc_filter_applies_to_every_mode(store):
    other = make_pages("doc-u")
    store.upsert(other)
    for mode in ("text", "hybrid", "rerank"):
        hits = search(store, PAGES[0].tokens, 10, "doc-u", text_query="zymurgy", mode=mode)
        assert hits and {h.payload["doc_id"] for h in hits} == {"doc-u"}


def test_decoded_text_makes_a_page_findable_by_words(store):
    scan = PAGES[2].point_id
    assert search(store, None, 3, text_query="lighthouse", mode="text") == []
    store.set_text(scan, "The lighthouse keeper's log", "decoded")
    hits = search(store, None, 3, text_query="lighthouse", mode="text")
    assert [h.point_id for h in hits] == [scan]
    payload = store.get(scan, with_tokens=False).payload
    assert (payload["text"], payload["text_source"]) == ("The lighthouse keeper's log", "decoded")
    store.set_text(scan, None, None)  # the text goes, and BM25 no longer finds the page
    assert search(store, None, 3, text_query="lighthouse", mode="text") == []


def test_unknown_modes_and_missing_tokens_are_refused(store):
    with pytest.raises(ValueError, match="unknown search mode 'fuzzy'"):
        search(store, PAGES[0].tokens, 3, text_query="x", mode="fuzzy")
    with pytest.raises(ValueError, match="needs the query's tokens"):
        search(store, None, 3, text_query="zymurgy", mode="hybrid")


def test_a_collection_made_before_text_search_still_searches_visually(backend_settings):
    s = open_store(backend_settings.model_copy(update={"collection": "before-text"}))
    try:
        s.bind(IDENTITY)
        # the layout collections had before the `bm25` vector was added
        if hasattr(s, "shard"):
            from qdrant_edge import UpdateOperation

            s.shard.update(UpdateOperation.delete_vector_name(BM25))
        else:
            s.client.delete_vector_name(s.collection, BM25)
        s._bm25_known = False
        assert not s.has_text_index()
        s.upsert(PAGES)  # pages with text are still stored (the text in the payload only)
        assert pages_of(search(s, PAGES[1].tokens, 1))[0] == 2
        for mode in ("text", "hybrid", "rerank"):
            with pytest.raises(StoreError, match="has no text index .* mode 'visual'"):
                search(s, PAGES[1].tokens, 1, text_query="zymurgy", mode=mode)
        assert s.text_pages() == 0
    finally:
        s.drop()
        s.close()


# -- through ingest and search, with the tiny model ------------------------------------------------------------------

RARE = "zymurgy"


def make_mixed_docs(folder: Path) -> Path:
    """A born-digital two-page PDF (a text layer) and a scanned page (pixels only)."""
    folder.mkdir(parents=True)
    write_text_pdf(
        folder / "guide.pdf",
        [["Brewing guide", f"Notes on {RARE} and yeast."], ["Harbour notes", "Ferry times change in winter."]],
    )
    page_image(["Scanned letter", "Dear Sir"], size=(600, 600)).save(folder / "letter.png")
    return folder


@pytest.fixture(scope="module", params=BACKENDS)
def mixed(request, tmp_path_factory, tiny_model_dir):
    """The mixed documents ingested once per engine for the tests that read them, and a searcher over them (a
    collection of its own: the process's in-process client holds every `:memory:` collection)."""
    from ingest import Ingestor
    from search import Searcher

    root = tmp_path_factory.mktemp("mixed")
    settings = on_engine(settings_for(tiny_model_dir, root / "data", collection="mixed"), request.param)
    model = OcrModel.from_settings(settings)
    with open_store(settings) as store:
        report = Ingestor(model, store, settings).ingest([make_mixed_docs(root / "mixed")])
        yield SimpleNamespace(store=store, report=report, searcher=Searcher(model, store, settings))


def test_ingest_stores_each_pages_text_and_counts_its_source(mixed):
    assert mixed.report.ok and mixed.report.text_pages == {"pdf": 2, "decoded": 0, "none": 1}
    sources = {p.payload["file_name"]: p for batch in mixed.store.scroll(with_tokens=False) for p in batch}
    assert sources["letter.png"].payload["text"] is None and sources["letter.png"].payload["text_source"] is None
    assert mixed.store.text_pages() == 2


def test_hybrid_is_the_default_and_names_the_signals_that_found_each_hit(mixed):
    assert mixed.searcher.default_mode() == "hybrid"
    hits = mixed.searcher.search(RARE, top_k=3)  # hybrid: the text finds page 1, the visual signal sees every page
    assert [h.mode for h in hits] == ["hybrid"] * 3 and len({h.point_id for h in hits}) == 3
    by_page = {(h.source.rsplit("/", 1)[-1], h.page): h.signals for h in hits}
    assert by_page[("guide.pdf", 1)] == ["visual", "text"]
    assert by_page[("letter.png", 1)] == ["visual"]  # no text: found visually


def test_text_mode_finds_the_page_by_its_text_layer(mixed):
    text_hits = mixed.searcher.search(RARE, top_k=3, mode="text")
    assert [(h.page, h.signals, h.query_tokens) for h in text_hits] == [(1, ["text"], 0)]
    assert text_hits[0].source.endswith("guide.pdf")


def test_rerank_keeps_the_text_candidates(mixed):
    rerank = mixed.searcher.search("ferry winter", top_k=3, mode="rerank")
    assert [(h.page, h.signals) for h in rerank] == [(2, ["text", "visual"])]


def test_query_tokens_encoded_once_give_the_same_search(mixed):
    searcher = mixed.searcher
    with_tokens = searcher.search(RARE, top_k=3, mode="visual", tokens=searcher.encode_query(RARE))
    assert [h.point_id for h in with_tokens] == [h.point_id for h in searcher.search(RARE, 3, mode="visual")]


def test_ocr_text_gives_a_scanned_page_the_decoders_text(settings, tmp_path):
    from core.text import normalize
    from decode import Decoder
    from ingest import Ingestor
    from search import Searcher

    s = settings.model_copy(update={"ocr_text": True})
    model = OcrModel.from_settings(s)
    with open_store(s) as store:
        report = Ingestor(model, store, s).ingest([make_mixed_docs(tmp_path / "mixed") / "letter.png"])
        assert report.text_pages == {"pdf": 0, "decoded": 1, "none": 0}
        [[page]] = list(store.scroll(with_tokens=False))
        # the text is what the decoder makes of the stored tokens (the tiny model's text means nothing)
        decoded = normalize(Decoder(model, store, s).decode(page.point_id))
        assert page.payload["text"] == decoded and page.payload["text_source"] == "decoded"
        words = re.findall(r"\w{2,}", decoded)
        assert words, decoded
        word = max(words, key=len)
        hits = Searcher(model, store, s).search(word, 3, mode="text")
        assert [h.point_id for h in hits] == [page.point_id]


def test_hybrid_with_no_searchable_word_is_the_visual_ranking(store):
    hybrid = search(store, PAGES[1].tokens, 4, text_query="the of", mode="hybrid")  # stop words only
    visual = search(store, PAGES[1].tokens, 4, mode="visual")
    assert [h.point_id for h in hybrid] == [h.point_id for h in visual]
    assert all(h.signals == ["visual"] for h in hybrid)


def test_an_imported_collection_searches_by_text_too(store, backend_settings, tmp_path):
    """export/import carries the page text in the payload; the target rebuilds the BM25 vectors from it."""
    from core.store.transfer import export_collection, import_collection

    export_collection(store, tmp_path / "pages.zip", 2)
    with open_store(backend_settings.model_copy(update={"collection": "text-imported"})) as target:
        try:
            import_collection(target, tmp_path / "pages.zip")
            assert target.text_pages() == 3
            assert pages_of(search(target, None, 3, text_query="zymurgy", mode="text")) == [1]
        finally:
            target.drop()
