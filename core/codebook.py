"""The codebook the fast path's first stage looks pages up by: K unit centroids of the collection's tokens, in the
sketch space (core/pooling.py `sketch`), learned once from the collection's first pages (numpy only).

A page is the sparse vector of the centroids nearest its tokens, a query the sum of its tokens' `probes` nearest
centroids, each weighted by its likeness relative to the token's nearest one (`_likeness`; those weighing less than
QUERY_FLOOR in all left out). Since the soft form (`spread` 2) a page's tokens give their two nearest centroids
such weights too, each centroid keeping the most any token gives it. Their dot product counts how many of the
query's tokens land near some token of the page, and Qdrant answers it from an inverted index: its cost follows
the posting lists the query touches, not the collection's size, where a scan of every page's pooled vectors grows
with it. The centroids live in the sketch space so that a page's assignment reuses the sketch its pooling makes
anyway, and a query's costs a 256-wide product (2 MB of centroids at K = 2048) rather than a 1280-wide one (10 MB).
"""

from __future__ import annotations

import base64

import numpy as np

from core.pooling import sketch
from core.tensors import unit_length
from core.text import SparseVector

TRAIN_STEPS = 5  # Lloyd steps from a random sample of tokens: the ranking barely moves after these
TRAIN_TOKENS = 400_000  # tokens k-means trains on at most
TOKENS_PER_PAGE = 256  # tokens a page adds to the training sample at most
LIKENESS_POWER = 4  # a token's weight on a centroid: (its likeness / its nearest centroid's) ** this
# A query leaves out the centroids its tokens give less than this weight in all: they hardly move a page's score,
# but each costs a posting list to read. A token's nearest centroid weighs 1, so every token keeps one.
QUERY_FLOOR = 0.2


def train(sketched: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """K unit centroids [k, SKETCH_DIM] (float32) of `sketched` tokens by spherical k-means: seeds drawn from the
    tokens, then TRAIN_STEPS steps. Fewer than `k` tokens give one centroid per token."""
    rng = np.random.default_rng(seed)
    x = unit_length(sketched)
    if len(x) > TRAIN_TOKENS:
        x = x[np.sort(rng.choice(len(x), TRAIN_TOKENS, replace=False))]
    k = min(k, len(x))
    centroids = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(TRAIN_STEPS):
        nearest = _nearest(x, centroids)
        sums = np.zeros_like(centroids)
        np.add.at(sums, nearest, x)
        counts = np.bincount(nearest, minlength=k)
        # an empty centroid keeps its place: it costs an unused posting list, nothing else
        centroids = np.where(counts[:, None] > 0, unit_length(sums), centroids)
    return np.ascontiguousarray(centroids, dtype=np.float32)


def _nearest(x: np.ndarray, centroids: np.ndarray, block: int = 8192) -> np.ndarray:
    return np.concatenate([(x[s : s + block] @ centroids.T).argmax(1) for s in range(0, len(x), block)])


def page_vector(sketched: np.ndarray, centroids: np.ndarray, spread: int = 1) -> SparseVector:
    """A page's sparse vector. `spread` 1 (collections made before the soft form): the distinct centroids nearest
    its sketched tokens, weight 1 each (repeats of one kind of token, blank canvas above all, count once). `spread`
    2 or more: each token's `spread` nearest centroids, weighted as a query token weighs them (`_likeness`), each
    centroid at the most any of the page's tokens gives it: a token lying between two cells counts in both."""
    if spread <= 1:
        nearest = np.unique((sketched @ centroids.T).argmax(1))
        return SparseVector(nearest.tolist(), [1.0] * len(nearest))
    top, weights = _likeness(sketched, centroids, spread)
    most = np.zeros(len(centroids), dtype=np.float32)
    np.maximum.at(most, top.ravel(), weights.ravel())
    index = np.flatnonzero(most)
    return SparseVector(index.tolist(), most[index].tolist())


def query_vector(unit: np.ndarray, centroids: np.ndarray, probes: int) -> SparseVector:
    """A query's sparse vector: each unit token's `probes` nearest centroids, weighted by `_likeness`, summed over
    the tokens, those under QUERY_FLOOR left out."""
    top, weights = _likeness(sketch(unit), centroids, probes)
    index, where = np.unique(top.ravel(), return_inverse=True)
    values = np.bincount(where, weights.ravel(), minlength=len(index))
    keep = values >= QUERY_FLOOR
    return SparseVector(index[keep].tolist(), values[keep].tolist())


def _likeness(sketched: np.ndarray, centroids: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Each sketched token's `count` nearest centroids [n, count] and their weights: likeness to the token relative
    to its nearest centroid's, to the power LIKENESS_POWER (negative likeness counts 0). Each token gives its
    nearest centroid 1 and a near tie almost as much, whatever its likeness in absolute terms: weighted by that,
    tokens lying near some centroid outvoted those between centroids (README, "Search at scale")."""
    sims = sketched @ centroids.T
    count = min(count, sims.shape[1])
    top = np.argpartition(-sims, count - 1, axis=1)[:, :count]
    likeness = np.take_along_axis(sims, top, 1).clip(0)
    best = likeness.max(1, keepdims=True)
    return top, np.divide(likeness, best, out=np.zeros_like(likeness), where=best > 0) ** LIKENESS_POWER


def encode(centroids: np.ndarray) -> str:
    """Centroids as the codebook point keeps them: float16, base64 (K = 2048: 1.4 MB of payload)."""
    return base64.b64encode(centroids.astype("<f2").tobytes()).decode("ascii")


def decode(text: str, dim: int) -> np.ndarray:
    values = np.frombuffer(base64.b64decode(text), dtype="<f2").astype(np.float32)
    return unit_length(values.reshape(-1, dim))
