"""How `hybrid` fuses the visual and the text ranking: weighted reciprocal rank fusion, as Qdrant computes it, the
weights a search uses, and their calibration on a labelled set.

Qdrant scores a page at 0-based position p of a prefetch with weight w as 1 / ((p + 1) / w + k - 1), summed over
the prefetches that found it. A weight stretches or compresses that prefetch's positions (w = 3: position 2 counts
as position 0 would at w = 1); it does not multiply the score, so doubling every weight changes the ranking, and
with k = 60 no weight lets the text signal's first page stay ahead of its fifth when the visual signal puts the
fifth first: the visual top page adds about 1/60 while the text positions 0 and 4 differ by at most 0.0065. With
a small k the positions weigh far more than k, and a ratio of weights says how the two rankings interleave (README,
"Fusing the signals").

Which weights a search uses: the TOKENDIRECT_HYBRID_* settings when any of them is set, else those calibrated for
the collection and kept in its record (`tokendirect eval --save-weights`), else the settings' defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from config import Settings
from core.clock import utc_now
from core.store.record import FUSION
from core.store.schema import Fusion

SETTINGS = ("hybrid_rrf_k", "hybrid_visual_weight", "hybrid_text_weight")
HIT_DEPTH = 5  # calibration maximises hit@5: a relevant page among the first 5
MRR_DEPTH = 10
# Candidates a calibration tries: the text weight stays 1 (with an integer k and the visual weight free, every
# ranking weighted RRF can give is reachable; see `contribution`).
K_GRID = (1, 2, 3, 5, 10, 20, 60)
VISUAL_GRID = (0.001, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)


def contribution(position: int, weight: float, k: int) -> float:
    """What a page at 0-based `position` of a prefetch adds to its fused score (Qdrant's weighted RRF)."""
    return 0.0 if weight <= 0 else 1.0 / ((position + 1) / weight + k - 1)


@dataclass(frozen=True)
class FusionWeights:
    """Reciprocal rank fusion of the visual and the text ranking: its k and a weight per signal."""

    k: int
    visual: float
    text: float
    source: str = "default"  # where they came from: default, settings, collection, calibrated

    def query(self, with_text: bool = True) -> Fusion:
        """The fused stage's query, for the prefetches (visual, text), or (visual,) when the query has no word."""
        return Fusion("rrf", self.k, (self.visual, self.text) if with_text else (self.visual,))

    def describe(self) -> str:
        return f"RRF k={self.k}, weights visual {self.visual:g} / text {self.text:g} ({self.source})"

    def to_record(self, **about) -> dict:
        return {"method": "rrf", "k": self.k, "weights": {"visual": self.visual, "text": self.text}, **about}

    def to_dict(self) -> dict:
        return {"k": self.k, "visual": self.visual, "text": self.text, "source": self.source}


def from_settings(settings: Settings, source: str = "default") -> FusionWeights:
    s = settings
    return FusionWeights(s.hybrid_rrf_k, s.hybrid_visual_weight, s.hybrid_text_weight, source)


def from_record(record: dict | None) -> FusionWeights | None:
    """The weights calibrated for a collection, from its record (None when it holds none)."""
    stored = (record or {}).get(FUSION)
    if not isinstance(stored, dict) or stored.get("method") != "rrf":
        return None
    weights = stored["weights"]
    return FusionWeights(int(stored["k"]), float(weights["visual"]), float(weights["text"]), "collection")


def resolve(settings: Settings, record: dict | None) -> FusionWeights:
    """The weights a hybrid search uses: settings set explicitly, else the collection's, else the defaults."""
    if any(name in settings.model_fields_set for name in SETTINGS):
        return from_settings(settings, "settings")
    return from_record(record) or from_settings(settings)


def fuse(rankings: Sequence[Sequence[str]], weights: Sequence[float], k: int, limit: int) -> list[str]:
    """The fused order of `rankings` (ids, best first), as Qdrant's fused stage gives it (ties aside)."""
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for position, item in enumerate(ranking):
            scores[item] = scores.get(item, 0.0) + contribution(position, weight, k)
    return sorted(scores, key=lambda item: -scores[item])[:limit]


# -- calibration ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryRankings:
    """One labelled query's two rankings, each as deep as hybrid's prefetch, and its relevant ids."""

    visual: list[str]
    text: list[str]
    relevant: set[str]


@dataclass(frozen=True)
class Calibration:
    weights: FusionWeights
    hit_at_5: float  # of the chosen weights on the queries they were chosen on (optimistic)
    mrr: float
    loo_hit_at_5: float  # leave-one-out: each query ranked with weights chosen on the other queries
    queries: int
    candidates: int

    def to_dict(self) -> dict:
        return {
            "weights": self.weights.to_dict(),
            "hit_at_5": round(self.hit_at_5, 4),
            "mrr": round(self.mrr, 4),
            "loo_hit_at_5": round(self.loo_hit_at_5, 4),
            "queries": self.queries,
            "candidates": self.candidates,
        }


def candidates(default: FusionWeights) -> list[FusionWeights]:
    grid = [FusionWeights(k, v, 1.0, "calibrated") for k in K_GRID for v in VISUAL_GRID]
    return [FusionWeights(default.k, default.visual, default.text, "calibrated")] + grid


def calibrate(queries: Sequence[QueryRankings], default: FusionWeights) -> Calibration:
    """The weights that put a relevant page in the top 5 for the most queries (then the best MRR@10), among
    `candidates`; ties go to the candidate closest to `default`, so a set that cannot tell them apart keeps it."""
    if not queries:
        raise ValueError("calibration needs at least one labelled query")
    pool = candidates(default)
    hits, ranks = [], []  # per candidate, per query
    for c in pool:
        fused = [fuse([q.visual, q.text], [c.visual, c.text], c.k, MRR_DEPTH) for q in queries]
        hits.append([any(i in q.relevant for i in f[:HIT_DEPTH]) for f, q in zip(fused, queries, strict=True)])
        ranks.append([_reciprocal_rank(f, q.relevant) for f, q in zip(fused, queries, strict=True)])
    distance = [_distance(c, default) for c in pool]

    def best(leave_out: int | None = None) -> int:
        def key(i: int):
            h = sum(x for j, x in enumerate(hits[i]) if j != leave_out)
            r = sum(x for j, x in enumerate(ranks[i]) if j != leave_out)
            return (h, round(r, 9), -distance[i])

        return max(range(len(pool)), key=key)

    chosen = best()
    n = len(queries)
    loo = sum(hits[best(j)][j] for j in range(n)) / n if n > 1 else float(hits[chosen][0])
    return Calibration(
        pool[chosen],
        sum(hits[chosen]) / n,
        sum(ranks[chosen]) / n,
        loo,
        n,
        len(pool) - 1,  # the default is a repeat
    )


def random_visual_hit_at_5(
    queries: Sequence[QueryRankings], weights: FusionWeights, pages: Sequence[str], draws: int = 200, seed: int = 0
) -> float:
    """hit@5 of `weights` if the visual ranking were random (a weak signal at its weakest): the mean over `draws`
    random orders of `pages`, each as deep as the queries' visual rankings. Against the text signal's own hit@5, it
    says how much a useless visual signal could cost."""
    import random

    rng = random.Random(seed)
    pages = list(pages)
    hits = 0
    for _ in range(draws):
        for q in queries:
            visual = rng.sample(pages, min(len(q.visual) or len(pages), len(pages)))
            fused = fuse([visual, q.text], [weights.visual, weights.text], weights.k, HIT_DEPTH)
            hits += any(i in q.relevant for i in fused)
    return hits / (draws * len(queries)) if queries else 0.0


def _reciprocal_rank(fused: list[str], relevant: set[str]) -> float:
    return next((1.0 / (i + 1) for i, item in enumerate(fused[:MRR_DEPTH]) if item in relevant), 0.0)


def _distance(c: FusionWeights, default: FusionWeights) -> float:
    return abs(math.log(c.k / default.k)) + abs(math.log((c.visual / c.text) / (default.visual / default.text)))


def record_fields(calibration: Calibration, set_name: str) -> dict:
    """What the collection record keeps of a calibration."""
    return calibration.weights.to_record(
        calibrated_on=set_name,
        queries=calibration.queries,
        hit_at_5=round(calibration.hit_at_5, 4),
        loo_hit_at_5=round(calibration.loo_hit_at_5, 4),
        calibrated_at=utc_now(),
    )
