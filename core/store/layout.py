"""How the fast search path's vectors are derived from a page's tokens, and how deep each stage looks.

The derivation (`BUILT` fields) is fixed when a collection is created and kept in its record, so every page of a
collection is pooled alike; the prefetch depths are read from the settings on every open. Defaults: Settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from config import Settings, defaults
from core.codebook import page_vector
from core.pooling import (
    covering,
    dense_vector,
    farthest_points,
    muvera_fde,
    muvera_size,
    pool_tokens,
    pooled_count,
    sketch,
    spread_order,
)
from core.tensors import unit_length

POOLED = "pooled"  # about one pooled unit vector per `pool_size` tokens: the coarse scan, quantized, in RAM
FINE = "pooled_fine"  # about one per `fine_pool_size` tokens, at most `fine_max`: the second stage, quantized, in RAM
SIGN = 255  # a sign code's value for a positive component (0 for the rest): binary quantization keeps values > 0
CENTROIDS = "centroids"  # the codebook's centroids nearest a page's tokens: the first stage, an inverted index
DENSE = "dense"  # collections with a "mean" or "muvera" first stage: one vector per page, HNSW-indexed
FINE_ITERATIONS = 2  # k-means steps for the fine pooled vectors: from farthest-point seeds, two steps suffice


@dataclass(frozen=True)
class SearchLayout:
    pooling: str
    pool_size: int
    pooled_quantization: bool
    hnsw_m: int
    prefetch_dense: int
    prefetch_pooled: int
    first_stage: str
    exact_below: int = 0  # collections of at most this many pages are searched exactly
    probes: int = 1  # dense first stage: query vectors (the query's mean, then the means of its token groups)
    fine_pool_size: float = 0  # "pooled" first stage: tokens per fine pooled vector
    prefetch_share: float = 0.0  # the first stage hands on at least this share of the collection's pages
    query_pool_size: float = 1.0  # the first stage scans with the query's tokens pooled to one per this many
    prefetch_dim: int = 0  # the token dimension the depths are set for: narrower binary codes look deeper (0: never)
    sign_codes: bool = True  # binary-quantized pooled vectors are stored as their sign codes (uint8), not float16
    prefetch_at: int = 0  # the collection size `prefetch_dense` is set for; the depth grows as its square root
    codebook: int = 0  # centroids of the codebook first stage (core/codebook.py); 0: the coarse scan alone
    codebook_pages: int = 1024  # the codebook is learned once the collection holds this many pages
    prefetch_codebook: int = 150  # pages the codebook first stage hands on at `prefetch_at` pages
    codebook_probes: int = 4  # centroids each query token looks up
    fine_max: int = 0  # "pooled" first stage: at most this many fine pooled vectors a page (0: no cap)
    codebook_spread: int = 1  # centroids each page token gives weight to (core/codebook.py); 1: its nearest, weight 1
    fine_likeness: float = 1.0  # fewer fine vectors where fewer leave every token this alike to one; 1: never

    BUILT = (
        "pooling",
        "pool_size",
        "pooled_quantization",
        "hnsw_m",
        "first_stage",
        "fine_pool_size",
        "fine_max",
        "sign_codes",
        "codebook",
        "codebook_spread",
        "fine_likeness",
    )

    @classmethod
    def from_settings(cls, s: Settings | None = None) -> "SearchLayout":
        s = s or defaults()
        return cls(
            s.pooling,
            s.pool_size,
            s.pooled_quantization,
            s.hnsw_m,
            s.prefetch_dense,
            s.prefetch_pooled,
            s.first_stage,
            s.exact_below,
            s.first_stage_probes,
            s.fine_pool_size,
            s.prefetch_share,
            s.query_pool_size,
            s.prefetch_dim,
            s.sign_codes,
            s.prefetch_at,
            s.codebook_size if s.first_stage == "pooled" else 0,
            s.codebook_pages,
            s.prefetch_codebook,
            s.codebook_probes,
            s.fine_max,
            s.codebook_spread,
            s.fine_likeness,
        )

    @property
    def pooled_first(self) -> bool:
        """The first stage scans every page's coarse pooled vectors (binary codes in RAM), the second ranks its
        survivors by the fine ones; else (collections made before) the first stage is HNSW over a dense vector."""
        return self.first_stage == "pooled"

    @property
    def coarse(self) -> bool:
        """Pages have coarse pooled vectors, which the first stage scans: collections made without a codebook. Where
        one is built, the codebook is the first stage (core/codebook.py); before it is learned such a collection is
        searched exactly or, past `exact_below` pages, by the fine stage over every page."""
        return self.pooled_first and not self.codebook

    @property
    def coded(self) -> bool:
        """The pooled vectors are stored as sign codes: uint8, SIGN where the pooled value is positive, else 0. Only
        their binary copies are ever scored (`rescore=False`), and binary quantization keeps exactly that sign, so
        the codes give the same scores as float16 originals at half their bytes on disk. Queries to them are sign
        codes too (`codes`): the engine compares a query in the stored type."""
        return self.sign_codes and self.pooled_first and self.pooled_quantization

    @property
    def multivector_stages(self) -> int:
        """How many stages of a fast visual query carry the query's rows (the exact one included)."""
        return 3 if self.coarse else 2

    @property
    def muvera(self) -> bool:
        return self.first_stage == "muvera"

    def dense_size(self, dim: int) -> int:
        return muvera_size() if self.muvera else dim

    def dense_query(self, tokens: np.ndarray) -> list[float]:
        """The first stage's query vector: the query's mean vector, or its MUVERA encoding (a sum, not a mean)."""
        return (muvera_fde(tokens, query=True) if self.muvera else dense_vector(tokens)).tolist()

    def dense_probes(self, tokens: np.ndarray) -> list[list[float]]:
        """The first stage's query vectors. A query that paraphrases several parts of a page is a mix of their
        directions, and its mean alone favours pages holding all of them: the means of its token groups (spherical
        k-means into `probes - 1` groups) also find pages strong in one part. MUVERA encodes the whole set: one."""
        first = self.dense_query(tokens)
        groups = min(self.probes - 1, len(tokens) // 4)
        if self.muvera or groups < 2:
            return [first]
        centres = pool_tokens(tokens, math.ceil(len(tokens) / groups), "cluster")
        return [first, *(dense_vector(c[None, :]).tolist() for c in centres)]

    def coarse_query(self, tokens: np.ndarray) -> np.ndarray:
        """The query the coarse scan scores every page with: its tokens pooled by the same k-means as a page's, one
        vector per `query_pool_size` tokens. The scan costs in proportion to the query's rows, and it only has to
        keep the right pages among the first stage's survivors: the later stages score every query token."""
        if self.query_pool_size <= 1:
            return tokens
        # A query's few rows cluster in full for less than sketching them costs (core/pooling.py `sketch`).
        return pool_tokens(tokens, self.query_pool_size, "cluster", sketched=unit_length(tokens))

    def built(self) -> dict:
        return {k: getattr(self, k) for k in self.BUILT}

    def adopt(self, built: dict) -> "SearchLayout":
        """This layout with the derivation a collection was built with (collections from before MUVERA: mean)."""
        older = {
            "first_stage": "mean",
            "fine_pool_size": 0,
            "fine_max": 0,
            "sign_codes": False,
            "codebook": 0,
            "codebook_spread": 1,
            "fine_likeness": 1.0,
        }
        return replace(self, **{**older, **{k: built[k] for k in self.BUILT if k in built}})

    def limits(self, limit: int, pages: int = 0, dim: int = 0, codebook: bool = False) -> tuple[int, int]:
        """(first stage, stage before exact) prefetch limits for a query asking for `limit` hits in a collection of
        `pages` pages of `dim`-dimension tokens. The coarse scan keeps `first_depth(pages)` pages, or
        `prefetch_share` of them where that is more; the binary stages grow by `depth_scale(dim)`. The codebook
        first stage (`codebook`) keeps `first_depth(pages, prefetch_codebook)`: its scores are not binary codes."""
        scale = self.depth_scale(dim)
        pooled = max(limit, math.ceil(scale * self.prefetch_pooled))
        if codebook:
            first = math.ceil(self.first_depth(pages, self.prefetch_codebook))
        else:
            first = math.ceil(scale * max(self.first_depth(pages), self.prefetch_share * pages))
        return max(pooled, first), pooled

    def first_depth(self, pages: int, depth: int | None = None) -> float:
        """`depth` (`prefetch_dense`) at `prefetch_at` pages, times sqrt(pages / prefetch_at). A page of the exact
        top 10 that the first stage misorders falls behind more pages in a larger collection, but fewer than in
        proportion: measured on the graded set (README, "Search at scale"), the coarse scan's depth that keeps the
        same recall went from 350 at 2,000 pages to about 250 at 1,000 and 800 at 10,000."""
        depth = self.prefetch_dense if depth is None else depth
        if not self.prefetch_at or not pages:
            return depth
        return depth * math.sqrt(pages / self.prefetch_at)

    def depth_scale(self, dim: int) -> float:
        """How much deeper than set the binary-coded stages look in a collection of `dim`-dimension tokens. A binary
        code holds one bit a dimension; its scores' error grows as 1 / sqrt(bits), and with it the number of pages
        that can pass a page of the exact top 10. The depths are set for `prefetch_dim` dimensions: narrower codes
        look sqrt(prefetch_dim / dim) times deeper, wider ones as deep."""
        binary = self.pooled_first and self.pooled_quantization
        return max(1.0, math.sqrt(self.prefetch_dim / dim)) if binary and self.prefetch_dim and dim else 1.0

    def fine_size(self, n: int, keep: int) -> float:
        """Tokens per fine pooled vector for a page of `n` tokens: `fine_pool_size`, or more where that many
        vectors would be over `fine_max` or would not fit one multivector of `keep` rows (then just over n / the
        cap, for at most that many vectors). A tiled page's tokens repeat its views: past a few hundred fine vectors
        more no longer changes which pages the fine stage hands on (README, "Search at scale")."""
        cap = min(keep, self.fine_max) if self.fine_max else keep
        return max(self.fine_pool_size, math.nextafter(n / cap, math.inf))

    def derive(
        self, unit: np.ndarray, keep: int, centroids: np.ndarray | None = None
    ) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        """The fast path's vectors of one page, from its unit-length tokens (at most `keep` rows each), and - when
        it has more than `keep` rows - the order of its rows that puts the `keep` covering it best first
        (core/pooling.py). All use one farthest-point order on the page's sketch, and the codebook vector (given
        the collection's `centroids`: none before they are learned) the sketch itself."""
        n = len(unit)
        sketched = sketch(unit)
        gram = sketched @ sketched.T  # every pair's likeness: the seeds and each pooling's first k-means step use it
        most_fine = pooled_count(n, self.fine_size(n, keep)) if self.pooled_first else 0
        coarse = pooled_count(n, self.pool_size) if not self.pooled_first or self.coarse else 0
        seeds, reach = farthest_points(sketched, max(coarse, most_fine, keep if n > keep else 0), gram)
        # Fewer fine vectors where fewer seeds leave every token fine_likeness alike to one: a page that repeats a few
        # directions (a word written again, blank canvas, rules) gets one vector for each, not one per fine_size
        # tokens. The fine stage costs in proportion to its vectors, and a copy adds nothing to MaxSim that its
        # likeness to the others does not already give; a page of many distinct tokens keeps one per fine_size.
        fine = min(most_fine, covering(reach, self.fine_likeness)) if self.fine_likeness < 1 else most_fine
        order = spread_order(unit, keep, seeds) if n > keep else None
        shared = {"sketched": sketched, "seeds": seeds, "gram": gram, "unit": True}
        pooled = pool_tokens(unit, self.pool_size, self.pooling, **shared) if coarse else None
        if self.pooled_first:
            finer = pool_tokens(unit, method=self.pooling, iterations=FINE_ITERATIONS, count=fine, **shared)
            form = codes if self.coded else lambda x: x.astype(np.float16)
            derived = {FINE: form(finer)}
            if self.coarse:
                derived[POOLED] = form(pooled)
            if centroids is not None:
                derived[CENTROIDS] = page_vector(sketched, centroids, self.codebook_spread)
            return order, derived
        dense = muvera_fde(unit, query=False) if self.muvera else dense_vector(unit)
        return order, {POOLED: pooled.astype(np.float16), DENSE: dense.astype(np.float16)}


def codes(vectors: np.ndarray) -> np.ndarray:
    """Sign codes of `vectors` (uint8): SIGN where a value is positive, else 0."""
    if vectors.dtype == np.float16:
        # numpy compares float16 values one at a time (0.28 ms for a 20-row query); on their bits, positive is
        # 1 to 0x7C00 (the smallest subnormal to +inf: zero wraps round, the sign bit and NaNs lie above)
        positive = (vectors.view(np.uint16) - np.uint16(1)) < np.uint16(0x7C00)
    else:
        positive = vectors > 0
    return positive.view(np.uint8) * np.uint8(SIGN)
