"""One contract for every store engine: the embedded qdrant-edge shard, qdrant-client in-process, and a real Qdrant
server when TOKENDIRECT_QDRANT_URL points at one (http(s)://...; TOKENDIRECT_QDRANT_API_KEY and
TOKENDIRECT_QDRANT_GRPC_PORT are read too). Each test works in a collection of its own, dropped afterwards.

Pages here are synthetic token sets (bfloat16-valued, as the encoder's are, plus values float16 cannot hold), so
the contract runs without a model.
"""

from __future__ import annotations

import math
import os
import uuid
from dataclasses import replace
from datetime import datetime

import numpy as np
import pytest

from cli import first_stage as first_stage_in_words
from config import Settings
from core import codebook
from core.errors import ModelMismatchError, StoreError
from core.model import ModelIdentity
from core.pages import point_id
from core.pooling import maxsim, sketch
from core.store import PagePoint, SearchLayout, open_store
from core.store.layout import CENTROIDS, FINE, POOLED
from core.store.record import CODEBOOK_ID, META_ID, SCHEMA_VERSION
from core.store.schema import INDEXED_FIELDS, TOKENS, Filter, rows_per_vector
from core.store.storage import ROWS_FIELD, to_storage, unit_rows
from core.tensors import unit_length
from search.bench import stage_chain
from search.plan import fast_path_pages, search, visual
from tests.helpers import bfloat16_tokens

DIM = 32
IDENTITY = ModelIdentity("test/contract-model", "rev-a", DIM)
DOCS = {"doc-a": [7, 12, 5], "doc-b": [9, 6]}  # doc_id -> rows of each page
SERVER_URL = os.environ.get("TOKENDIRECT_QDRANT_URL", "")
NO_SERVER = (
    "no Qdrant server: set TOKENDIRECT_QDRANT_URL=http(s)://HOST:6333 (and TOKENDIRECT_QDRANT_API_KEY) "
    "to hold a real server to this contract"
)


def make_pages() -> list[PagePoint]:
    rng = np.random.default_rng(7)
    pages = []
    for doc_id, rows in DOCS.items():
        for number, n in enumerate(rows, 1):
            tokens = bfloat16_tokens(rng, n, DIM)
            payload = {
                "doc_id": doc_id,
                "source": f"/docs/{doc_id}.pdf",
                "file_name": f"{doc_id}.pdf",
                "page": number,
                "pages": len(rows),
                "n_tokens": n,
                "model": IDENTITY.model,
                "ingested_at": "2026-05-04T03:02:01+00:00",
            }
            pages.append(PagePoint(point_id(doc_id, number), payload, tokens))
    # float16 cannot hold these (too small, too large): they must come back all the same
    pages[0].tokens[0, :3] = [3.0517578125e-05 / 4, -1.1920929e-07, 70144.0]
    return pages


PAGES = make_pages()


@pytest.fixture(params=["edge", "memory", "server"])
def engine(request, tmp_path) -> Settings:
    """Settings naming one engine and a fresh collection."""
    s = Settings(
        data_dir=tmp_path / "data", collection=f"contract-{uuid.uuid4().hex[:12]}", qdrant_url=None, qdrant_api_key=None
    )
    if request.param == "memory":
        s = s.model_copy(update={"qdrant_url": ":memory:"})
    elif request.param == "server":
        if not SERVER_URL.startswith(("http://", "https://")):
            pytest.skip(NO_SERVER)
        s = s.model_copy(
            update={
                "qdrant_url": SERVER_URL,
                "qdrant_api_key": os.environ.get("TOKENDIRECT_QDRANT_API_KEY"),
                "qdrant_grpc_port": int(os.environ.get("TOKENDIRECT_QDRANT_GRPC_PORT", "6334")),
            }
        )
    yield s
    if request.param == "server":
        with open_store(s) as leftover:
            leftover.drop()


@pytest.fixture
def store(engine):
    s = open_store(engine)
    yield s
    s.close()


@pytest.fixture
def filled(store):
    store.bind(IDENTITY)
    store.upsert(PAGES)
    return store


@pytest.fixture
def coarse(engine):
    """`filled`, in a collection made without a codebook: its first stage is the coarse scan."""
    with open_store(engine.model_copy(update={"codebook_size": 0})) as store:
        store.bind(IDENTITY)
        store.upsert(PAGES)
        yield store


def test_a_new_collection_is_created_with_the_models_record(store, engine):
    assert store.record() is None
    assert (store.count(), store.documents(), store.payload_indexes()) == (0, {}, {})
    assert store.retrieve([PAGES[0].point_id]) == [] and list(store.scroll()) == []
    with pytest.raises(StoreError, match="does not exist yet"):
        store.bind(IDENTITY, create=False)
    assert store.record() is None  # create=False made nothing

    store.bind(IDENTITY)
    record = store.record()
    assert record["kind"] == "collection"
    assert (record["model"], record["revision"], record["dim"]) == (IDENTITY.model, IDENTITY.revision, IDENTITY.dim)
    # the fast path's derivation is fixed at creation, so every page of the collection is pooled alike
    assert record["schema"] == SCHEMA_VERSION and record["layout"] == SearchLayout.from_settings(engine).built()
    assert datetime.fromisoformat(record["created_at"])
    store.bind(IDENTITY)  # the same model again: accepted, nothing changes
    store.bind(IDENTITY, create=False)
    assert store.record() == record and store.count() == 0
    with open_store(engine) as second:  # another handle sees the same record
        assert second.record() == record


def test_another_model_is_refused_naming_both(filled):
    attempts = {
        "other weights": ModelIdentity("test/other-model", "rev-b", DIM),
        "other revision": ModelIdentity(IDENTITY.model, "rev-b", DIM),
        "other dimension": ModelIdentity(IDENTITY.model, IDENTITY.revision, 2 * DIM),
    }
    for other in attempts.values():
        for create in (True, False):
            with pytest.raises(ModelMismatchError) as err:
                filled.bind(other, create=create)
            message = str(err.value)
            for part in (IDENTITY.model, IDENTITY.revision, other.model, other.revision, f"dimension {other.dim}"):
                assert part in message, (part, message)
    assert filled.record()["model"] == IDENTITY.model and filled.count() == len(PAGES)


def test_pages_come_back_with_their_exact_tokens_and_payload(filled):
    assert to_storage(PAGES[0].tokens).patch, "the first page needs values that float16 cannot hold"
    for page in PAGES:
        back = filled.get(page.point_id)
        assert np.array_equal(back.tokens, page.tokens) and back.tokens.dtype == np.float32
        assert back.payload == page.payload  # ROWS_FIELD is the store's own, never shown
        assert filled.get(page.point_id, with_tokens=False).tokens is None
    for not_a_page in (str(uuid.uuid4()), "not-a-uuid", META_ID):
        assert filled.get(not_a_page) is None


def test_existing_and_retrieve_name_only_stored_pages(filled):
    ids = [p.point_id for p in PAGES]
    missing = str(uuid.uuid4())
    assert filled.existing([*ids, missing, META_ID]) == set(ids)
    assert filled.existing([]) == set()
    got = {p.point_id: p for p in filled.retrieve([ids[0], missing, ids[-1]])}
    assert set(got) == {ids[0], ids[-1]}
    assert np.array_equal(got[ids[0]].tokens, PAGES[0].tokens)


def test_search_ranks_a_page_first_by_its_own_tokens(filled):
    for page in PAGES:
        hits = search(filled, page.tokens, limit=10)
        assert len(hits) == len(PAGES)  # every page once; the record is never a hit
        assert hits[0].point_id == page.point_id
        # MaxSim over unit-length tokens: each of the page's own tokens scores 1 against itself
        assert hits[0].score == pytest.approx(page.tokens.shape[0], rel=1e-2)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert all(ROWS_FIELD not in h.payload and h.tokens is None for h in hits)
    only_b = search(filled, PAGES[0].tokens, limit=10, doc_id="doc-b")
    assert sorted(h.payload["page"] for h in only_b) == [1, 2] and {h.payload["doc_id"] for h in only_b} == {"doc-b"}
    assert search(filled, PAGES[0].tokens, limit=10, doc_id="no-such-doc") == []


def test_count_and_documents(filled):
    assert filled.count() == 5  # pages only: the record is not one
    assert (filled.count("doc-a"), filled.count("doc-b"), filled.count("no-such-doc")) == (3, 2, 0)
    assert filled.documents() == {"doc-a": 3, "doc-b": 2}


def test_counts_follow_writes_made_through_another_handle(filled, engine):
    if engine.qdrant_url == ":memory:":
        pytest.skip("each in-process client holds a collection of its own")
    assert filled.count() == 5
    with open_store(engine) as other:
        other.delete_document("doc-b")
        assert filled.count() == 3
        other.upsert([PAGES[3]])
    assert (filled.count(), filled.count("doc-b")) == (4, 1)


def test_upserting_a_page_again_replaces_it(filled):
    page = PAGES[1]
    filled.upsert([PagePoint(page.point_id, {**page.payload, "ingested_at": "2026-06-01T00:00:00+00:00"}, page.tokens)])
    assert filled.count() == len(PAGES)
    back = filled.get(page.point_id)
    assert back.payload["ingested_at"] == "2026-06-01T00:00:00+00:00"
    assert np.array_equal(back.tokens, page.tokens)


def test_delete_document_removes_only_its_pages(filled, engine):
    filled.delete_document("doc-a")
    assert filled.documents() == {"doc-b": 2}
    assert all(filled.get(p.point_id) is None for p in PAGES if p.payload["doc_id"] == "doc-a")
    assert filled.record()["model"] == IDENTITY.model
    filled.delete_document("no-such-doc")  # nothing to delete is no error
    assert filled.count() == 2
    with open_store(engine.model_copy(update={"collection": engine.collection + "-none"})) as missing:
        missing.delete_document("doc-a")  # nor is a missing collection


def test_set_payload_adds_fields_and_keeps_the_rest(filled):
    page = PAGES[0]
    filled.set_payload(page.point_id, {"text_preview": "Annual report", "text_mode": "ocr"})
    back = filled.get(page.point_id)
    assert back.payload == {**page.payload, "text_preview": "Annual report", "text_mode": "ocr"}
    assert np.array_equal(back.tokens, page.tokens)  # the patch survived the payload write
    for missing in (str(uuid.uuid4()), META_ID):
        with pytest.raises(StoreError, match="no page with point id"):
            filled.set_payload(missing, {"text_preview": "x"})
    with pytest.raises(ValueError):
        filled.set_payload(page.point_id, {ROWS_FIELD: {}})
    assert filled.record()["kind"] == "collection"


def test_the_dashboard_filter_fields_are_indexed(filled, engine):
    if engine.qdrant_url == ":memory:":
        pytest.skip("qdrant-client's in-process mode keeps no payload indexes (it filters by scanning)")
    assert {k: v for k, v in filled.payload_indexes().items() if k in INDEXED_FIELDS} == INDEXED_FIELDS


def test_scroll_visits_every_page_once_in_bounded_batches(filled):
    batches = list(filled.scroll(batch_size=2))
    assert all(1 <= len(b) <= 2 for b in batches)
    seen = [p for b in batches for p in b]
    assert sorted(p.point_id for p in seen) == sorted(p.point_id for p in PAGES)
    by_id = {p.point_id: p for p in PAGES}
    assert all(np.array_equal(p.tokens, by_id[p.point_id].tokens) for p in seen)
    assert all(p.tokens is None for b in filled.scroll(batch_size=10, with_tokens=False) for p in b)


def test_pages_outlive_the_handle_that_wrote_them(filled, engine):
    if engine.qdrant_url == ":memory:":
        pytest.skip("qdrant-client's in-process mode keeps nothing after its last handle closes")
    record = filled.record()
    filled.close()
    with open_store(engine) as reopened:
        assert reopened.record() == record
        assert reopened.documents() == {"doc-a": 3, "doc-b": 2}
        assert np.array_equal(reopened.get(PAGES[0].point_id).tokens, PAGES[0].tokens)


def test_drop_removes_the_collection(filled, engine):
    filled.drop()
    assert filled.record() is None and filled.count() == 0
    with open_store(engine) as again:
        again.bind(IDENTITY)  # a fresh collection, with the same name
        assert again.count() == 0


def test_a_collection_whose_record_cannot_be_written_is_not_left_behind(store):
    broken = ModelIdentity(IDENTITY.model, object(), DIM)  # the engine cannot serialize the record
    with pytest.raises(Exception):  # noqa: B017 - whatever each engine raises for a value it cannot serialize
        store.bind(broken)
    assert store.record() is None  # the collection made a moment before was removed again
    store.bind(IDENTITY)
    assert store.record()["model"] == IDENTITY.model


WIDE = ModelIdentity("test/contract-model", "rev-a", 128)  # wide enough for unrelated tokens to stay unalike


def topic_pages(count: int = 60, rows: int = 24, seed: int = 3) -> list[PagePoint]:
    """Pages in topics of 6 whose tokens lie half around the topic's 8 directions, half around 4 of the page's own,
    so exact MaxSim has a ranking to reproduce: the page itself, then its topic, then the rest."""
    rng = np.random.default_rng(seed)
    topics = unit_length(rng.normal(size=(count // 6, 8, WIDE.dim)))
    pages = []
    for i in range(count):
        own = unit_length(rng.normal(size=(4, WIDE.dim)))
        centres = np.concatenate([topics[i // 6][rng.integers(0, 8, rows // 2)], own[rng.integers(0, 4, rows // 2)]])
        tokens = (centres + rng.normal(scale=0.03, size=centres.shape)).astype(np.float32)
        doc = f"topic-{i // 6}"
        pages.append(PagePoint(point_id(doc, i), {"doc_id": doc, "source": f"/{doc}", "page": i}, tokens))
    return pages


@pytest.mark.parametrize("first_stage", ["pooled", "mean", "muvera"])
def test_the_fast_path_finds_the_same_top_pages_as_exact_maxsim(engine, first_stage):
    pages = topic_pages()
    rng = np.random.default_rng(11)
    # shallow prefetch (half, then a fifth of the pages): the first two stages do the choosing; 8 pooled vectors a page
    shallow = {
        "prefetch_dense": 30,
        "prefetch_at": 0,  # the depths as set, whatever the number of pages
        "prefetch_pooled": 12,
        "pool_size": 3,
        "first_stage": first_stage,
        "exact_below": 0,
        "codebook_size": 0,  # the coarse scan first (the codebook's plan: test_the_codebook_is_learned_...)
    }
    with open_store(engine.model_copy(update=shallow)) as store:
        store.bind(WIDE)
        assert store.record()["layout"]["first_stage"] == first_stage
        store.upsert(pages)
        store.optimize()
        for i in range(0, len(pages), 5):
            query = pages[i].tokens[rng.choice(len(pages[i].tokens), 12, replace=False)]
            fast = search(store, query, limit=6)  # the query's topic: 6 pages
            exact = search(store, query, limit=6, exact=True)
            assert [h.point_id for h in fast] == [h.point_id for h in exact]
            assert fast[0].point_id == pages[i].point_id
            assert [h.score for h in fast] == pytest.approx([h.score for h in exact], rel=1e-6)
            # the exact stage is MaxSim of unit-length tokens (float16), as numpy computes it
            truth = maxsim(unit_length(query), unit_length(pages[i].tokens).astype(np.float16))
            assert exact[0].score == pytest.approx(truth, rel=1e-3)
        topic = search(store, pages[0].tokens[:6], limit=3, doc_id="topic-5")
        assert {h.payload["doc_id"] for h in topic} == {"topic-5"} and len(topic) == 3


def binary_maxsim(query: np.ndarray, vectors: np.ndarray) -> int:
    """MaxSim of binary codes as a Qdrant server scores them: a row pair scores (agreeing signs) - (differing ones)."""
    agree = ((query > 0)[:, None, :] == (vectors > 0)[None, :, :]).sum(-1)
    return int((2 * agree - query.shape[1]).max(1).sum())


@pytest.mark.parametrize("sign_codes", [True, False])
def test_the_binary_stages_score_binary_maxsim_whether_pages_keep_sign_codes_or_float16(engine, sign_codes):
    """A collection stores its pooled vectors as uint8 sign codes (half the bytes of the float16 originals, which only
    ever served as the source of binary codes); one made before keeps float16. Either way the fast path's coarse and
    fine stages rank pages by binary MaxSim: on a server (and the embedded engine) with exactly its scores, in
    qdrant-client's in-process mode, which scores stored values as they are, by scores in proportion to them. The
    in-process mode's float16 collection is the check's negative control: it scores raw floats."""
    pages = topic_pages()
    depths = {"prefetch_dense": 30, "prefetch_at": 0, "prefetch_pooled": 12, "pool_size": 3, "exact_below": 0}
    depths.update(prefetch_dim=0, codebook_size=0)
    with open_store(engine.model_copy(update={**depths, "sign_codes": sign_codes})) as store:
        store.bind(WIDE)
        store.upsert(pages)
        store.optimize()
        assert store.record()["layout"]["sign_codes"] is sign_codes and store.layout.coded is sign_codes
        derived = [store.layout.derive(unit_rows(p.tokens)[1], rows_per_vector(WIDE.dim))[1] for p in pages]
        assert all(d[FINE].dtype == (np.uint8 if sign_codes else np.float16) for d in derived)
        by_id = {p.point_id: d for p, d in zip(pages, derived, strict=True)}
        fits = []
        for i in (0, 17, 41):
            plan = visual(store, pages[i].tokens[:12], 6, None, fast_path_pages(store))
            (fine,) = plan.prefetch
            (coarse,) = fine.prefetch
            for stage, name in ((coarse, POOLED), (fine, FINE)):
                hits = store.query([stage])[0]
                assert len(hits) == stage.limit
                query = np.asarray(stage.query.vector)
                truth = np.array([binary_maxsim(query, by_id[h.point_id][name]) for h in hits], dtype=float)
                scores = np.array([h.score for h in hits])
                if engine.qdrant_url != ":memory:":
                    assert scores.tolist() == truth.tolist()
                slope, offset = np.polyfit(truth, scores, 1)
                fits.append(np.abs(scores - (slope * truth + offset)).max() <= 1e-6 * np.abs(scores).max())
    assert all(fits) is (sign_codes or engine.qdrant_url != ":memory:")


def contrary_page() -> tuple[np.ndarray, PagePoint]:
    """A one-token query, and a page holding that token whose other 19 tokens point the opposite way."""
    query = np.eye(DIM, dtype=np.float32)[:1]
    page = PagePoint(
        point_id("contrary", 1),
        {"doc_id": "contrary", "source": "/c", "page": 1},
        np.concatenate([query, np.repeat(-query, 19, axis=0)]),
    )
    return query, page


def test_exact_bypasses_the_fast_path(filled, engine):
    """A page whose tokens mostly point away from the query, holding the query's token exactly: its dense vector
    ranks it last, so only exact MaxSim over every page puts it first (a dense first stage, as collections made
    before the pooled one have)."""
    query, contrary = contrary_page()
    depths = {"prefetch_dense": 1, "prefetch_at": 0, "prefetch_share": 0.0, "prefetch_pooled": 1}
    dense = {"first_stage": "mean", "collection": f"{engine.collection}-dense", "exact_below": 0}
    with open_store(engine.model_copy(update={**depths, **dense})) as shallow:
        shallow.bind(IDENTITY)
        shallow.upsert([*PAGES, contrary])
        shallow.optimize()
        exact = search(shallow, query, limit=3, exact=True)
        assert exact[0].point_id == contrary.point_id and exact[0].score == pytest.approx(1.0, abs=1e-3)
        fast = search(shallow, query, limit=3)
        assert len(fast) == 3 and contrary.point_id not in {h.point_id for h in fast}
        assert all(np.isfinite(h.score) for h in fast)
    # A collection of at most `exact_below` pages (the default: 256) is searched exactly whatever the depths.
    with open_store(engine.model_copy(update=depths)) as small:
        small.upsert([contrary])
        assert small.count() <= small.layout.exact_below
        assert [h.point_id for h in search(small, query, limit=3)] == [h.point_id for h in exact]


def test_the_first_stage_keeps_a_share_of_the_collection_where_that_is_more(engine):
    """The page only exact MaxSim finds (above): a first stage that keeps every page (a share of 1) finds it too,
    one that keeps a single page does not, and the plan's first stage is as deep as the share says."""
    query, contrary = contrary_page()
    base = {"prefetch_dense": 1, "prefetch_at": 0, "prefetch_pooled": 1, "first_stage": "mean", "exact_below": 0}
    found = {}
    with open_store(engine.model_copy(update=base)) as store:
        store.bind(IDENTITY)
        store.upsert([*PAGES, contrary])
        store.optimize()
        built = store.layout
        for share in (0.0, 0.5, 1.0):
            store.layout = replace(built, prefetch_share=share)  # as a handle opened with this share reads it
            pages = fast_path_pages(store)
            assert pages == len(PAGES) + 1
            first = visual(store, query, 3, None, pages).prefetch[0].prefetch[0]
            assert first.limit == max(3, math.ceil(share * pages))
            found[share] = contrary.point_id in {h.point_id for h in search(store, query, limit=3)}
    assert not found[0.0] and found[1.0]


def test_the_first_stage_scans_with_the_querys_pooled_tokens_and_the_later_stages_with_all(coarse):
    """The coarse scan of every page costs in proportion to the query's rows: it gets the query pooled to one row per
    `query_pool_size` tokens, while the fine and exact stages score every query token."""
    query = PAGES[1].tokens  # 12 rows
    for pool_size, first_rows in ((2.5, 5), (1.0, 12)):
        # stages shallower than the collection, so that the plan has them
        depths = {"exact_below": 0, "prefetch_dim": 0, "prefetch_dense": 2, "prefetch_at": 0, "prefetch_pooled": 1}
        coarse.layout = replace(coarse.layout, query_pool_size=pool_size, **depths)
        plan = visual(coarse, query, 3, None, fast_path_pages(coarse))
        (fine,) = plan.prefetch
        (first,) = fine.prefetch
        assert [len(first.query.vector), len(fine.query.vector), len(plan.query.vector)] == [first_rows, 12, 12]
        assert search(coarse, query, limit=1)[0].point_id == PAGES[1].point_id


def test_a_narrow_collection_looks_deeper_and_goes_exact_where_the_fast_path_would_reach_every_page(coarse):
    """Binary codes of 32 bits order pages less precisely than the 1280 the depths are set for: the stage before
    exact hands on sqrt(40) times as many pages. Where that is every page, the plan is exact MaxSim alone."""
    query = PAGES[1].tokens
    pages = coarse.count()
    depths = {"exact_below": 0, "prefetch_dense": 2, "prefetch_at": 0, "prefetch_share": 0.0, "prefetch_pooled": 1}
    coarse.layout = replace(coarse.layout, **depths)
    assert coarse.dim == DIM and coarse.layout.limits(1, pages, DIM) == (13, 7) and 7 >= pages
    assert visual(coarse, query, 1, None, fast_path_pages(coarse)).prefetch == ()  # exact: no prefetch
    coarse.layout = replace(coarse.layout, prefetch_dim=0)  # the depths as set
    plan = visual(coarse, query, 1, None, fast_path_pages(coarse))
    (fine,) = plan.prefetch
    assert (fine.limit, fine.prefetch[0].limit) == (1, 2)
    assert search(coarse, query, limit=1)[0].point_id == PAGES[1].point_id


def test_pages_are_derived_as_the_collection_was_built_whatever_the_handles_settings(filled, engine):
    """A writer with other fast-path settings binds, and then writes the vectors the collection has."""
    assert filled.record()["layout"]["first_stage"] == "pooled"
    other = {"first_stage": "mean", "pool_size": 4, "fine_pool_size": 7, "exact_below": 0}
    page = PagePoint(point_id("late", 1), {"doc_id": "late", "source": "/late", "page": 1}, PAGES[0].tokens[::-1])
    with open_store(engine.model_copy(update=other)) as writer:
        writer.bind(IDENTITY)
        writer.upsert([page])  # the engine refuses a vector the collection does not have
        assert writer.layout.pool_size == filled.layout.pool_size != 4
        assert search(writer, page.tokens, limit=1)[0].point_id in {page.point_id, PAGES[0].point_id}


BOOK = {"codebook_size": 128, "codebook_pages": 30, "prefetch_codebook": 18, "prefetch_at": 0, "prefetch_pooled": 12}
BOOK["prefetch_dim"] = 0  # the depths as set, for 128-dimension tokens too


def first_stage_of(store, query) -> str:
    """The vector the fast path's first stage scores for `query`."""
    return stage_chain(store, query)[0].query.using


def pages_without_codebook_vector(store) -> int:
    return store._count(Filter(TOKENS, lacks_vector=CENTROIDS))


def test_the_codebook_is_learned_once_due_and_then_every_page_has_its_vector(engine):
    pages = topic_pages()
    arriving = pages[0::3] + pages[1::3] + pages[2::3]  # the codebook learns from the first pages: all topics here
    with open_store(engine.model_copy(update={**BOOK, "pool_size": 3, "exact_below": 0})) as store:
        store.bind(WIDE)
        store.upsert(arriving[:20])
        assert store.centroids(ready=False) is None  # 20 of 30 pages: not due, the fine stage scores every page
        assert first_stage_of(store, pages[0].tokens) == FINE
        query = pages[0].tokens[:12]  # its topic's pages so far: itself and pages[3]
        assert [h.point_id for h in search(store, query, 2)] == [pages[0].point_id, pages[3].point_id]
        store.upsert(arriving[20:40])  # the write that reaches 30 pages learns it, and gives the 40 their vectors
        centroids = store.centroids()
        assert centroids.shape == (128, WIDE.dim) and pages_without_codebook_vector(store) == 0
        assert first_stage_in_words(store) == "codebook of 128 centroids"  # what `tokendirect info` says
        store.upsert(arriving[40:])  # later pages get theirs as they are written
        assert pages_without_codebook_vector(store) == 0
        # the codebook is the collection's own point, not a page
        assert store.count() == 60 and sum(len(b) for b in store.scroll(with_tokens=False)) == 60
        assert store.retrieve([CODEBOOK_ID]) == [] and store.get(CODEBOOK_ID) is None
        store.optimize()
        assert np.array_equal(store.centroids(), centroids)  # learned once: running it again keeps it
        rng = np.random.default_rng(11)
        for i in range(0, len(pages), 5):
            # the page's topic tokens, which the codebook has learned: the fast path finds exact MaxSim's 6 pages
            topic = pages[i].tokens[:12]
            assert first_stage_of(store, topic) == CENTROIDS
            fast = search(store, topic, limit=6)
            assert [h.point_id for h in fast] == [h.point_id for h in search(store, topic, limit=6, exact=True)]
            # with its own tokens too, which lie near no centroid of a codebook learned from half the pages (likeness
            # about 0.2): the page itself first, and a topic page may fall just behind the first stage's 18 pages
            query = pages[i].tokens[rng.choice(len(pages[i].tokens), 12, replace=False)]
            fast = search(store, query, limit=6)
            exact = search(store, query, limit=6, exact=True)
            assert fast[0].point_id == pages[i].point_id
            assert len({h.point_id for h in fast} & {h.point_id for h in exact}) >= 5
        # one document's search keeps the coarse scan, which cannot drop a page of it sharing no centroid
        topic = search(store, pages[0].tokens[:6], limit=6, doc_id="topic-5")
        assert {h.payload["doc_id"] for h in topic} == {"topic-5"} and len(topic) == 6
    # negative control: a collection made without a codebook never learns one
    plain = {**BOOK, "codebook_size": 0, "exact_below": 0, "collection": engine.collection + "-plain"}
    with open_store(engine.model_copy(update=plain)) as plain:
        plain.bind(WIDE)
        plain.upsert(pages)
        plain.optimize()
        assert plain.centroids(ready=False) is None and first_stage_of(plain, pages[0].tokens) == POOLED
        assert first_stage_in_words(plain) == "coarse scan of every page"
        plain.drop()


def test_a_codebook_cut_off_before_every_page_had_its_vector_is_finished_and_not_used_till_then(engine):
    pages = topic_pages()
    with open_store(engine.model_copy(update={**BOOK, "exact_below": 0})) as store:
        store.bind(WIDE)
        store.upsert(pages)
        centroids = store.centroids()
        # as if the writer had stopped after learning the codebook, before giving these pages their vectors
        for page in pages[:7]:
            store._delete_vectors(page.point_id, [CENTROIDS])
        store._set_payload(CODEBOOK_ID, {"ready": False})
        store._centroids, store._codebook_ready = None, False  # what it knows, as a new handle would start
        assert store.centroids() is None and store.centroids(ready=False) is not None
        assert pages_without_codebook_vector(store) == 7
        assert first_stage_of(store, pages[0].tokens) == FINE  # the codebook would miss those 7 pages
        store.optimize()  # the next writer's run finishes it
        assert pages_without_codebook_vector(store) == 0 and np.array_equal(store.centroids(), centroids)
        assert first_stage_of(store, pages[0].tokens) == CENTROIDS


def test_a_writer_whose_codebook_another_replaced_gives_every_page_the_kept_ones_vectors(engine):
    """Writers on a server that reach CODEBOOK_PAGES together each learn a codebook; the last one written is kept,
    and a writer that finds its own replaced gives every page its vector from the kept one."""
    pages = topic_pages()
    with open_store(engine.model_copy(update={**BOOK, "exact_below": 0})) as store:
        store.bind(WIDE)
        store.upsert(pages)
        mine = store.centroids()
        spread = store.layout.codebook_spread  # the soft form, by default: each token's two nearest centroids

        def stored(page) -> set[int]:
            return set(store._retrieve([page.point_id], [CENTROIDS])[0][2][CENTROIDS].indices)

        def expected(page, centroids) -> set[int]:
            return set(codebook.page_vector(sketch(unit_length(page.tokens)), centroids, spread).indices)

        assert all(stored(p) == expected(p, mine) for p in pages)
        theirs = codebook.train(unit_length(np.random.default_rng(4).normal(size=(400, WIDE.dim))), 128)
        replaced = {"kind": "codebook", "centroids": codebook.encode(theirs), "pages": 30, "ready": True}
        store._upsert([(CODEBOOK_ID, {}, replaced)])  # what the other writer's learning wrote
        assert sum(stored(p) != expected(p, mine) for p in pages) == 0  # negative control: not yet noticed
        store.complete_codebook()
        kept = store.centroids()
        assert np.abs(kept - theirs).max() < 1e-3
        assert all(stored(p) == expected(p, kept) for p in pages)
        assert sum(expected(p, kept) != expected(p, mine) for p in pages) > 50  # the two codebooks differ
