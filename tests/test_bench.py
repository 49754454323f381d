"""`tokendirect bench search`: the synthetic set is graded (a continuous ranking that a weak first stage cannot
reproduce), and a small run reports every figure, with sane values."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from core.errors import UsageError
from core.pooling import dense_vector, maxsim
from core.store.storage import to_storage
from core.tensors import bfloat16_values
from search.bench import SyntheticPages, SyntheticSpec, drop_page_cache, read_bytes, readahead_kb, structure_of, varied
from tests.helpers import bfloat16_tokens, cli_env, run_cli

KEYS = {
    "pages",
    "recall_at_10",
    "recall_at_10_min",
    "first_stage_recall_at_10",
    "random_recall_at_10",
    "scan_recall_at_10",
    "fast_p50_ms",
    "fast_cold_p50_ms",
    "fast_alone_p50_ms",
    "speedup_alone_vs_exact",
    "exact_p50_ms",
    "scan_p50_ms",
    "speedup_vs_exact",
    "stage_p50_ms",
    "survivor_recall",
    "gap_relative_quantiles",
    "ram_bytes_per_page",
    "ram_fixed_bytes",
    "ram_estimate_bytes_per_page",
    "page_cache_after_queries",
    "disk_bytes_per_page",
    "fine_vectors_per_page",
    "fast_cold_read_bytes_p50",
    "readahead_kb",
}


def test_synthetic_pages_are_graded():
    spec = SyntheticSpec(tokens=64, dim=256)
    synth = SyntheticPages(spec)
    page = synth.page(3)
    assert page.shape == (64, 256) and np.allclose(np.linalg.norm(page, axis=1), 1, atol=1e-2)
    assert np.array_equal(page, synth.page(3)) and np.array_equal(page, bfloat16_values(page))
    assert not to_storage(page).patch or len(to_storage(page).patch["i"]) < 0.01 * page.size  # float16 holds it
    pages = np.stack([synth.page(i) for i in range(150)])
    means = np.stack([dense_vector(p) for p in pages])
    first_stage, gaps = [], []
    for i in range(0, 150, 15):
        query = synth.query(i, 0)
        assert query.shape == (2 * spec.query_region_tokens, 256)
        scores = np.array([maxsim(query, p) for p in pages])
        ranked = np.argsort(-scores)
        assert ranked[0] == i  # the page the query paraphrases comes first
        # then a continuous ranking: no cliff after rank 10 as a cluster of 10 pages would make
        gaps.append((scores[ranked[9]] - scores[ranked[10]]) / (scores[ranked[1]] - scores[ranked[20]]))
        first_stage.append(len(set(ranked[:10]) & set(np.argsort(-(means @ dense_vector(query)))[:10])) / 10)
    assert np.median(gaps) < 0.2
    assert np.mean(first_stage) < 0.7  # the mean vector alone misses much of the exact top 10


def test_bench_search_reports_every_figure(tmp_path, tiny_model_dir):
    # the real shape is 257 x 1280; a smaller one keeps the test quick. exact_below 0: the fast path, however few pages
    args = ["--pages", "60", "--queries", "4", "--tokens", "64", "--dim", "256", "--json", "--plot", tmp_path / "b.png"]
    args += ["--vary", "seed=3"]  # another draw of the same structure
    # the codebook learned from the first 30 pages, and 300 x sqrt(60 / 2000) = 52 pages from it
    book = {
        "TOKENDIRECT_CODEBOOK_PAGES": "30",
        "TOKENDIRECT_CODEBOOK_SIZE": "256",
        "TOKENDIRECT_PREFETCH_CODEBOOK": "300",
    }
    env = cli_env(tiny_model_dir, tmp_path / "data", TOKENDIRECT_EXACT_BELOW="0", **book)
    proc = run_cli(["bench", "search", *args], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert KEYS <= data.keys() and data["pages"] == 60 and data["token_bytes_per_page"] == 64 * 256 * 2
    assert 0 < data["recall_at_10"] <= 1 and data["random_recall_at_10"] == round(10 / 60, 4)
    assert data["scan_recall_at_10"] == 1.0  # the scan ranks as exact MaxSim does
    timed = ("fast_p50_ms", "fast_alone_p50_ms", "fast_cold_p50_ms", "exact_p50_ms", "scan_p50_ms")
    assert all(data[k] > 0 for k in timed)
    if data["readahead_kb"] is not None:  # on a block device (not tmpfs): a cold query reads its rows from disk
        assert data["fast_cold_read_bytes_p50"] > 0 and "from disk a query" in proc.stderr
    # the plan cut after each stage: the codebook, then the fine stage, then exact MaxSim
    assert data["first_stage"] == "codebook" and data["codebook"] == 256
    assert list(data["stage_p50_ms"]) == ["centroids", "pooled_fine", "tokens"]
    assert all(ms > 0 for ms in data["stage_p50_ms"].values()) and "cut after each stage" in proc.stderr
    # where recall is lost: each stage keeps a subset of what the one before handed on, and the top 10 comes from
    # the last; the first stage at its depth keeps more of the exact top 10 than its own top 10 does
    kept = data["survivor_recall"]
    assert list(kept) == ["centroids (52)", "pooled_fine (45)"] and "among each stage's survivors" in proc.stderr
    assert data["recall_at_10"] <= kept["pooled_fine (45)"] <= kept["centroids (52)"] <= 1
    assert kept["centroids (52)"] >= data["first_stage_recall_at_10"]
    assert data["exact_gap_10_11"] > 0 and set(data["gap_relative_quantiles"]) == {"p10", "p50", "p90"}
    assert data["ram_bytes_per_page"] > 0 and data["ram_fixed_bytes"] > 0 and data["page_cache_after_queries"]
    assert data["disk_bytes_per_page"] > data["token_bytes_per_page"]  # the tokens once, and the rest
    # read from the stored pages: at most one per 1.6 tokens, fewer where copies of a direction pool into one
    assert 1 <= data["fine_vectors_per_page"] <= 40 and "fine vectors" in proc.stderr
    assert data["query_pool_size"] == 2.5 and data["dim"] == 256  # the defaults it ran with; and
    # 20 pages into exact MaxSim x sqrt(1280 / 256): binary codes of fewer bits order pages less precisely
    assert (data["depth_scale"], data["prefetch_first"], data["prefetch_last"]) == (2.236, 52, 45)
    assert data["structure"] == {"seed": 3} and "varied: seed=3" in proc.stderr
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "data").exists()  # the collection lived in a temporary directory


def test_cold_reads_are_counted_from_disk(tmp_path):
    """What the cold figures' read bytes rest on: a file dropped from the page cache is read from disk again, and
    counted; read once more, it comes from the cache (the negative control)."""
    if readahead_kb(tmp_path) is None:
        pytest.skip("the temporary directory is on no block device (tmpfs): its files are never read from disk")
    path = tmp_path / "rows.bin"
    with open(path, "wb") as f:
        f.write(np.random.default_rng(0).bytes(4 << 20))
        f.flush()
        os.fsync(f.fileno())  # dirty pages stay in the page cache whatever is advised
    drop_page_cache(tmp_path)
    start = read_bytes()
    path.read_bytes()
    cold = read_bytes() - start
    path.read_bytes()
    warm = read_bytes() - start - cold
    assert cold >= 4 << 20 and warm < 1 << 20


def test_bench_search_rejects_bad_sizes(tmp_path, tiny_model_dir):
    proc = run_cli(["bench", "search", "--pages", "ten"], cli_env(tiny_model_dir, tmp_path / "data"), tmp_path)
    assert proc.returncode == 2 and "--pages" in proc.stderr


def test_varied_structures_draw_other_pages_and_queries():
    spec = SyntheticSpec(tokens=64, dim=256)
    default = SyntheticPages(spec)
    more = varied(spec, ["regions=7,9", "paraphrase=0.9"])
    assert (more.regions, more.paraphrase, more.tokens) == ((7, 9), 0.9, 64)
    assert structure_of(more) == {"regions": (7, 9), "paraphrase": 0.9} and structure_of(spec) == {}
    synth = SyntheticPages(more)
    assert all(7 <= len(synth.regions(i)[0]) <= 9 for i in range(20))
    assert max(len(default.regions(i)[0]) for i in range(20)) <= 6  # the default draws 3 to 6
    # the wider paraphrase moves a query further from the page it paraphrases
    assert maxsim(synth.query(0, 0), synth.page(0)) < maxsim(default.query(0, 0), default.page(0))
    assert varied(spec, []) == spec


@pytest.mark.parametrize(
    "change, says",
    [
        ("colour=3", "FIELD one of"),
        ("tokens=100", "FIELD one of"),  # the shape has its own options
        ("paraphrase=much", "float values"),
        ("regions=5", "2 values"),
        ("regions=9,5", "LOW <= HIGH"),
        ("region_centroids=99", "no such pages"),  # more centroids than a topic has
        ("topics=5", "no such pages"),  # page 0 can be drawn, page 5 has more regions (6) than there are topics
    ],
)
def test_a_bad_variation_is_refused_with_what_is_wrong(change, says):
    with pytest.raises(UsageError, match=says):
        varied(SyntheticSpec(tokens=64, dim=256), [change])


def test_bench_page_reports_what_a_page_costs(tmp_path, tiny_model_dir):
    """A page of more rows than one multivector may hold at its dimension (4095 at 256): two chunks, two REST
    requests, one gRPC request, nothing over a server's limits, the tokens back exact, disk near the token bytes."""
    args = ["bench", "page", "--dim", "256", "--tokens", "6000", "--pages", "2", "--json"]
    data = json.loads(run_cli(args, cli_env(tiny_model_dir, tmp_path / "data"), tmp_path).stdout)
    assert data["rows"]["tokens"] == 4095 and data["rows"]["tokens_2"] == 6000 - 4095
    assert data["rest"]["requests_per_page"] == 2 and data["grpc"]["requests_per_page"] == 1
    assert data["rest"]["over_limits"] == data["grpc"]["over_limits"] == 0
    assert data["rest"]["largest_request_bytes"] < data["rest"]["bytes_per_page"]  # the page took two requests
    assert data["exact"] and 1.0 <= data["disk_ratio"] < 1.5
    assert data["wal_bytes"] == 0  # new shards keep no write-ahead log: every write is flushed before it returns


def test_a_kept_build_cut_down_to_a_smaller_size_says_its_ram_and_disk_read_high(tmp_path, tiny_model_dir):
    """A workdir built to 48 pages, then measured at 24: the bench deletes the rest, whose space the segments keep,
    and says so; measured at its own size first, it does not."""
    env = cli_env(tiny_model_dir, tmp_path / "data", TOKENDIRECT_EXACT_BELOW="0")
    args = ["--queries", "2", "--tokens", "24", "--dim", "32", "--no-scan", "--json", "--workdir", tmp_path / "w"]
    runs = {}
    for pages in ("48", "24"):
        proc = run_cli(["bench", "search", "--pages", pages, *args], env, tmp_path)
        assert proc.returncode == 0, proc.stderr
        runs[pages] = (json.loads(proc.stdout), proc.stderr)
    assert runs["48"][0]["trimmed_from"] == 0 and "cut down" not in runs["48"][1]
    assert runs["24"][0]["pages"] == 24 and runs["24"][0]["trimmed_from"] == 48
    assert "held 48 pages; cut down to 24" in runs["24"][1]


def test_the_token_chunks_alone_are_written_to_a_scratch_shard_and_timed(tmp_path):
    """The floor `bench ingest` reports: a tiled page's chunks written alone, at the published shape, into a scratch
    shard that is gone afterwards; the measured collection keeps its pages, and the time grows with the pages."""
    from core.model import ModelIdentity
    from core.pages import point_id
    from core.store import EdgeStore, PagePoint
    from ingest.bench import tokens_alone_cpu

    rng = np.random.default_rng(3)
    pages = [
        PagePoint(point_id("doc", k), {"doc_id": "doc", "page": k}, bfloat16_tokens(rng, 1121, 1280)) for k in (1, 2, 3)
    ]
    store = EdgeStore(tmp_path / "pages", "pages")
    store.bind(ModelIdentity("bench", "synthetic", 1280, 1121))
    store.upsert(pages[:1])
    one, three = tokens_alone_cpu(store, [store.prepare(pages[:1])]), tokens_alone_cpu(store, [store.prepare(pages)])
    assert 0 < one < three
    assert store.count() == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["pages", "pages.lock"]
    store.close()
