"""The small vectors the fast search path ranks by, derived from a page's token set (numpy only).

DeepSeek-OCR-2's tokens are the outputs of learned queries in rough reading order, not a spatial grid, so the
row/column pooling of Qdrant's ColPali recipe does not apply. Two poolings that do:
- `cluster`: spherical k-means over the page's unit-length tokens, seeded by farthest points (deterministic).
  Similar tokens - repeated blank canvas above all - share one pooled vector wherever
  they sit, so the pooled set spends its vectors on content.
- `window`: means of consecutive runs of tokens along the sequence.
`dense_vector` is the single vector per page for the HNSW first stage: the normalised mean of the unit tokens.
`muvera_fde` (MUVERA fixed-dimensional encoding) is the other first stage on offer (Settings.first_stage).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from core.tensors import unit_length

POOLINGS = ("cluster", "window")


def pooled_count(n: int, pool_size: float) -> int:
    """How many pooled vectors a page of `n` tokens gets: about one per `pool_size` tokens."""
    return max(1, min(n, math.ceil(n / pool_size)))


SKETCH_DIM = 256  # how alike two tokens are is judged on a fixed random projection to this width


def sketch(unit: np.ndarray) -> np.ndarray:
    """Unit rows projected to SKETCH_DIM dimensions (a fixed random rotation, seeded by the width) and made unit
    length again: dot products of sketches follow those of the rows within a few hundredths, at a fraction of the
    cost for 1280-dimension tokens. Rows of SKETCH_DIM dimensions or fewer are their own sketch."""
    unit = np.asarray(unit, dtype=np.float32)
    dim = unit.shape[1]
    return unit if dim <= SKETCH_DIM else unit_length(unit @ _rotation(dim))


@functools.lru_cache(maxsize=8)
def _rotation(dim: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng([7, dim]).standard_normal((dim, SKETCH_DIM)).astype(np.float32))
    return np.ascontiguousarray(q, dtype=np.float32)


def pool_tokens(
    tokens: np.ndarray,
    pool_size: float = 8,
    method: str = "cluster",
    iterations: int = 10,
    sketched=None,
    seeds=None,
    gram=None,
    unit: bool = False,
    count: int | None = None,
) -> np.ndarray:
    """A page's pooled multivector: about n / pool_size unit-length vectors [k, dim] (float32), or `count` of them
    (then `pool_size` is not used). `sketched`, `seeds` and `gram` (the page's sketch, farthest-point order and
    sketch likeness matrix) may be passed in when at hand; `unit`: the tokens are unit-length rows already."""
    x = np.asarray(tokens, dtype=np.float32) if unit else unit_length(tokens)
    n = x.shape[0]
    k = pooled_count(n, pool_size) if count is None else max(1, min(n, count))
    if method == "window":
        bounds = np.linspace(0, n, k + 1).round().astype(int)
        return unit_length(np.add.reduceat(x, bounds[:-1], axis=0))
    if method != "cluster":
        raise ValueError(f"unknown pooling {method!r}; use one of {', '.join(POOLINGS)}")
    sk = sketch(x) if sketched is None else sketched
    seeds = spread_seeds(sk, k) if seeds is None else seeds[:k]
    # k-means on the sketches; the pooled vectors are then the members' mean in full
    centres = sk[seeds].copy()
    assign = np.zeros(n, dtype=np.int64)
    for step in range(iterations):
        # The first centres are seed rows, whose likeness to every row the gram matrix already holds (taken into
        # a row-major copy: an indexed view of its columns is column-major, and argmax along its rows slow).
        likeness = np.take(gram, seeds, axis=1) if step == 0 and gram is not None else sk @ centres.T
        moved = np.argmax(likeness, axis=1)
        if step and np.array_equal(moved, assign):
            break
        assign = moved
        if step + 1 < iterations:
            sums, filled = _group_sums(sk, assign, k)
            centres[filled] = unit_length(sums[filled])  # an empty cluster keeps its seed
    sums, filled = _group_sums(x, assign, k)
    pooled = x[seeds].copy()
    pooled[filled] = unit_length(sums[filled])
    return pooled


GROUP_LAYERS = 8  # group members added a layer at a time; the rest of a bigger group is summed whole


def _group_sums(rows: np.ndarray, assign: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum of the rows in each of k groups, and which groups have any."""
    counts = np.bincount(assign, minlength=k)
    grouped = rows[np.argsort(assign, kind="stable")]
    starts = np.cumsum(counts) - counts
    sums = np.zeros((k, rows.shape[1]), dtype=np.float32)
    # Most groups are small: add the j-th member of every group that has one, a layer at a time (one vectorised add
    # each, where reduceat would loop over the groups); the few big groups (blank canvas) add up their remainder.
    filled = np.flatnonzero(counts)
    sums[filled] = grouped[starts[filled]]  # every group's first member: a copy, nothing to add to yet
    for j in range(1, min(GROUP_LAYERS, int(counts.max(initial=0)))):
        have = np.flatnonzero(counts > j)
        sums[have] += grouped[starts[have] + j]
    for g in np.flatnonzero(counts > GROUP_LAYERS):
        sums[g] += grouped[starts[g] + GROUP_LAYERS : starts[g] + counts[g]].sum(axis=0)
    return sums, counts > 0


def spread_seeds(sketched: np.ndarray, k: int, gram=None) -> np.ndarray:
    """Farthest-point order (deterministic): the first token, then each time the token least like any chosen so far.
    Every distinct direction gets a seed before any direction gets two, so k-means does not merge them, and a mass
    of near-identical tokens (blank canvas) takes one seed, not one per window. The first j of k seeds are the
    seeds for j."""
    return farthest_points(sketched, k, gram)[0]


def farthest_points(sketched: np.ndarray, k: int, gram=None) -> tuple[np.ndarray, np.ndarray]:
    """`spread_seeds`' k seeds, and how well each prefix of them covers the page: reach[j] is the least likeness of
    any token to its most alike of the first j + 1 seeds (so `covering` can tell how many seeds leave no token
    farther than a given likeness from one)."""
    if gram is not None or k > 64:  # many seeds: one matrix product of all rows beats a product per seed
        gram = sketched @ sketched.T if gram is None else gram

        def likeness(i: int) -> np.ndarray:
            return gram[i]
    else:

        def likeness(i: int) -> np.ndarray:
            return sketched @ sketched[i]

    seeds = np.zeros(k, dtype=np.int64)
    reach = np.zeros(k, dtype=np.float32)
    closest = likeness(0).copy()
    for j in range(1, k):
        seeds[j] = int(np.argmin(closest))
        reach[j - 1] = closest[seeds[j]]  # the least covered token is the next seed
        np.maximum(closest, likeness(seeds[j]), out=closest)
    if k:
        reach[k - 1] = closest.min()
    return seeds, reach


def covering(reach: np.ndarray, likeness: float) -> int:
    """How many of the farthest-point seeds it takes for every token to be at least `likeness` alike to one (all
    of them where even they do not)."""
    enough = np.flatnonzero(reach >= likeness)
    return int(enough[0]) + 1 if enough.size else len(reach)


def spread_order(unit: np.ndarray, keep: int, seeds=None) -> np.ndarray:
    """An order of a page's unit rows whose first `keep` rows cover its directions best (farthest-point selection:
    every other row is as alike as possible to one of them), then the rest; each part in the rows' own order.
    Exact MaxSim over the first `keep` rows then misses least of MaxSim over all of them."""
    chosen = np.zeros(len(unit), dtype=bool)
    chosen[spread_seeds(sketch(unit), keep) if seeds is None else seeds[:keep]] = True
    return np.concatenate([np.flatnonzero(chosen), np.flatnonzero(~chosen)])


def dense_vector(tokens: np.ndarray) -> np.ndarray:
    """One vector per page (or query) for the first stage: the normalised mean of its unit-length tokens."""
    return unit_length(unit_length(tokens).mean(axis=0))


def maxsim(query: np.ndarray, page: np.ndarray) -> float:
    """Late-interaction score: for each query row, its best dot product with a page row, summed."""
    return float(np.max(np.asarray(query, np.float32) @ np.asarray(page, np.float32).T, axis=1).sum())


def keep_mask(tokens: np.ndarray, reference: np.ndarray, similarity: float) -> np.ndarray:
    """True for the tokens to keep: those whose cosine likeness to every reference token (e.g. the tokens of a
    blank canvas) stays below `similarity`. Never drops them all: a query of blank canvas only keeps every token."""
    likeness = unit_length(tokens) @ unit_length(reference).T
    keep = likeness.max(axis=1) < similarity
    return keep if keep.any() else np.ones(len(keep), dtype=bool)


def muvera_size(reps: int = 10, bits: int = 4, proj: int = 16) -> int:
    return reps * (1 << bits) * proj


def muvera_fde(
    tokens: np.ndarray, *, query: bool, reps: int = 10, bits: int = 4, proj: int = 16, seed: int = 0
) -> np.ndarray:
    """MUVERA fixed-dimensional encoding (Dhulipala et al. 2024): per repetition, SimHash the tokens into 2**bits
    buckets and project each bucket's sum (query) or mean (page; empty buckets take the nearest token) to `proj`
    dimensions. The dot product of a query FDE with a page FDE approximates their MaxSim. Size reps*2**bits*proj."""
    x = unit_length(tokens)
    dim = x.shape[1]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(reps):
        planes = rng.standard_normal((dim, bits)).astype(np.float32)
        projection = rng.choice([-1.0, 1.0], size=(dim, proj)).astype(np.float32) / math.sqrt(proj)
        codes = (x @ planes > 0).astype(np.int64) @ (1 << np.arange(bits))
        members = (codes[None, :] == np.arange(1 << bits)[:, None]).astype(np.float32)
        buckets = members @ x
        counts = np.bincount(codes, minlength=1 << bits)
        if not query:
            buckets[counts > 0] /= counts[counts > 0, None]
            empty = np.flatnonzero(counts == 0)
            if empty.size:
                # the token whose code is nearest (Hamming) to each empty bucket stands in for it
                hamming = np.array([[bin(int(b) ^ int(c)).count("1") for c in codes] for b in empty])
                buckets[empty] = x[hamming.argmin(axis=1)]
        out.append((buckets @ projection).ravel())
    return np.concatenate(out)
