"""`tokendirect bench scale`: the scale model's arithmetic on given bytes per page, its reading of `bench search
--json` output, and a run that measures a small collection itself (a small shape keeps it quick)."""

from __future__ import annotations

import json

import pytest

from cli.scale import Node, PageBytes, from_bench_json, scale
from core.errors import UsageError
from tests.helpers import cli_env, run_cli

FULL = PageBytes(1121, 1280, disk=6e6, ram=50e3, source="given")
SMALL = PageBytes(257, 1280, disk=1.5e6, ram=40e3, source="given")
NODE = Node(ram_gb=64, disk_gb=2000, fill=0.5)


def test_disk_ram_and_nodes_follow_from_the_bytes_per_page():
    model = scale([FULL, SMALL], [1_000_000], NODE, replication_factor=2)
    full, small = model.rows
    assert (full.disk_gb, full.ram_gb) == (12_000, 100)  # 1M x 6 MB x 2 copies; 1M x 50 kB x 2
    assert (full.nodes_for_disk, full.nodes_for_ram, full.nodes, full.bound_by) == (12, 4, 12, "disk")
    assert (small.disk_gb, small.nodes_for_disk, small.nodes) == (3_000, 3, 3)
    assert model.one_node_pages == {"1121 x 1280": 166_666, "257 x 1280": 666_666}  # min(disk, RAM), one copy


def test_ingest_rates_for_a_day():
    (row,) = scale([FULL], [100_000_000], NODE, replication_factor=2, encode_rate=20).rows
    assert row.encode_pages_per_s == round(100_000_000 / 86_400, 2)  # 1,157 pages every second
    assert row.write_mb_per_s == round(100_000_000 / 86_400 * 6 * 2, 1)  # every copy is written
    assert row.write_mb_per_s_per_node == round(row.write_mb_per_s / row.nodes, 1)
    assert row.encode_workers == 58  # 1,157 / 20 pages/s, rounded up


def test_ram_can_be_the_first_bound_and_a_cluster_has_a_node_per_replica():
    tiny_ram = Node(ram_gb=1, disk_gb=100_000, fill=1.0)
    (row,) = scale([FULL], [1_000_000], tiny_ram, replication_factor=3).rows
    assert row.bound_by == "RAM" and row.nodes == row.nodes_for_ram == 150
    (few,) = scale([FULL], [10], NODE, replication_factor=3).rows
    assert few.nodes == 3  # one copy of a shard per node, whatever the size
    with pytest.raises(UsageError):
        scale([FULL], [10], Node(fill=0), replication_factor=2)


def test_bytes_per_page_are_read_from_bench_search_output(tmp_path):
    run = {"pages": 2000, "tokens_per_page": 257.0, "token_bytes_per_page": 257 * 1280 * 2, "source": "synthetic",
           "disk_bytes_per_page": 1.6e6, "ram_bytes_per_page": 45e3}  # fmt: skip
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({**run, "runs": [run]}))
    page = from_bench_json(path)
    assert (page.tokens, page.dim, page.disk, page.ram) == (257, 1280, 1.6e6, 45e3) and "2,000 pages" in page.source
    path.write_text(json.dumps({**run, "disk_bytes_per_page": None}))  # measured on a server: no files to read
    with pytest.raises(UsageError, match="no disk figure"):
        from_bench_json(path)
    path.write_text("not json")
    with pytest.raises(UsageError, match="bench search --json"):
        from_bench_json(path)


def test_bench_scale_measures_a_small_collection_and_prints_the_table(tmp_path, tiny_model_dir):
    env = cli_env(tiny_model_dir, tmp_path / "data")
    args = ["--tokens", "20,40", "--dim", "64", "--measure-pages", "30", "--pages", "1000,1000000", "--json"]
    proc = run_cli(["bench", "scale", *args], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    model = json.loads(proc.stdout)
    assert [s["tokens"] for s in model["shapes"]] == [20, 40]
    assert all(s["disk"] > 0 and s["ram"] > 0 for s in model["shapes"])
    assert model["shapes"][1]["disk"] > model["shapes"][0]["disk"]  # twice the tokens, more bytes
    assert [(r["pages"], r["shape"]) for r in model["rows"]] == [
        (1000, "20 x 64"), (1000, "40 x 64"), (1000000, "20 x 64"), (1000000, "40 x 64"),
    ]  # fmt: skip
    text = run_cli(["bench", "scale", *args[:-1]], env, tmp_path)
    assert text.returncode == 0 and "one node holds" in text.stdout and "1,000,000" in text.stdout
    assert not (tmp_path / "data").exists()  # measured in a temporary directory
    bad = run_cli(["bench", "scale", "--pages", "many"], env, tmp_path)
    assert bad.returncode == 2 and "--pages takes whole numbers" in bad.stderr
