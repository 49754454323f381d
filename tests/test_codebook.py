"""The codebook first stage's parts (core/codebook.py): what a page and a query become, and the codebook's form."""

from __future__ import annotations

import numpy as np

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
