"""The search benchmark behind `tokendirect bench search`: the fast path against exact MaxSim, its own first stage
alone, a random ranking and an in-memory scan, with latency warm and cold and memory measured.

Synthetic pages have the real shape (257 tokens x 1280 by default; `--tokens 1121` for six-tile pages) and a graded
structure, so that exact MaxSim gives a continuous ranking rather than cluster membership:
- 240 topics share 24 themes: a topic's 24 centroids are random unit vectors pulled towards its theme's (weight
  0.7), so topics of one theme overlap in part. Topics are popular by Zipf's law (some appear on many pages);
- a page is 35% "layout" tokens around 256 centroids shared by all pages (the blank canvas and furniture every page
  has), and 3 to 6 content regions of Dirichlet-drawn sizes, each a different topic: a region takes 6 of its topic's
  24 centroids, each moved by a page-specific offset of norm 0.3 to 1.0 (how this page words it);
- tokens carry Gaussian noise of norm 0.5 (sigma / sqrt(dim) per dimension), are L2-normalised and rounded to
  bfloat16 like the encoder's output, in shuffled order;
- a query paraphrases two regions of one page: 10 tokens around each region's centroids, moved again (norm 0.5),
  noise 0.3. Its page comes first; then come pages sharing its topics through overlapping centroid subsets, at
  scores that fall off gradually (ranks 10 and 11 differ by about 1%), so recall@10 counts near-ties.
The query's two regions are a small part of any page's mean (layout and other regions dominate it), so the mean
vector alone finds well under half of the exact top 10: a fast path that relied on it would score badly.
Everything is seeded: the same N gives the same pages, and page i is the same whatever N is.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from config import Settings
from core.errors import UsageError
from core.model import ModelIdentity
from core.pooling import pooled_count
from core.store import EdgeStore, PagePoint, PageStore, SearchLayout, open_store
from core.store.layout import FINE
from core.store.schema import Stage, rows_per_vector
from core.tensors import bfloat16_values, one_blas_thread, unit_length
from search.plan import fast_path_pages, first_stage, search, visual

TOP = 10
BATCH = 16  # pages per upsert while building
DOC_PAGES = 10  # synthetic pages per document: a build is cut back whole documents at a time


@dataclass(frozen=True)
class SyntheticSpec:
    tokens: int = 257
    dim: int = 1280
    layout_centroids: int = 256
    layout_share: float = 0.35
    themes: int = 24
    topics: int = 240
    topic_centroids: int = 24
    theme_weight: float = 0.7
    zipf: float = 1.0
    regions: tuple[int, int] = (3, 6)
    region_centroids: int = 6
    wording: tuple[float, float] = (0.3, 1.0)  # norm of a region's page-specific offset
    page_noise: float = 0.5
    query_region_tokens: int = 10
    paraphrase: float = 0.5
    query_noise: float = 0.3
    seed: int = 0


class SyntheticPages:
    """Pages and queries of `SyntheticSpec`'s graded structure; page i is the same whatever N is."""

    def __init__(self, spec: SyntheticSpec = SyntheticSpec()):
        self.spec = spec
        s = spec
        rng = np.random.default_rng([s.seed, 0])
        self.layout = self._unit_normal(rng, (s.layout_centroids, s.dim))
        themes = self._unit_normal(rng, (s.themes, s.topic_centroids, s.dim))
        theme_of = rng.integers(0, s.themes, s.topics)
        own = self._unit_normal(rng, (s.topics, s.topic_centroids, s.dim))
        self.topics = unit_length(np.float32(s.theme_weight) * themes[theme_of] + own)
        weights = 1.0 / np.arange(1, s.topics + 1) ** s.zipf
        self.popularity = weights / weights.sum()

    def _unit_normal(self, rng, shape) -> np.ndarray:
        return unit_length(rng.standard_normal(shape, dtype=np.float32))

    def _moved(self, rng, centres: np.ndarray, norm: float) -> np.ndarray:
        noise = rng.standard_normal(centres.shape, dtype=np.float32) * np.float32(norm / math.sqrt(self.spec.dim))
        return unit_length(centres + noise)

    def regions(self, i: int) -> tuple[list[np.ndarray], np.ndarray]:
        """Page i's content regions (each: its centroids as this page words them) and their shares of the content."""
        s = self.spec
        rng = np.random.default_rng([s.seed, 1, i])
        count = int(rng.integers(s.regions[0], s.regions[1] + 1))
        topics = rng.choice(s.topics, count, replace=False, p=self.popularity)
        regions = []
        for topic in topics:
            picked = rng.choice(s.topic_centroids, s.region_centroids, replace=False)
            regions.append(self._moved(rng, self.topics[topic, picked], rng.uniform(*s.wording)))
        return regions, rng.dirichlet(np.full(count, 2.0))

    def page(self, i: int) -> np.ndarray:
        s = self.spec
        regions, shares = self.regions(i)
        rng = np.random.default_rng([s.seed, 3, i])
        n_layout = round(s.layout_share * s.tokens)
        counts = np.floor(shares * (s.tokens - n_layout)).astype(int)
        counts[0] += s.tokens - n_layout - counts.sum()
        parts = [self.layout[rng.integers(0, len(self.layout), n_layout)]]
        parts += [region[rng.integers(0, len(region), n)] for region, n in zip(regions, counts, strict=True)]
        centres = np.concatenate(parts)
        return bfloat16_values(self._moved(rng, centres[rng.permutation(len(centres))], s.page_noise))

    def query(self, i: int, key: int) -> np.ndarray:
        """A query paraphrasing two of page i's regions."""
        s = self.spec
        regions, _ = self.regions(i)
        rng = np.random.default_rng([s.seed, 4, i, key])
        parts = []
        for r in rng.choice(len(regions), 2, replace=False):
            centres = regions[r][rng.integers(0, len(regions[r]), s.query_region_tokens)]
            parts.append(self._moved(rng, centres, s.paraphrase))
        return bfloat16_values(self._moved(rng, np.concatenate(parts), s.query_noise))


SHAPE = ("tokens", "dim")  # SyntheticSpec's shape fields: set by their own options, not by --vary


def varied(spec: SyntheticSpec, changes: list[str]) -> SyntheticSpec:
    """`spec` with FIELD=VALUE changes (a range: FIELD=LOW,HIGH), for measuring the fast path on a structure other
    than the default one: `tokendirect bench search --vary paraphrase=0.8`."""
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    updates = {}
    for change in changes:
        name, _, text = change.partition("=")
        name = name.strip()
        if name not in fields or name in SHAPE or not text:
            known = ", ".join(n for n in fields if n not in SHAPE)
            raise UsageError(f"--vary takes FIELD=VALUE with FIELD one of: {known} (got {change!r})")
        default = fields[name]
        kind = type(default[0]) if isinstance(default, tuple) else type(default)
        try:
            values = tuple(kind(v) for v in text.split(","))
        except ValueError:
            raise UsageError(f"--vary {name} takes {kind.__name__} values (got {text!r})") from None
        if len(values) != (len(default) if isinstance(default, tuple) else 1):
            raise UsageError(f"--vary {name} takes {len(default)} values, LOW,HIGH (got {text!r})")
        if isinstance(default, tuple) and values[0] > values[1]:
            raise UsageError(f"--vary {name} takes LOW,HIGH with LOW <= HIGH (got {text!r})")
        updates[name] = values if isinstance(default, tuple) else values[0]
    new = dataclasses.replace(spec, **updates)
    try:
        synth = SyntheticPages(new)
        synth.query(0, 0)  # a page and a query of it can be drawn, and the regions of the next pages
        for i in range(1, 64):
            synth.regions(i)
    except ValueError as exc:
        raise UsageError(f"--vary {', '.join(changes)}: no such pages can be drawn ({exc})") from None
    return new


def structure_of(spec: SyntheticSpec) -> dict:
    """The fields in which `spec` differs from the default structure (its shape aside)."""
    default = SyntheticSpec()
    return {
        f.name: getattr(spec, f.name)
        for f in dataclasses.fields(spec)
        if f.name not in SHAPE and getattr(spec, f.name) != getattr(default, f.name)
    }


def synthetic_identity(spec: SyntheticSpec) -> ModelIdentity:
    return ModelIdentity("token-direct/bench-synthetic", f"graded-seed-{spec.seed}", spec.dim, spec.tokens)


def synthetic_point(i: int, tokens: np.ndarray) -> PagePoint:
    from core.pages import point_id

    doc = _doc(i // DOC_PAGES)
    return PagePoint(
        point_id(doc, i + 1),
        {"doc_id": doc, "source": f"synthetic:{i}", "page": i + 1, "n_tokens": int(tokens.shape[0])},
        tokens,
    )


def _doc(k: int) -> str:
    return f"synthetic-{k:05d}"


# -- the in-memory scan ----------------------------------------------------------------------------------------


class TorchScan:
    """Every page's unit tokens in RAM as one float32 tensor [pages, rows, dim], MaxSim of a query over all of them
    in one matrix product: the baseline at its best (no conversion per query). Shorter pages repeat their first
    row, which never changes a MaxSim score."""

    def __init__(self, capacity: int, rows: int, dim: int):
        import torch

        self._table = torch.empty((capacity, rows, dim), dtype=torch.float32)
        self.count = 0

    def add(self, tokens: np.ndarray) -> None:
        import torch

        unit = torch.from_numpy(unit_length(tokens))
        page = self._table[self.count]
        page[: len(unit)] = unit
        page[len(unit) :] = unit[:1]
        self.count += 1

    @property
    def nbytes(self) -> int:
        return self.count * self._table[0].numel() * 4

    def search(self, query: np.ndarray, limit: int) -> list[tuple[int, float]]:
        import torch

        pages = self._table[: self.count]
        q = torch.from_numpy(unit_length(query))
        with torch.inference_mode():
            scores = (pages.reshape(-1, pages.shape[2]) @ q.T).reshape(pages.shape[0], pages.shape[1], -1)
            scores = scores.amax(1).sum(-1)
        top = torch.topk(scores, min(limit, len(scores)))
        return list(zip(top.indices.tolist(), top.values.tolist(), strict=True))


# -- measuring -------------------------------------------------------------------------------------------------


def _ms(samples: list[float], q: float) -> float | None:
    return round(float(np.percentile(samples, q)) * 1000, 3) if samples else None


def _part(rel: Path) -> str:
    """Which part of a shard a file belongs to: a named vector's storage or index, the payload, the WAL."""
    for name in rel.parts:
        if name.startswith(("vector_storage-", "vector_index-")):
            return name.split("-", 1)[1]
    return "wal" if "wal" in rel.parts else "payload and other"


def _files(path: Path):
    for root, _, names in os.walk(path):
        for name in names:
            yield Path(root) / name


def disk_bytes(path: Path) -> int:
    """Bytes an embedded shard takes on disk (preallocated, never written parts of its files take none)."""
    return sum(min(st.st_size, st.st_blocks * 512) for st in (os.stat(f) for f in _files(path)))


def drop_page_cache(path: Path) -> None:
    """Evict the shard's own files from the page cache (posix_fadvise DONTNEED), nothing else of the machine's."""
    for f in _files(path):
        try:
            fd = os.open(f, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def page_cache_bytes(path: Path) -> dict[str, int]:
    """Bytes of the shard's files in the page cache, by part (mincore(2) over a read-only mapping of each file)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    page = os.sysconf("SC_PAGE_SIZE")
    found: dict[str, int] = {}
    for f in _files(path):
        try:
            size = os.stat(f).st_size
            fd = os.open(f, os.O_RDONLY)
        except OSError:
            continue
        try:
            if not size:
                continue
            addr = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
            if addr in (None, ctypes.c_void_p(-1).value):
                continue
            vec = np.zeros(-(-size // page), dtype=np.uint8)
            if libc.mincore(addr, size, vec.ctypes.data) == 0:
                part = _part(f.relative_to(path))
                found[part] = found.get(part, 0) + int((vec & 1).sum()) * page
            libc.munmap(addr, size)
        finally:
            os.close(fd)
    return found


def resident_bytes(shard: Path) -> dict[str, int]:
    """This process's resident memory (/proc/self/smaps) by kind: `anonymous` (heap: what the engine loaded into
    RAM), the shard's own mapped files by part (`shard:<part>`), and `other` (library code and other files). Freed
    heap is handed back to the system first (malloc_trim), so memory a library freed is not counted as held."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass
    root = str(shard.resolve()) + os.sep
    found: dict[str, int] = {}
    kind = "other"
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(maxsplit=5)
            if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                name = head[5].strip() if len(head) > 5 else ""
                if name.startswith(root):
                    kind = "shard:" + _part(Path(name[len(root) :]))
                else:
                    kind = "anonymous" if not name or name.startswith("[") else "other"
            elif line.startswith("Rss:"):
                found[kind] = found.get(kind, 0) + int(line.split()[1]) * 1024
    return found


def search_ram(before: dict[str, int], now: dict[str, int]) -> tuple[int, int]:
    """(bytes the store's search data holds in RAM, the shard's fixed overhead) from two `resident_bytes`: heap
    growth plus the mapped files of its vectors and indexes; apart, the mapped WAL and payload files, whose size
    does not follow the number of pages."""
    heap = now.get("anonymous", 0) - before.get("anonymous", 0)
    fixed = ("shard:wal", "shard:payload and other")
    mapped = sum(b for k, b in now.items() if k.startswith("shard:") and k not in fixed)
    return heap + mapped, sum(now.get(k, 0) for k in fixed)


def estimated_ram_bytes(store: PageStore, tokens: int, dim: int) -> int:
    """An estimate, from the layout alone, of what the fast path keeps in RAM per page (for stores whose memory
    cannot be measured here): the pooled vectors' quantized copies (binary: dim / 8 bytes a vector; int8: dim plus a
    scale; unquantized: float16), and in collections with a dense first stage its vector and graph. The fine vectors
    are counted at one per fine_size tokens: the most a page gets (fewer where FINE_LIKENESS covers it with fewer)."""
    layout = store.layout
    keep = rows_per_vector(dim)
    if layout.pooled_first:
        coarse = pooled_count(tokens, layout.pool_size) if layout.coarse else 0
        vectors = coarse + pooled_count(tokens, layout.fine_size(tokens, keep))
        return vectors * (math.ceil(dim / 8) if layout.pooled_quantization else 2 * dim)
    pooled = pooled_count(tokens, layout.pool_size) * (dim + 4 if layout.pooled_quantization else 2 * dim)
    return 2 * layout.dense_size(dim) + 2 * layout.hnsw_m * 4 + pooled


def read_bytes() -> int | None:
    """Bytes this process has had read from disk so far (/proc/self/io; None where the system does not say)."""
    try:
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("read_bytes:"))
    except (OSError, StopIteration, ValueError):
        return None


def readahead_kb(path: Path) -> int | None:
    """The read-ahead setting (kB) of the block device `path` lies on: how far past a page fault the kernel reads, so
    what a cold read of a few rows costs (None where it cannot be found, as on some virtual file systems)."""
    dev = os.stat(path).st_dev
    base = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    for queue in (base / "queue", base / ".." / "queue"):  # a whole disk, or a partition of one
        try:
            return int((queue / "read_ahead_kb").read_text())
        except (OSError, ValueError):
            continue
    return None


def probe_cold(settings: Settings, queries: list[np.ndarray], top: int) -> dict:
    """Run in a fresh process: resident memory before opening the shard, after opening it and after the queries,
    and the fast path's latency cold, with the bytes each cold query had read from disk (the first query warms up
    the process and is not counted). Cold: the store opened afresh and the shard's files dropped from the page cache
    before every query. Dropping alone is not enough: the kernel keeps the pages a process still maps, so rows an
    earlier query read would stay cached for the next; a store opened afresh maps none of them."""
    import qdrant_edge  # noqa: F401  (library code is not what the store holds: loaded before the baseline)

    shard = settings.shard_path()
    base = resident_bytes(shard)
    store = open_store(settings)
    try:
        pages = store.count()  # opens the shard and reads the collection record
        opened = resident_bytes(shard)
        cold, hits, read = [], [], []
        for k, q in enumerate([queries[0], *queries]):
            if k:
                store.close()
                store = open_store(settings)
                store.count()
            drop_page_cache(store.path)
            before = read_bytes()
            t = time.perf_counter()
            found = search(store, q, top)
            if k:
                cold.append(time.perf_counter() - t)
                hits.append([p.point_id for p in found])
                after_query = read_bytes()
                if before is not None and after_query is not None:
                    read.append(after_query - before)
        after = resident_bytes(shard)
        cache = page_cache_bytes(store.path)
    finally:
        store.close()
    return {
        "pages": pages,
        "base": base,
        "opened": opened,
        "after": after,
        "cold": cold,
        "hits": hits,
        "cache": cache,
        "read": read,
        "readahead_kb": readahead_kb(shard),
    }


def _in_fresh_process(fn, *args):
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


@dataclass
class SearchBench:
    pages: int
    queries: int
    tokens_per_page: float
    dim: int
    chunked: bool  # pages hold more rows than one multivector: exact MaxSim ranks by the `tokens` chunk alone
    recall_at_10: float  # the fast path against exact MaxSim (mean over the queries)
    recall_at_10_min: float  # ... its worst query
    first_stage_recall_at_10: float  # the fast path's first stage alone (top 10)
    random_recall_at_10: float  # a random ranking (expected value, 10 / pages): the floor
    scan_recall_at_10: float | None  # the scan (every token) against exact MaxSim: 1.0 unless pages are chunked
    fast_p50_ms: float  # warm: the shard's files in the page cache (exact search has just read them all)
    fast_p95_ms: float
    fast_alone_p50_ms: float  # warm, the queries one after another with nothing between: as a process serving them
    fast_alone_p95_ms: float
    fast_cold_p50_ms: float | None  # each query on a store opened afresh, its files dropped from the page cache
    fast_cold_p95_ms: float | None
    # bytes the process read from disk per cold query (/proc/self/io), median; the rows it needs are much fewer where
    # the device reads far ahead of each fault (`readahead_kb`, the shard's block device's read-ahead setting)
    fast_cold_read_bytes_p50: float | None
    readahead_kb: int | None
    exact_p50_ms: float
    exact_p95_ms: float
    scan_p50_ms: float | None
    scan_p95_ms: float | None
    speedup_vs_exact: float  # warm p50s
    speedup_alone_vs_exact: float  # the fast path's queries one after another, against exact's warm p50
    speedup_vs_scan: float | None
    # the engine's p50 for the fast path's plan cut after each stage, innermost first, by the vector that stage
    # scores (the first stage alone, then with the next, ..., the whole plan), each asked for the top 10; None where
    # the plan is not one nested chain
    stage_p50_ms: dict[str, float] | None
    # where recall is lost: the share of the exact top 10 among the pages each stage before exact hands on (keyed by
    # the vector it scores and its depth), mean over the queries; each stage keeps a subset of the one before, and
    # the fast path's top 10 comes from the last one's, so recall_at_10 <= the last <= ... <= the first
    survivor_recall: dict[str, float] | None
    exact_gap_10_11: float  # median score gap between ranks 10 and 11 of the exact result
    exact_gap_10_11_relative: float  # ... as a fraction of the rank-10 score
    gap_relative_quantiles: dict  # p10 / p50 / p90 of that fraction over the queries
    token_bytes_per_page: float  # the full token set as float16
    ram_bytes_per_page: float | None  # measured: RAM the opened store's search data takes in its process, per page
    ram_fixed_bytes: int | None  # measured: the shard's mapped WAL and payload files, whatever the number of pages
    ram_fraction: float | None  # ram_bytes_per_page / token_bytes_per_page
    ram_after_queries_bytes_per_page: float | None  # the same after the cold queries
    page_cache_after_queries: dict | None  # bytes of the shard's files in the page cache after them, by part
    ram_estimate_bytes_per_page: float  # an estimate from the layout (quantized pooled copies), for comparison
    disk_bytes_per_page: float | None
    # the fine pooled vectors stored pages have (mean over the first 64 pages that have them; None: the layout has none)
    fine_vectors_per_page: float | None
    scan_ram_bytes_per_page: float | None  # what the scan holds in RAM
    build_s: float
    prefetch_dense: int
    prefetch_at: int  # the collection size prefetch_dense is set for (0: at any size)
    prefetch_share: float
    prefetch_first: int  # what the first stage handed on at this size (SearchLayout.limits)
    prefetch_pooled: int
    depth_scale: float  # how much deeper than set the binary-coded stages looked, for the tokens' dimension
    prefetch_last: int  # what the stage before exact handed on at this size: PREFETCH_POOLED, deeper for narrow tokens
    query_pool_size: float  # query tokens per query vector in the first stage's scan
    exact_below: int
    pooling: str
    pool_size: int
    first_stage: str  # "codebook"; "none" where a collection made for one has not learned it; else the layout's
    codebook: int  # the codebook's centroids (0: none)
    prefetch_codebook: int
    load_average: float  # the machine's 1-minute load average at the end of the run
    source: str
    structure: dict | None = None  # synthetic pages: how their structure differs from the default ({}: it does not)
    # pages a kept build held before it was cut down to this size (0: never): its segments keep the deleted pages'
    # space, so the RAM and disk figures read high; measure those on a build of this size
    trimmed_from: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Runs:
    fast: list[float] = field(default_factory=list)
    alone: list[float] = field(default_factory=list)
    exact: list[float] = field(default_factory=list)
    scan: list[float] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    scan_recall: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    rel_gaps: list[float] = field(default_factory=list)
    stages: list[list[float]] = field(default_factory=list)
    stage_names: list[str] = field(default_factory=list)
    survivors: list[list[float]] = field(default_factory=list)
    survivor_names: list[str] = field(default_factory=list)


def stage_chain(store: PageStore, query: np.ndarray) -> list | None:
    """The fast path's plan for `query` cut after each stage, innermost first, each at its own depth (the last is
    the whole plan); None where the plan is not one nested chain (exact search, or a dense first stage's several
    probes)."""
    with one_blas_thread():  # as search() builds it: a spinning BLAS thread would slow the query timed next
        chain = [visual(store, np.asarray(query, dtype=np.float32), TOP, None, fast_path_pages(store))]
    while chain[-1].prefetch:
        if len(chain[-1].prefetch) > 1:
            return None
        chain.append(chain[-1].prefetch[0])
    return chain[::-1] if len(chain) > 1 else None


def first_alone(store: PageStore, query: np.ndarray, chain: list | None = None) -> Stage:
    """The fast path's first stage for `query`, asked for the top 10 (exact MaxSim where there is no fast path);
    `chain`: its `stage_chain`, where the caller has it already."""
    chain = chain or stage_chain(store, query)
    if chain:
        return dataclasses.replace(chain[0], limit=TOP)
    query = np.asarray(query, dtype=np.float32)
    stages = first_stage(store, query, TOP) if fast_path_pages(store) else ()
    return stages[0] if stages else visual(store, query, TOP, None, 0)


def stage_cuts(store: PageStore, query: np.ndarray) -> list | None:
    """`stage_chain`, each cut asked for the top 10 (so that a cut reads 10 payloads, as the whole plan does)."""
    chain = stage_chain(store, query)
    return [dataclasses.replace(s, limit=TOP) for s in chain] if chain else None


def _overlap(truth: set, found) -> float:
    return len(truth & set(found)) / max(1, min(TOP, len(truth)))


def measure(
    store: PageStore,
    queries: list[np.ndarray],
    scan: TorchScan | None,
    build_s: float,
    source: str,
    tokens_per_page: float,
    dim: int,
    settings: Settings | None = None,
    scan_ids: list[str] | None = None,
) -> SearchBench:
    """Every figure of one size. `scan_ids` names the point of each of the scan's pages; `settings` (an embedded
    store's) lets a fresh process open the store to measure cold latency and memory."""
    pages = store.count()
    layout = store.layout
    r = _Runs()
    for k, q in enumerate([queries[0], *queries]):  # the first query warms caches and is not counted
        t = time.perf_counter()
        exact = search(store, q, TOP + 1, exact=True)
        t_exact = time.perf_counter() - t
        t = time.perf_counter()
        fast = search(store, q, TOP)
        t_fast = time.perf_counter() - t
        chain = stage_chain(store, q)
        first = store.query([first_alone(store, q, chain)])
        handed = [store.query([cut])[0] for cut in chain[:-1]] if chain else []
        t_scan, scanned = None, None
        if scan is not None:
            t = time.perf_counter()
            scanned = scan.search(q, TOP)
            t_scan = time.perf_counter() - t
        if k == 0:
            continue
        truth = {p.point_id for p in exact[:TOP]}
        r.exact.append(t_exact)
        r.fast.append(t_fast)
        r.recall.append(_overlap(truth, [p.point_id for p in fast]))
        r.first.append(_overlap(truth, [p.point_id for p in first[0]]) if store.has_fast_path() else 0.0)
        if handed:
            r.survivors.append([_overlap(truth, [p.point_id for p in found]) for found in handed])
            r.survivor_names = [f"{cut.query.using} ({cut.limit})" for cut in chain[:-1]]
        if scanned is not None:
            r.scan.append(t_scan)
            r.scan_recall.append(_overlap(truth, [scan_ids[i] for i, _ in scanned]))
        if len(exact) > TOP:
            gap = exact[TOP - 1].score - exact[TOP].score
            r.gaps.append(gap)
            r.rel_gaps.append(gap / exact[TOP - 1].score if exact[TOP - 1].score else 0.0)
    # Each fast query above ran right after an exact one, which had just swept every page's tokens through the CPU
    # caches. A process serving the fast path runs its queries one after another: timed apart, after one untimed.
    for k, q in enumerate([queries[0], *queries]):
        t = time.perf_counter()
        search(store, q, TOP)
        if k:
            r.alone.append(time.perf_counter() - t)
    # What each stage adds: the plan cut after each, timed in the engine alone (the query's preparation apart).
    for k, q in enumerate([queries[0], *queries]):
        cuts = stage_cuts(store, q)
        if cuts is None:
            break
        times = []
        for cut in cuts:
            t = time.perf_counter()
            store.query([cut])
            times.append(time.perf_counter() - t)
        if k:
            r.stages.append(times)
            r.stage_names = [cut.query.using for cut in cuts]
    token_bytes = tokens_per_page * dim * 2
    probe = None
    if isinstance(store, EdgeStore) and settings is not None:
        store.close()  # one process holds a shard at a time: the fresh process takes it, this one reopens after
        probe = _in_fresh_process(probe_cold, settings, queries, TOP)
    ram = after = cache = fixed = None
    if probe and pages:
        held, fixed = search_ram(probe["base"], probe["opened"])
        ram, after = held / pages, search_ram(probe["base"], probe["after"])[0] / pages
        cache = {part: round(b / pages, 1) for part, b in sorted(probe["cache"].items())}
    disk = disk_bytes(store.path) / pages if isinstance(store, EdgeStore) and pages else None
    centroids = store.centroids()
    first_depth, last_depth = layout.limits(TOP, pages, store.dim, codebook=centroids is not None)
    # a collection made for a codebook that has not learned it: the fine stage scores every page
    waiting = layout.codebook and centroids is None
    fast_p50, exact_p50 = _ms(r.fast, 50), _ms(r.exact, 50)
    scan_p50 = _ms(r.scan, 50)
    rel = np.asarray(r.rel_gaps) if r.rel_gaps else np.zeros(1)
    return SearchBench(
        pages=pages,
        queries=len(queries),
        tokens_per_page=round(tokens_per_page, 1),
        dim=dim,
        chunked=tokens_per_page > rows_per_vector(dim),
        recall_at_10=round(float(np.mean(r.recall)), 4),
        recall_at_10_min=round(float(np.min(r.recall)), 4),
        first_stage_recall_at_10=round(float(np.mean(r.first)), 4),
        random_recall_at_10=round(min(TOP, pages) / max(pages, 1), 4),  # its expected value
        scan_recall_at_10=round(float(np.mean(r.scan_recall)), 4) if r.scan_recall else None,
        fast_p50_ms=fast_p50,
        fast_p95_ms=_ms(r.fast, 95),
        fast_alone_p50_ms=_ms(r.alone, 50),
        fast_alone_p95_ms=_ms(r.alone, 95),
        fast_cold_p50_ms=_ms(probe["cold"], 50) if probe else None,
        fast_cold_p95_ms=_ms(probe["cold"], 95) if probe else None,
        fast_cold_read_bytes_p50=float(np.median(probe["read"])) if probe and probe["read"] else None,
        readahead_kb=probe["readahead_kb"] if probe else None,
        exact_p50_ms=exact_p50,
        exact_p95_ms=_ms(r.exact, 95),
        scan_p50_ms=scan_p50,
        scan_p95_ms=_ms(r.scan, 95),
        speedup_vs_exact=round(exact_p50 / fast_p50, 1),
        speedup_alone_vs_exact=round(exact_p50 / _ms(r.alone, 50), 1),
        speedup_vs_scan=round(scan_p50 / fast_p50, 1) if scan_p50 else None,
        stage_p50_ms={n: _ms([t[i] for t in r.stages], 50) for i, n in enumerate(r.stage_names)} or None,
        survivor_recall={
            n: round(float(np.mean([c[i] for c in r.survivors])), 4) for i, n in enumerate(r.survivor_names)
        }
        or None,
        exact_gap_10_11=round(float(np.median(r.gaps)), 4) if r.gaps else 0.0,
        exact_gap_10_11_relative=round(float(np.median(rel)), 4),
        gap_relative_quantiles={f"p{q}": round(float(np.percentile(rel, q)), 4) for q in (10, 50, 90)},
        token_bytes_per_page=round(token_bytes, 1),
        ram_bytes_per_page=round(ram, 1) if ram is not None else None,
        ram_fixed_bytes=fixed,
        ram_fraction=round(ram / token_bytes, 4) if ram is not None else None,
        ram_after_queries_bytes_per_page=round(after, 1) if after is not None else None,
        page_cache_after_queries=cache,
        ram_estimate_bytes_per_page=float(estimated_ram_bytes(store, round(tokens_per_page), dim)),
        disk_bytes_per_page=round(disk, 1) if disk is not None else None,
        fine_vectors_per_page=round(float(np.mean(fine)), 1) if (fine := store.vector_rows(FINE)) else None,
        scan_ram_bytes_per_page=round(scan.nbytes / max(scan.count, 1), 1) if scan is not None else None,
        build_s=round(build_s, 1),
        prefetch_dense=layout.prefetch_dense,
        prefetch_at=layout.prefetch_at,
        prefetch_share=layout.prefetch_share,
        prefetch_first=pages if waiting else first_depth,
        prefetch_last=last_depth,
        depth_scale=round(layout.depth_scale(store.dim), 3),
        prefetch_pooled=layout.prefetch_pooled,
        query_pool_size=layout.query_pool_size,
        exact_below=layout.exact_below,
        pooling=layout.pooling,
        pool_size=layout.pool_size,
        first_stage="codebook" if centroids is not None else "none" if waiting else layout.first_stage,
        codebook=0 if centroids is None else len(centroids),
        prefetch_codebook=layout.prefetch_codebook,
        load_average=round(os.getloadavg()[0], 1),
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
    from core.pages import point_id

    sizes = sorted(set(sizes))
    temporary = workdir is None
    root = Path(tempfile.mkdtemp(prefix="tokendirect-bench-")) if temporary else Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    marker = root / "bench.json"
    about = json.loads(json.dumps({"spec": asdict(spec), "layout": SearchLayout.from_settings(settings).built()}))
    bench_settings = settings.model_copy(update={"data_dir": root, "qdrant_url": None, "collection": "bench-synthetic"})
    kept = json.loads(marker.read_text()) if marker.exists() else {}
    if kept.get("about") != about:
        shutil.rmtree(root / "qdrant", ignore_errors=True)  # built with another structure or layout
        kept = {}
    built = kept.get("pages", 0)
    synth = SyntheticPages(spec)
    results = []
    store = open_store(bench_settings)
    try:
        store.bind(synthetic_identity(spec))
        table = _scan_table(sizes[-1], spec.tokens, spec.dim) if scan else None
        build_s = 0.0
        for size in sizes:
            held = store.count()
            built = _trim(store, built, size, held)
            if held > size:
                progress(
                    f"the build in {root} held {held} pages; cut down to {size}, its files keep the deleted pages' "
                    "space, so RAM and disk per page read high (another --workdir builds this size afresh)"
                )
            if table is not None:  # the scan holds every page in RAM, as an in-memory index would
                for i in range(table.count, min(built, size)):
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
            ids = [point_id(_doc(i // DOC_PAGES), i + 1) for i in range(size)] if table is not None else None
            result = measure(store, qs, table, build_s, "synthetic", spec.tokens, spec.dim, bench_settings, ids)
            result.structure = structure_of(spec)
            result.trimmed_from = held if held > size else 0
            results.append(result)
            on_result(result)
    finally:
        store.close()
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
    return results


def _scan_table(pages: int, rows: int, dim: int) -> TorchScan:
    """The scan's table, refused when it would not fit in the memory this machine has free."""
    need = pages * rows * dim * 4
    with open("/proc/meminfo") as f:
        free = next((int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable")), need * 2)
    if need > 0.6 * free:
        raise UsageError(
            f"the in-memory scan of {pages} pages needs {need / 2**30:.1f} GiB as float32, more than this machine "
            "can spare: run with --no-scan"
        )
    return TorchScan(pages, rows, dim)


def _trim(store: PageStore, built: int, size: int, count: int) -> int:
    """Pages 0..built-1 are known stored, `count` in all; drop any beyond `size` (a larger earlier build, or an
    interrupted one), whole documents at a time, and return how many pages are stored from the start."""
    if count == built <= size:
        return built
    keep = min(built, size) // DOC_PAGES
    for doc in range(keep, -(-count // DOC_PAGES) + 1):
        store.delete_document(_doc(doc))
    return keep * DOC_PAGES


def collection_bench(
    settings: Settings, queries: int = 20, scan: bool = True, progress: Callable[[str], None] = lambda m: None
) -> SearchBench:
    """Measure on an existing collection: each query is 20 tokens of a stored page, with noise sigma 0.3."""
    with open_store(settings) as store:
        record = store.record()
        if record is None:
            raise UsageError(f"collection {settings.collection!r} does not exist")
        dim = int(record["dim"])
        lengths = {p.point_id: int(p.payload.get("n_tokens", 0)) for b in store.scroll(256, False) for p in b}
        if not lengths:
            raise UsageError(f"collection {settings.collection!r} holds no pages")
        table = _scan_table(len(lengths), max(lengths.values()), dim) if scan else None
        ids = []
        for batch in store.scroll(batch_size=8, with_tokens=True):
            for p in batch:
                ids.append(p.point_id)
                lengths[p.point_id] = p.tokens.shape[0]
                if table is not None:
                    table.add(p.tokens)
            progress(f"read {len(ids)} pages")
        rng = np.random.default_rng(0)
        qs = []
        for pid in rng.choice(ids, queries):
            tokens = unit_length(store.get(str(pid)).tokens)
            rows = tokens[rng.choice(len(tokens), min(20, len(tokens)), replace=False)]
            noise = rng.standard_normal(rows.shape).astype(np.float32) * np.float32(0.3 / math.sqrt(dim))
            qs.append(unit_length(rows + noise))
        mean = float(np.mean(list(lengths.values())))
        edge = settings if isinstance(store, EdgeStore) else None
        return measure(store, qs, table, 0.0, f"collection {settings.collection}", mean, dim, edge, ids)


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
    lat.plot(n, [r.fast_p50_ms for r in results], "o-", label="fast path p50, warm")
    if all(r.fast_cold_p50_ms for r in results):
        lat.plot(n, [r.fast_cold_p50_ms for r in results], "o--", label="fast path p50, cold")
    lat.plot(n, [r.exact_p50_ms for r in results], "s-", label="exact MaxSim p50")
    if all(r.scan_p50_ms for r in results):
        lat.plot(n, [r.scan_p50_ms for r in results], "^-", label="torch scan p50")
    lat.set(xlabel="pages", ylabel="ms", yscale="log", title="query latency")
    lat.legend()
    rec.plot(n, [r.recall_at_10 for r in results], "o-", label="fast path")
    rec.plot(n, [r.first_stage_recall_at_10 for r in results], "s--", label="its first stage alone")
    rec.legend()
    rec.set(xlabel="pages", ylabel="recall@10 vs exact", ylim=(0, 1.02), title="fast-path recall")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
