"""The codebook first stage's parts (core/codebook.py): what a page and a query become, and the codebook's form."""

from __future__ import annotations

import numpy as np
import pytest

from core import codebook
from core.pooling import SKETCH_DIM, sketch
from core.tensors import unit_length


def topic_tokens(rng, centres: np.ndarray, n: int) -> np.ndarray:
    """`n` unit tokens scattered around some of `centres`."""
    picked = centres[rng.integers(0, len(centres), n)]
    return unit_length(picked + rng.normal(scale=0.05, size=picked.shape))


def test_pages_of_one_topic_share_centroids_and_a_query_finds_its_topic_first():
    rng = np.random.default_rng(5)
    dim = 1280  # sketched to SKETCH_DIM, as the published model's tokens are
    topics = unit_length(rng.normal(size=(12, 6, dim)))
    pages = [topic_tokens(rng, topics[t], 60) for t in range(12) for _ in range(4)]
    centroids = codebook.train(np.concatenate([sketch(p) for p in pages]), 96)
    assert centroids.shape == (96, SKETCH_DIM)
    assert np.allclose(np.linalg.norm(centroids, axis=1), 1, atol=1e-5)
    vectors = [codebook.page_vector(sketch(p), centroids) for p in pages]
    for v in vectors:  # distinct centroids, weight 1: repeats of one kind of token count once
        assert len(set(v.indices)) == len(v.indices) and set(v.values) == {1.0}
    weights = np.zeros((len(pages), len(centroids)))
    for row, v in zip(weights, vectors, strict=True):
        row[v.indices] = v.values
    same = [weights[i] @ weights[i + 1] for i in range(0, 48, 4)]
    other = [weights[i] @ weights[(i + 4) % 48] for i in range(0, 48, 4)]
    assert min(same) > max(other)  # a topic's pages share centroids; other topics' pages hardly any
    for t in (0, 5, 11):
        query = codebook.query_vector(topic_tokens(rng, topics[t][:3], 12), centroids, probes=4)
        assert len(query.indices) <= 12 * 4 and min(query.values) > 0
        scores = weights[:, query.indices] @ np.asarray(query.values)
        assert set(np.argsort(-scores)[:4]) == set(range(4 * t, 4 * t + 4))


def test_each_query_token_gives_its_nearest_centroid_full_weight_however_near_it_lies():
    rng = np.random.default_rng(3)
    centroids = unit_length(rng.normal(size=(16, 64))).astype(np.float32)  # 64 wide: tokens are their own sketch
    on = centroids[0]  # lies on centroid 0
    aside = rng.normal(size=64)
    aside -= (aside @ centroids[1]) * centroids[1]
    between = unit_length(0.45 * centroids[1] + 0.9 * unit_length(aside))  # nearest centroid 1, far from any
    tie = unit_length(centroids[2] + 0.95 * centroids[3])  # nearest centroid 2, a near tie with 3
    tokens = np.stack([on, between, tie])
    likeness = tokens @ centroids.T
    assert likeness.argmax(1).tolist() == [0, 1, 2] and likeness[1, 1] < 0.5
    query = codebook.query_vector(tokens, centroids, probes=4)
    weights = dict(zip(query.indices, query.values, strict=True))
    assert weights[0] == pytest.approx(1, abs=1e-3) and weights[1] == pytest.approx(1, abs=1e-3)
    # the other probes weigh their likeness relative to the token's nearest, sharpened: a near tie counts
    expected = (likeness[2, 3] / likeness[2, 2]) ** codebook.LIKENESS_POWER
    assert 0.5 < weights[3] == pytest.approx(expected, rel=1e-3)
    # and far ones hardly do: summed over the tokens, those under QUERY_FLOOR are left out
    summed = np.zeros(len(centroids))
    for row in likeness:
        for c in np.argsort(row)[-4:]:
            summed[c] += (max(row[c], 0) / row.max()) ** codebook.LIKENESS_POWER
    assert sorted(weights) == np.flatnonzero(summed >= codebook.QUERY_FLOOR).tolist()
    assert ((summed > 0) & (summed < codebook.QUERY_FLOOR)).any()  # some probes were left out
    unlike = unit_length(-np.linalg.pinv(centroids) @ np.ones(16))[None, :].astype(np.float32)
    assert (unlike @ centroids.T).max() < 0
    assert codebook.query_vector(unlike, centroids, 4).indices == []  # a token near no centroid adds nothing


def test_a_page_token_gives_its_two_nearest_centroids_weight_in_the_soft_form_and_the_nearest_alone_before():
    rng = np.random.default_rng(8)
    centroids = unit_length(rng.normal(size=(16, 64))).astype(np.float32)
    on = centroids[2]
    between = unit_length(centroids[5] + 0.9 * centroids[6])  # nearest 5, a near tie with 6
    tokens = np.stack([on, between, on])  # a repeated kind of token counts once
    likeness = between @ centroids.T
    assert likeness.argmax() == 5 and np.sort(likeness)[-2] == likeness[6]
    vector = codebook.page_vector(tokens, centroids, spread=2)
    soft = dict(zip(vector.indices, vector.values, strict=True))
    assert soft[2] == pytest.approx(1) and soft[5] == pytest.approx(1)
    assert soft[6] == pytest.approx((likeness[6] / likeness[5]) ** codebook.LIKENESS_POWER, rel=1e-4)
    assert 0.5 < soft[6] < 1 and all(w < 0.01 for c, w in soft.items() if c not in (2, 5, 6))
    hard = codebook.page_vector(tokens, centroids)  # spread 1: collections made before the soft form
    assert sorted(hard.indices) == [2, 5] and set(hard.values) == {1.0}


def test_collections_made_before_the_soft_codebook_keep_their_hard_page_vectors():
    from config import defaults
    from core.store.layout import SearchLayout

    layout = SearchLayout.from_settings(defaults())
    assert layout.codebook_spread == 2 and layout.built()["codebook_spread"] == 2
    before = {k: v for k, v in layout.built().items() if k != "codebook_spread"}
    assert layout.adopt(before).codebook_spread == 1


def test_a_codebook_is_stored_in_half_precision_and_read_back():
    rng = np.random.default_rng(2)
    centroids = codebook.train(unit_length(rng.normal(size=(500, 64))).astype(np.float32), 40)
    back = codebook.decode(codebook.encode(centroids), 64)
    assert back.shape == centroids.shape and np.abs(back - centroids).max() < 1e-3
    other = codebook.train(unit_length(rng.normal(size=(500, 64))).astype(np.float32), 40)
    assert np.abs(codebook.decode(codebook.encode(other), 64) - centroids).max() > 0.1  # negative control


def test_fewer_tokens_than_centroids_give_one_centroid_each():
    tokens = unit_length(np.random.default_rng(1).normal(size=(30, 16))).astype(np.float32)
    assert codebook.train(tokens, 4096).shape == (30, 16)
