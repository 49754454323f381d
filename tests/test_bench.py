"""`tokendirect bench search`: a small synthetic run reports every figure, with sane values."""

from __future__ import annotations

import json

import numpy as np

from core.pooling import maxsim
from core.store.storage import to_storage
from core.tensors import bfloat16_values
from search.bench import SyntheticPages, SyntheticSpec
from tests.helpers import cli_env, run_cli

KEYS = {
    "pages",
    "recall_at_10",
    "fast_p50_ms",
    "exact_p50_ms",
    "scan_p50_ms",
    "speedup_vs_exact",
    "ram_bytes_per_page",
    "disk_bytes_per_page",
}


def test_synthetic_pages_have_the_documented_structure():
    spec = SyntheticSpec(tokens=40, dim=256)
    synth = SyntheticPages(spec)
    page = synth.page(3)
    assert page.shape == (40, 256) and np.allclose(np.linalg.norm(page, axis=1), 1, atol=1e-2)
    assert np.array_equal(page, synth.page(3)) and np.array_equal(page, bfloat16_values(page))
    assert not to_storage(page).patch or len(to_storage(page).patch["i"]) < 0.01 * page.size  # float16 holds it
    query = synth.query(3, 0)
    assert query.shape == (20, 256)
    scores = [maxsim(query, synth.page(i)) for i in range(30)]
    ranked = list(np.argsort(scores)[::-1])
    assert ranked[0] == 3 and set(ranked[:10]) == set(range(10))  # the page, then its topic


def test_bench_search_reports_every_figure(tmp_path, tiny_model_dir):
    # the real shape is 257 x 1280; a smaller one keeps the test quick
    args = ["--pages", "60", "--queries", "4", "--tokens", "64", "--dim", "256", "--json", "--plot", tmp_path / "b.png"]
    proc = run_cli(["bench", "search", *args], cli_env(tiny_model_dir, tmp_path / "data"), tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert KEYS <= data.keys() and data["pages"] == 60 and data["token_bytes_per_page"] == 64 * 256 * 2
    assert data["recall_at_10"] == 1.0  # 60 pages fit in the prefetch: the fast path sees them all
    assert all(data[k] > 0 for k in ("fast_p50_ms", "exact_p50_ms", "scan_p50_ms", "speedup_vs_exact"))
    assert data["exact_gap_10_11"] > 1  # a topic's 10 pages stand clear of the rest
    # the search data in RAM is a small part of the token set; disk holds the token set twice (tokens, unit)
    assert 0 < data["ram_bytes_per_page"] < data["token_bytes_per_page"] / 10
    assert data["disk_bytes_per_page"] > 2 * data["token_bytes_per_page"]
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "data").exists()  # the collection lived in a temporary directory


def test_bench_search_rejects_bad_sizes(tmp_path, tiny_model_dir):
    proc = run_cli(["bench", "search", "--pages", "ten"], cli_env(tiny_model_dir, tmp_path / "data"), tmp_path)
    assert proc.returncode == 2 and "--pages" in proc.stderr


def test_bench_page_reports_what_a_page_costs(tmp_path, tiny_model_dir):
    """A page of more rows than one multivector may hold at its dimension (4095 at 256): two chunks, two REST
    requests, one gRPC request, nothing over a server's limits, the tokens back exact, disk near the token bytes."""
    args = ["bench", "page", "--dim", "256", "--tokens", "5000", "--pages", "2", "--json"]
    data = json.loads(run_cli(args, cli_env(tiny_model_dir, tmp_path / "data"), tmp_path).stdout)
    assert data["rows"]["tokens"] == 4095 and data["rows"]["tokens_2"] == 5000 - 4095
    assert data["rest"]["requests_per_page"] == 2 and data["grpc"]["requests_per_page"] == 1
    assert data["rest"]["over_limits"] == data["grpc"]["over_limits"] == 0
    assert data["rest"]["largest_request_bytes"] < data["rest"]["bytes_per_page"]  # the page took two requests
    assert data["exact"] and 1.0 <= data["disk_ratio"] < 1.5
