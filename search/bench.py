"""The search benchmark behind `tokendirect bench search`: the fast path against exact MaxSim and a plain scan.

Synthetic pages have the real shape (257 tokens x 1280 by default) and a fixed structure, so that exact MaxSim has
a real ranking to reproduce rather than near-ties:
- 40% of a page's tokens lie around 256 "layout" centroids shared by all pages, 30% around the 16 centroids of its
  topic (topics of 10 consecutive pages), 30% around 8 centroids of its own; the tokens come in shuffled order;
- centroids are random unit vectors; the Gaussian noise has sigma 0.5 in norm (sigma / sqrt(dim) per dimension),
  and every token is L2-normalised, then rounded to bfloat16 like the encoder's output;
- a query for page i is 12 tokens around its topic's centroids and 8 around its own, noise sigma 0.3.
So a query's exact top 10 is its topic, its own page first. Everything is seeded: the same N gives the same pages.

Reported in one run: recall@10 of the fast path against exact MaxSim, p50/p95 latency of the fast path, of exact
MaxSim in Qdrant and of an in-memory torch MaxSim scan over every page (what byaldi does), their ratios, the exact
score gap between ranks 10 and 11, and RAM-resident and disk bytes per page.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from config import Settings
from core.errors import UsageError
from core.model import ModelIdentity
from core.pooling import pooled_count
from core.store import EdgeStore, PagePoint, PageStore, SearchLayout, open_store
from core.tensors import bfloat16_values, unit_length
from search.plan import search

TOP = 10
BATCH = 16  # pages per upsert while building


@dataclass(frozen=True)
class SyntheticSpec:
    tokens: int = 257
    dim: int = 1280
    layout_centroids: int = 256
    topic_size: int = 10
    topic_centroids: int = 16
    own_centroids: int = 8
    layout_share: float = 0.4
    topic_share: float = 0.3
    page_noise: float = 0.5
    query_topic_tokens: int = 12
    query_own_tokens: int = 8
    query_noise: float = 0.3
    seed: int = 0


class SyntheticPages:
    """Pages and queries of `SyntheticSpec`'s structure; page i is the same whatever N is."""

    def __init__(self, spec: SyntheticSpec = SyntheticSpec()):
        self.spec = spec
        self.layout = self._centroids(0, 0, spec.layout_centroids)

    def _centroids(self, kind: int, key: int, count: int) -> np.ndarray:
        rng = np.random.default_rng([self.spec.seed, kind, key])
        return unit_length(rng.standard_normal((count, self.spec.dim), dtype=np.float32))

    def _noisy(self, rng, centres: np.ndarray, sigma: float) -> np.ndarray:
        noise = rng.standard_normal(centres.shape, dtype=np.float32) * np.float32(sigma / math.sqrt(self.spec.dim))
        return bfloat16_values(unit_length(centres + noise))

    def page(self, i: int) -> np.ndarray:
        s = self.spec
        rng = np.random.default_rng([s.seed, 3, i])
        n_layout = round(s.layout_share * s.tokens)
        n_topic = round(s.topic_share * s.tokens)
        n_own = s.tokens - n_layout - n_topic
        topic = self._centroids(1, i // s.topic_size, s.topic_centroids)
        own = self._centroids(2, i, s.own_centroids)
        centres = np.concatenate(
            [
                self.layout[rng.integers(0, len(self.layout), n_layout)],
                topic[rng.integers(0, len(topic), n_topic)],
                own[rng.integers(0, len(own), n_own)],
            ]
        )
        return self._noisy(rng, centres[rng.permutation(len(centres))], s.page_noise)

    def query(self, i: int, key: int) -> np.ndarray:
        s = self.spec
        rng = np.random.default_rng([s.seed, 4, i, key])
        topic = self._centroids(1, i // s.topic_size, s.topic_centroids)
        own = self._centroids(2, i, s.own_centroids)
        centres = np.concatenate(
            [
                topic[rng.integers(0, len(topic), s.query_topic_tokens)],
                own[rng.integers(0, len(own), s.query_own_tokens)],
            ]
        )
        return self._noisy(rng, centres, s.query_noise)


def synthetic_identity(spec: SyntheticSpec) -> ModelIdentity:
    return ModelIdentity("token-direct/bench-synthetic", f"seed-{spec.seed}", spec.dim, max_tokens=spec.tokens)


def synthetic_point(i: int, tokens: np.ndarray) -> PagePoint:
    from core.pages import point_id

    doc = f"synthetic-topic-{i // 10:05d}"
    return PagePoint(
        point_id(doc, i + 1),
        {"doc_id": doc, "source": f"synthetic:{i}", "page": i + 1, "n_tokens": int(tokens.shape[0])},
        tokens,
    )


# -- the in-memory scan ----------------------------------------------------------------------------------------


class TorchScan:
    """Every page's unit tokens in RAM as one float16 tensor, MaxSim computed by torch over all of them."""

    def __init__(self, chunk_pages: int = 256):
        self.chunk_pages = chunk_pages
        self._pages: list = []
        self._stacked = None

    def add(self, tokens: np.ndarray) -> None:
        import torch

        self._pages.append(torch.from_numpy(unit_length(tokens).astype(np.float16)))
        self._stacked = None

    def _stack(self):
        import torch

        if self._stacked is None:
            longest = max(p.shape[0] for p in self._pages)
            # shorter pages repeat their first row: a duplicate row never changes a MaxSim score
            padded = [
                p if p.shape[0] == longest else torch.cat([p, p[:1].expand(longest - p.shape[0], -1)])
                for p in self._pages
            ]
            self._stacked = torch.stack(padded)
            self._pages = list(self._stacked)
        return self._stacked

    @property
    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self._pages)

    def search(self, query: np.ndarray, limit: int) -> list[tuple[int, float]]:
        import torch

        pages = self._stack()
        q = torch.from_numpy(unit_length(query))
        scores = torch.empty(pages.shape[0])
        with torch.inference_mode():
            for start in range(0, pages.shape[0], self.chunk_pages):
                chunk = pages[start : start + self.chunk_pages].float()
                scores[start : start + chunk.shape[0]] = torch.einsum("ptd,qd->pqt", chunk, q).amax(-1).sum(-1)
        top = torch.topk(scores, min(limit, len(scores)))
        return list(zip(top.indices.tolist(), top.values.tolist(), strict=True))


# -- measuring -------------------------------------------------------------------------------------------------


def _ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(samples, q)) * 1000, 3)


def storage_bytes(path: Path) -> dict[str, int]:
    """Bytes on disk of an embedded shard, and of the parts search keeps in RAM: the dense vectors and their HNSW
    graph, and the pooled vectors' int8 copy (or the pooled vectors themselves when not quantized)."""
    disk = ram = 0
    for root, _, files in os.walk(path):
        rel = Path(root).relative_to(path).as_posix()
        for name in files:
            st = os.stat(Path(root) / name)
            size = min(st.st_size, st.st_blocks * 512)  # preallocated, never written chunks take no disk
            disk += size
            quantized = "vector_storage-pooled" in rel and name.startswith("quantized")
            if "vector_storage-dense" in rel or "vector_index-dense" in rel or quantized:
                ram += size
    if ram and not any("quantized" in n for _, _, fs in os.walk(path) for n in fs):
        ram += sum(
            min(os.stat(Path(r) / n).st_size, os.stat(Path(r) / n).st_blocks * 512)
            for r, _, fs in os.walk(path)
            if "vector_storage-pooled" in r
            for n in fs
        )
    return {"disk": disk, "ram": ram}


def estimated_ram_bytes(store: PageStore, tokens: int, dim: int) -> int:
    """What the fast path keeps in RAM per page, from the layout (for engines whose files cannot be read)."""
    layout = store.layout
    pooled = pooled_count(tokens, layout.pool_size) * (dim + 4 if layout.pooled_quantization else 2 * dim)
    return 2 * layout.dense_size(dim) + 2 * layout.hnsw_m * 4 + pooled


@dataclass
class SearchBench:
    pages: int
    queries: int
    tokens_per_page: float
    recall_at_10: float
    fast_p50_ms: float
    fast_p95_ms: float
    exact_p50_ms: float
    exact_p95_ms: float
    scan_p50_ms: float | None
    scan_p95_ms: float | None
    speedup_vs_exact: float
    speedup_vs_scan: float | None
    exact_gap_10_11: float  # mean score gap between ranks 10 and 11 of the exact result
    exact_gap_10_11_relative: float  # ... as a fraction of the rank-10 score
    token_bytes_per_page: float  # the full token set as float16
    ram_bytes_per_page: float
    ram_fraction: float  # ram_bytes_per_page / token_bytes_per_page
    disk_bytes_per_page: float | None
    bytes_measured: bool  # from the embedded shard's files (else estimated from the layout)
    build_s: float
    prefetch_dense: int
    prefetch_pooled: int
    pooling: str
    pool_size: int
    first_stage: str
    source: str

    def to_dict(self) -> dict:
        return asdict(self)


def measure(
    store: PageStore,
    queries: list[np.ndarray],
    scan: TorchScan | None,
    build_s: float,
    source: str,
    tokens_per_page: float,
    dim: int,
) -> SearchBench:
    pages = store.count()
    fast_t, exact_t, scan_t, recalls, gaps, rel_gaps = [], [], [], [], [], []
    for k, q in enumerate([queries[0], *queries]):  # the first query warms caches and is not counted
        t = time.perf_counter()
        exact = search(store, q, TOP + 1, exact=True)
        t_exact = time.perf_counter() - t
        t = time.perf_counter()
        fast = search(store, q, TOP)
        t_fast = time.perf_counter() - t
        t_scan = None
        if scan is not None:
            t = time.perf_counter()
            scan.search(q, TOP)
            t_scan = time.perf_counter() - t
        if k == 0:
            continue
        exact_t.append(t_exact)
        fast_t.append(t_fast)
        if t_scan is not None:
            scan_t.append(t_scan)
        truth = {p.point_id for p in exact[:TOP]}
        recalls.append(len(truth & {p.point_id for p in fast}) / max(1, min(TOP, len(truth))))
        if len(exact) > TOP:
            gap = exact[TOP - 1].score - exact[TOP].score
            gaps.append(gap)
            rel_gaps.append(gap / exact[TOP - 1].score if exact[TOP - 1].score else 0.0)
    token_bytes = tokens_per_page * dim * 2
    files = storage_bytes(store.path) if isinstance(store, EdgeStore) else None
    if files and pages:
        ram, disk = files["ram"] / pages, files["disk"] / pages
    else:
        ram, disk = float(estimated_ram_bytes(store, round(tokens_per_page), dim)), None
    fast_p50, exact_p50 = _ms(fast_t, 50), _ms(exact_t, 50)
    scan_p50 = _ms(scan_t, 50) if scan_t else None
    layout = store.layout
    return SearchBench(
        pages=pages,
        queries=len(queries),
        tokens_per_page=round(tokens_per_page, 1),
        recall_at_10=round(float(np.mean(recalls)), 4),
        fast_p50_ms=fast_p50,
        fast_p95_ms=_ms(fast_t, 95),
        exact_p50_ms=exact_p50,
        exact_p95_ms=_ms(exact_t, 95),
        scan_p50_ms=scan_p50,
        scan_p95_ms=_ms(scan_t, 95) if scan_t else None,
        speedup_vs_exact=round(exact_p50 / fast_p50, 1),
        speedup_vs_scan=round(scan_p50 / fast_p50, 1) if scan_p50 else None,
        exact_gap_10_11=round(float(np.mean(gaps)), 4) if gaps else 0.0,
        exact_gap_10_11_relative=round(float(np.mean(rel_gaps)), 4) if rel_gaps else 0.0,
        token_bytes_per_page=round(token_bytes, 1),
        ram_bytes_per_page=round(ram, 1),
        ram_fraction=round(ram / token_bytes, 4),
        disk_bytes_per_page=round(disk, 1) if disk is not None else None,
        bytes_measured=files is not None,
        build_s=round(build_s, 1),
        prefetch_dense=layout.prefetch_dense,
        prefetch_pooled=layout.prefetch_pooled,
        pooling=layout.pooling,
        pool_size=layout.pool_size,
        first_stage=layout.first_stage,
        source=source,
    )


def synthetic_bench(
    sizes: list[int],
    settings: Settings,
    queries: int = 20,
    spec: SyntheticSpec = SyntheticSpec(),
    workdir: Path | None = None,
    scan: bool = True,
    progress: Callable[[str], None] = lambda message: None,
    on_result: Callable[[SearchBench], None] = lambda result: None,
) -> list[SearchBench]:
    """Build a synthetic collection up to each of `sizes` pages in turn (ascending) and measure at each size.
    In `workdir` a built collection is kept and reused by later runs with the same structure; without one, the
    collection lives in a temporary directory removed afterwards. Each size's result goes to `on_result` as soon as
    it is measured."""
    sizes = sorted(set(sizes))
    temporary = workdir is None
    root = Path(tempfile.mkdtemp(prefix="tokendirect-bench-")) if temporary else Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    marker = root / "bench.json"
    layout = SearchLayout.from_settings(settings).built()
    if layout["first_stage"] == "mean":
        del layout["first_stage"]  # builds kept from before the setting existed stay valid
    about = {"spec": asdict(spec), "layout": layout}
    bench_settings = settings.model_copy(update={"data_dir": root, "qdrant_url": None, "collection": "bench-synthetic"})
    if marker.exists() and json.loads(marker.read_text()).get("about") != about:
        shutil.rmtree(root / "qdrant", ignore_errors=True)  # built with another structure or layout
    built = json.loads(marker.read_text()).get("pages", 0) if marker.exists() else 0
    synth = SyntheticPages(spec)
    results = []
    store = open_store(bench_settings)
    try:
        store.bind(synthetic_identity(spec))
        table = TorchScan() if scan else None
        build_s = 0.0
        for size in sizes:
            built = _trim(store, built, size, spec.topic_size)
            if table is not None:  # the scan holds every page in RAM, as an in-memory index would
                for i in range(len(table._pages), min(built, size)):
                    table.add(synth.page(i))
            start = time.perf_counter()
            for first in range(built, size, BATCH):
                batch = [synth.page(i) for i in range(first, min(size, first + BATCH))]
                store.upsert([synthetic_point(first + j, t) for j, t in enumerate(batch)])
                if table is not None:
                    for t in batch:
                        table.add(t)
                if (first // BATCH) % 32 == 0:
                    progress(f"built {first + len(batch)} of {size} pages")
            built = max(built, size)
            store.optimize()
            build_s += time.perf_counter() - start
            marker.write_text(json.dumps({"about": about, "pages": built}))
            rng = np.random.default_rng([spec.seed, 5, size])
            picks = rng.integers(0, size, queries)
            qs = [synth.query(int(i), k) for k, i in enumerate(picks)]
            progress(f"measuring {queries} queries at {size} pages")
            if store.count() != size:
                raise UsageError(f"the bench collection in {root} holds {store.count()} pages, not {size}")
            results.append(measure(store, qs, table, build_s, "synthetic", spec.tokens, spec.dim))
            on_result(results[-1])
    finally:
        store.close()
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
    return results


def _trim(store: PageStore, built: int, size: int, topic_size: int) -> int:
    """Pages 0..built-1 are known stored; drop any beyond `size` (a larger earlier build, or an interrupted one),
    whole topics at a time, and return how many pages are stored from the start."""
    count = store.count()
    if count == built <= size:
        return built
    keep_topics = min(built, size) // topic_size
    for topic in range(keep_topics, -(-count // topic_size) + 1):
        store.delete_document(f"synthetic-topic-{topic:05d}")
    return keep_topics * topic_size


def collection_bench(
    settings: Settings, queries: int = 20, scan: bool = True, progress: Callable[[str], None] = lambda m: None
) -> SearchBench:
    """Measure on an existing collection: each query is 20 tokens of a stored page, with noise sigma 0.3."""
    with open_store(settings) as store:
        record = store.record()
        if record is None:
            raise UsageError(f"collection {settings.collection!r} does not exist")
        dim = int(record["dim"])
        table = TorchScan() if scan else None
        ids, lengths = [], []
        for batch in store.scroll(batch_size=8, with_tokens=True):
            for p in batch:
                ids.append(p.point_id)
                lengths.append(p.tokens.shape[0])
                if table is not None:
                    table.add(p.tokens)
            progress(f"read {len(ids)} pages")
        if not ids:
            raise UsageError(f"collection {settings.collection!r} holds no pages")
        rng = np.random.default_rng(0)
        qs = []
        for pid in rng.choice(ids, queries):
            tokens = unit_length(store.get(str(pid)).tokens)
            rows = tokens[rng.choice(len(tokens), min(20, len(tokens)), replace=False)]
            noise = rng.standard_normal(rows.shape).astype(np.float32) * np.float32(0.3 / math.sqrt(dim))
            qs.append(unit_length(rows + noise))
        return measure(store, qs, table, 0.0, f"collection {settings.collection}", float(np.mean(lengths)), dim)


def plot(results: list[SearchBench], path: Path) -> None:
    """Latency (log scale) and recall@10 against the number of pages, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'token-direct[test]'") from None
    n = [r.pages for r in results]
    fig, (lat, rec) = plt.subplots(1, 2, figsize=(10, 4))
    lat.plot(n, [r.fast_p50_ms for r in results], "o-", label="fast path p50")
    lat.plot(n, [r.exact_p50_ms for r in results], "s-", label="exact MaxSim p50")
    if all(r.scan_p50_ms for r in results):
        lat.plot(n, [r.scan_p50_ms for r in results], "^-", label="torch scan p50")
    lat.set(xlabel="pages", ylabel="ms", yscale="log", title="query latency")
    lat.legend()
    rec.plot(n, [r.recall_at_10 for r in results], "o-")
    rec.set(xlabel="pages", ylabel="recall@10 vs exact", ylim=(0, 1.02), title="fast-path recall")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- first stages compared ---------------------------------------------------------------------------------------


def first_stage_recall(
    pages: list[np.ndarray], queries: list[np.ndarray], depths: tuple[int, ...] = (20, 50, 100, 200)
) -> dict[str, dict[int, float]]:
    """How much of exact MaxSim's top 10 each candidate first stage keeps within its top `depth` pages (recall@10
    of a prefetch that deep), for: the mean vector, pooled MaxSim (k-means or windows, 8 tokens a vector), and
    MUVERA fixed-dimensional encodings (10 x 16 buckets x 16 = 2560 dims)."""
    from core.pooling import dense_vector, maxsim, muvera_fde, pool_tokens

    units = [unit_length(p) for p in pages]
    encodings = {
        "mean vector": (np.stack([dense_vector(p) for p in units]), lambda q: dense_vector(q)),
        "MUVERA FDE": (np.stack([muvera_fde(p, query=False) for p in units]), lambda q: muvera_fde(q, query=True)),
    }
    pooled = {
        "pooled MaxSim (cluster)": [pool_tokens(p, 8, "cluster") for p in units],
        "pooled MaxSim (window)": [pool_tokens(p, 8, "window") for p in units],
    }
    found: dict[str, dict[int, list[float]]] = {name: {d: [] for d in depths} for name in [*encodings, *pooled]}
    for q in queries:
        q = unit_length(q)
        truth = set(np.argsort([-maxsim(q, p) for p in units], kind="stable")[:TOP].tolist())
        ranked = {name: np.argsort(-(table @ encode(q)), kind="stable") for name, (table, encode) in encodings.items()}
        ranked.update({name: np.argsort([-maxsim(q, p) for p in ps], kind="stable") for name, ps in pooled.items()})
        for name, order in ranked.items():
            for d in depths:
                found[name][d].append(len(truth & set(order[:d].tolist())) / TOP)
    return {name: {d: round(float(np.mean(v)), 3) for d, v in by_depth.items()} for name, by_depth in found.items()}
