"""Hybrid search's fusion: weighted RRF as both engines compute it, the default weights' arithmetic, the weights a
search uses (settings, the collection's calibrated ones, defaults), and their calibration."""

from __future__ import annotations

import numpy as np
import pytest

from config import Settings, defaults
from core.model import ModelIdentity
from core.pages import point_id
from core.store import PagePoint, open_store
from core.text import text_fields
from search import fusion
from search.fusion import FusionWeights, QueryRankings, calibrate, contribution, fuse
from search.plan import search, signal_rankings

DIM = 16
IDENTITY = ModelIdentity("test/fusion-model", "rev", DIM)
WORDS = "heron weir gauge nitrate kiln malt yeast cask pier arch deck mortar ferry notice".split()
DEFAULT = fusion.from_settings(defaults())


def make_pages(n: int = 24) -> list[PagePoint]:
    rng = np.random.default_rng(7)
    pages = []
    for number in range(1, n + 1):
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))) if number % 6 else None  # some scans
        payload = {"doc_id": "doc-f", "source": "/docs/f.pdf", "page": number, "pages": n, **text_fields(text, "pdf")}
        pages.append(PagePoint(point_id("doc-f", number), payload, rng.normal(size=(5, DIM)).astype(np.float32)))
    return pages


@pytest.fixture
def store(backend_settings):
    s = open_store(backend_settings.model_copy(update={"collection": "fusion"}))
    s.bind(IDENTITY)
    s.upsert(make_pages())
    yield s
    s.drop()
    s.close()


def standard_rrf(rankings, weights, k, limit):
    """The textbook weighted RRF, sum of w / (k + position): not what Qdrant computes (the negative control)."""
    scores: dict[str, float] = {}
    for ranking, w in zip(rankings, weights, strict=True):
        for p, item in enumerate(ranking):
            scores[item] = scores.get(item, 0.0) + w / (k + p)
    return sorted(scores, key=lambda item: -scores[item])[:limit]


# -- what the engines compute ------------------------------------------------------------------------------------


def test_weighted_rrf_is_what_both_engines_compute(store):
    query = np.random.default_rng(1).normal(size=(3, DIM)).astype(np.float32)
    text = "heron gauge malt pier"
    by_visual, by_text = signal_rankings(store, query, text, 10)
    rankings = [[h.point_id for h in by_visual], [h.point_id for h in by_text]]
    assert len(rankings[0]) == 24 and 5 < len(rankings[1]) < 24  # every page seen; the text ranking misses some
    told_apart = False
    for weights in (FusionWeights(2, 0.3, 1.0), FusionWeights(60, 0.01, 1.0), FusionWeights(5, 3.0, 0.7), DEFAULT):
        hits = search(store, query, 10, text_query=text, mode="hybrid", fusion=weights)
        expected = fuse(rankings, [weights.visual, weights.text], weights.k, 10)
        scores = {}
        for ranking, w in zip(rankings, (weights.visual, weights.text), strict=True):
            for position, item in enumerate(ranking):
                scores[item] = scores.get(item, 0.0) + contribution(position, w, weights.k)
        assert [h.point_id for h in hits] == expected
        assert [h.score for h in hits] == pytest.approx([scores[i] for i in expected], rel=1e-5)
        told_apart |= standard_rrf(rankings, [weights.visual, weights.text], weights.k, 10) != expected
    assert told_apart  # the textbook formula gives another order: the comparison above can fail


def test_hybrid_names_the_signals_that_found_each_hit_whatever_the_weights(store):
    query = np.random.default_rng(2).normal(size=(3, DIM)).astype(np.float32)
    text_ids = {h.point_id for h in search(store, None, 40, text_query="nitrate kiln", mode="text")}
    for weights in (FusionWeights(2, 0.3, 1.0), FusionWeights(60, 0.001, 1.0), FusionWeights(1, 5.0, 0.1)):
        hits = search(store, query, 24, text_query="nitrate kiln", mode="hybrid", fusion=weights)
        assert len(hits) == 24 and all("visual" in h.signals for h in hits)  # 24 pages < the visual pool
        assert {h.point_id for h in hits if "text" in h.signals} == text_ids


# -- the default weights -----------------------------------------------------------------------------------------


def test_the_default_weights_keep_a_strong_text_ranking_and_a_strong_visual_one():
    text = [f"t{i}" for i in range(40)]  # what BM25 found, best first
    others = [f"v{i}" for i in range(40)]
    # A weak visual signal puts the text signal's fifth page first and its first page nowhere: the first stays ahead.
    weak = ["t4"] + others[:38] + ["t0"]
    # A strong visual signal finds a scanned page (no text) first while BM25 finds 40 other pages: it comes 4th, after
    # the text signal's first three (0.3 / 1.3 = 0.23 against 1/2, 1/3, 1/4, 1/5 at k = 2), in the top 5.
    strong = ["scan"] + others[:39]

    def top(visual, weights: FusionWeights, n: int) -> list[str]:
        return fuse([visual, text], [weights.visual, weights.text], weights.k, n)

    assert top(weak, DEFAULT, 1) == ["t0"] and top(strong, DEFAULT, 5).index("scan") == 3
    # Equal weights at k = 60, the previous default, let the weak signal win, and no visual weight at k = 60 keeps
    # both properties: below 1/901 the text's first page stays first, but the scanned page falls behind the text
    # signal's 40 pages.
    equal = FusionWeights(60, 1.0, 1.0)
    assert top(weak, equal, 1) == ["t4"]
    for visual in (1.0, 0.3, 0.1, 0.01, 0.002):
        assert top(weak, FusionWeights(60, visual, 1.0), 1) == ["t4"]
    assert top(weak, FusionWeights(60, 0.001, 1.0), 1) == ["t0"]
    assert "scan" not in top(strong, FusionWeights(60, 0.001, 1.0), 40)


# -- which weights a search uses ---------------------------------------------------------------------------------


def test_settings_then_the_collection_record_then_the_defaults(store, backend_settings):
    assert fusion.resolve(Settings(), store.record()) == DEFAULT and DEFAULT.source == "default"
    calibrated = FusionWeights(5, 0.1, 1.0)
    store.save_fusion(calibrated.to_record(calibrated_on="set", queries=12))
    record = store.record()
    assert record["model"] == IDENTITY.model and record["fusion"]["calibrated_on"] == "set"  # the rest is kept
    assert fusion.resolve(Settings(), record) == FusionWeights(5, 0.1, 1.0, "collection")
    chosen = fusion.resolve(Settings(hybrid_visual_weight=0.5), record)  # any setting given overrides the record
    assert chosen == FusionWeights(DEFAULT.k, 0.5, DEFAULT.text, "settings")
    if backend_settings.qdrant_url is None:  # the embedded store keeps it on disk
        store.close()
        with open_store(backend_settings.model_copy(update={"collection": "fusion"})) as again:
            assert fusion.from_record(again.record()) == FusionWeights(5, 0.1, 1.0, "collection")


def test_the_environment_overrides_the_collections_weights(monkeypatch):
    record = {"fusion": FusionWeights(5, 0.1, 1.0).to_record()}
    monkeypatch.setenv("TOKENDIRECT_HYBRID_RRF_K", "3")
    assert fusion.resolve(Settings(), record) == FusionWeights(3, DEFAULT.visual, DEFAULT.text, "settings")
    monkeypatch.delenv("TOKENDIRECT_HYBRID_RRF_K")
    assert fusion.resolve(Settings(), record).source == "collection"


def test_calibrated_weights_travel_with_an_export(store, backend_settings, tmp_path):
    from core.store.transfer import export_collection, import_collection

    store.save_fusion(FusionWeights(3, 0.2, 1.0).to_record())
    export_collection(store, tmp_path / "f.zip", 8)
    with open_store(backend_settings.model_copy(update={"collection": "fusion-imported"})) as target:
        try:
            import_collection(target, tmp_path / "f.zip")
            assert fusion.from_record(target.record()) == FusionWeights(3, 0.2, 1.0, "collection")
        finally:
            target.drop()


# -- calibration -------------------------------------------------------------------------------------------------


def labelled(n: int, visual_good: bool, text_good: bool, seed: int = 0) -> list[QueryRankings]:
    """n queries over 30 pages; a good signal ranks the relevant page first, a bad one 21st."""
    rng = np.random.default_rng(seed)
    pages = [f"p{i}" for i in range(30)]

    def ranking(relevant: str, good: bool) -> list[str]:
        order = [p for p in rng.permutation(pages) if p != relevant]
        return [relevant] + order if good else order[:20] + [relevant] + order[20:]

    queries = []
    for q in range(n):
        relevant = pages[q % 30]
        queries.append(QueryRankings(ranking(relevant, visual_good), ranking(relevant, text_good), {relevant}))
    return queries


def scores(queries: list[QueryRankings], weights: FusionWeights) -> tuple[float, float]:
    """hit@5 and MRR@10 of `weights` on `queries`."""
    hits, ranks = [], []
    for q in queries:
        fused = fuse([q.visual, q.text], [weights.visual, weights.text], weights.k, 10)
        hits.append(any(i in q.relevant for i in fused[:5]))
        ranks.append(next((1 / (i + 1) for i, item in enumerate(fused) if item in q.relevant), 0.0))
    return float(np.mean(hits)), float(np.mean(ranks))


def test_calibration_follows_whichever_signal_is_strong():
    text_set, visual_set = labelled(20, False, True), labelled(20, True, False)
    text_strong, visual_strong = calibrate(text_set, DEFAULT), calibrate(visual_set, DEFAULT)
    assert (text_strong.hit_at_5, text_strong.mrr) == scores(text_set, text_strong.weights) == (1.0, 1.0)
    assert visual_strong.hit_at_5 == scores(visual_set, visual_strong.weights)[0] == 1.0
    # each set's weights do worse on the other set: the sets tell weightings apart, and calibration follows them
    assert scores(visual_set, text_strong.weights)[1] < visual_strong.mrr
    assert scores(text_set, visual_strong.weights)[1] < text_strong.mrr
    assert scores(text_set, FusionWeights(60, 1.0, 1.0))[0] < 1.0  # the previous default loses hits here
    assert text_strong.loo_hit_at_5 == 1.0 and text_strong.queries == 20
    assert text_strong.candidates == len(fusion.K_GRID) * len(fusion.VISUAL_GRID)


def test_a_set_that_cannot_tell_weights_apart_keeps_the_defaults():
    both = labelled(10, visual_good=True, text_good=True)
    assert calibrate(both, DEFAULT).weights == FusionWeights(DEFAULT.k, DEFAULT.visual, DEFAULT.text, "calibrated")
    with pytest.raises(ValueError, match="at least one"):
        calibrate([], DEFAULT)


def test_a_random_visual_ranking_costs_the_default_weights_little():
    text_set = labelled(20, visual_good=False, text_good=True)
    pages = [f"p{i}" for i in range(30)]
    assert fusion.random_visual_hit_at_5(text_set, DEFAULT, pages, draws=50) == 1.0  # the text's first page holds
    assert fusion.random_visual_hit_at_5(text_set, FusionWeights(60, 1.0, 1.0), pages, draws=50) < 0.8
