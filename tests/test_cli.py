"""The `tokendirect` command end to end on the five-page test documents with the tiny model: through its entry point
in this process (`run_here`: the model is loaded once), and `python -m STAGE` in subprocesses.

The folder is ingested once for the module (the `docs` fixture is function-scoped, so the module builds the same
folder with the same helpers); every test then runs its own commands against that store.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.helpers import MISSING_POINT, cli_env, make_docs, ok_json, run_cli, run_here, sha256, usage_error

HIT_FIELDS = {"point_id", "doc_id", "source", "page", "score"}


@pytest.fixture(scope="module")
def lib(tmp_path_factory, tiny_model_dir) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("cli")
    docs = make_docs(root / "docs")
    env = cli_env(tiny_model_dir, root / "data")
    first = run_here(["ingest", docs, "--json"], env, root)
    second = run_here(["ingest", docs, "--json"], env, root)
    doc_ids = {sha256(p): p.resolve() for p in docs.iterdir()}
    return SimpleNamespace(
        root=root, docs=docs, env=env, first=first, second=second, doc_ids=doc_ids, invoice=docs / "invoice.png"
    )


@pytest.fixture(scope="module")
def invoice_hit(lib) -> dict:
    """The top hit for "Invoice", decoded (search --decode)."""
    found = ok_json(run_here(["search", "Invoice", "--decode", "--json", "--top-k", "1"], lib.env, lib.root))
    (hit,) = found["hits"]
    return hit


def test_ingest_stores_every_page(lib):
    report = ok_json(lib.first)
    assert report["pages_added"] == 5
    assert report["pages_skipped"] == 0
    assert report["failures"] == []
    assert sorted(Path(p).name for p in report["documents_added"]) == ["invoice.png", "notes.tiff", "report.pdf"]


def test_second_ingest_adds_nothing(lib):
    report = ok_json(lib.second)
    assert report["pages_added"] == 0
    assert report["pages_skipped"] == 5
    assert report["documents_added"] == []
    assert len(report["documents_skipped"]) == 3


def test_python_m_ingest_is_tokendirect_ingest(lib):
    proc = run_cli([lib.docs, "--json"], lib.env, lib.root, command=[sys.executable, "-m", "ingest"])
    same, other = ok_json(proc), ok_json(lib.second)
    assert same.pop("timings").keys() == other.pop("timings").keys()  # the times differ, the fields do not
    assert same == other


@pytest.mark.parametrize("stage", ["search", "decode"])
def test_python_m_other_stages_run_the_cli(lib, stage):
    proc = run_cli(["--help"], lib.env, lib.root, command=[sys.executable, "-m", stage])
    assert proc.returncode == 0, proc.stderr
    assert f"python -m {stage}" in proc.stdout


def test_info(lib, tiny_model_dir):
    info = ok_json(run_here(["info", "--json"], lib.env, lib.root))
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert info["collection"] == "pages"
    assert info["model"] == str(tiny_model_dir)
    assert info["dimension"] == config["text_config"]["hidden_size"]
    assert info["points"] == 5
    assert info["documents"] == 3
    assert info["first_stage"] == "codebook, learned at 1024 pages (not yet: the fine stage scores every page)"
    # the embedded store is one shard, one copy (a server reports what the collection was created with)
    assert [info[k] for k in ("shard_number", "replication_factor", "write_consistency_factor")] == [1, 1, 1]


def test_search_returns_ranked_hits(lib):
    found = ok_json(run_here(["search", "Invoice", "--json", "--top-k", "3"], lib.env, lib.root))
    hits = found["hits"]
    assert len(hits) == 3
    for hit in hits:
        assert HIT_FIELDS <= hit.keys(), hit
        assert Path(hit["source"]).resolve() == lib.doc_ids[hit["doc_id"]]  # doc_id = sha256 of the file
        assert hit["page"] >= 1
        assert isinstance(hit["score"], float)
    assert len({h["point_id"] for h in hits}) == 3
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_search_reports_how_the_query_was_drawn(lib):
    found = ok_json(run_here(["search", "Invoice total", "--json", "--top-k", "1"], lib.env, lib.root))
    assert found["rendering"] == {"views": 1, "max_views": 3, "fonts": ["DejaVu Sans"], "missing": [], "warnings": []}
    proc = run_here(["search", "Invoice \U0001f980 total", "--json", "--top-k", "1"], lib.env, lib.root)
    rendering = ok_json(proc)["rendering"]
    assert [m["codepoint"] for m in rendering["missing"]] == ["U+1F980"] and rendering["warnings"]
    assert "warning: " in proc.stderr and "U+1F980" in proc.stderr
    assert "U+1F980" in usage_error(run_here(["search", "\U0001f980"], lib.env, lib.root))
    message = usage_error(run_here(["search", "invoice total " * 3000], lib.env, lib.root))
    assert "limit is 3 views" in message


def test_search_decode_gives_text(invoice_hit):
    assert HIT_FIELDS <= invoice_hit.keys()
    assert isinstance(invoice_hit["text"], str)


def test_decode_point(lib, invoice_hit):
    decoded = ok_json(run_here(["decode", invoice_hit["point_id"], "--json"], lib.env, lib.root))
    assert isinstance(decoded["text"], str)
    assert decoded["point_id"] == invoice_hit["point_id"]
    assert decoded["doc_id"] == invoice_hit["doc_id"]
    assert decoded["page"] == invoice_hit["page"]
    # Same stored tokens, same greedy decoder: the same text as search --decode.
    assert decoded["text"] == invoice_hit["text"]


@pytest.mark.parametrize("point", [MISSING_POINT, "not-a-uuid"])
def test_decode_unknown_point_is_a_usage_error(lib, point):
    proc = run_here(["decode", point], lib.env, lib.root)
    assert point in usage_error(proc)
    assert proc.stdout == ""


def test_search_without_a_query_is_a_usage_error(lib):
    usage_error(run_here(["search"], lib.env, lib.root))


IMAGE_SEARCH = ["search", "--image", "{invoice}", "--json", "--top-k", "5"]


@pytest.fixture(scope="module")
def image_hits(lib) -> list[dict]:
    args = [a.format(invoice=lib.invoice) for a in IMAGE_SEARCH]
    return ok_json(run_here(args, lib.env, lib.root))["hits"]


def test_search_by_image(lib, image_hits):
    hits = image_hits
    assert len(hits) == 5
    assert all(HIT_FIELDS <= h.keys() for h in hits)
    # Every stored page comes back once, and the query - the invoice page itself, encoded exactly as at
    # ingest - finds that page first.
    assert {h["doc_id"] for h in hits} == set(lib.doc_ids)
    assert len({h["point_id"] for h in hits}) == 5
    assert hits[0]["doc_id"] == sha256(lib.invoice)


def test_exact_search_gives_the_fast_paths_hits(lib, image_hits):
    args = [a.format(invoice=lib.invoice) for a in IMAGE_SEARCH]
    fast = image_hits
    exact = ok_json(run_here([*args, "--exact"], lib.env, lib.root))["hits"]
    assert [h["point_id"] for h in exact] == [h["point_id"] for h in fast]
    assert [h["score"] for h in exact] == pytest.approx([h["score"] for h in fast])


def test_search_filtered_by_document(lib):
    invoice_id = sha256(lib.invoice)
    found = ok_json(run_here(["search", "x", "--doc", invoice_id, "--json", "--top-k", "5"], lib.env, lib.root))
    hits = found["hits"]
    assert len(hits) == 1  # the invoice has one page; the other four are filtered out
    assert all(h["doc_id"] == invoice_id for h in hits)


@pytest.mark.parametrize("command", ["ingest", "search", "decode"])
def test_missing_model_directory_is_a_usage_error(lib, command):
    missing = lib.root / "no-such-model"
    args = {"ingest": [lib.invoice], "search": ["x"], "decode": [MISSING_POINT]}[command]
    proc = run_here([command, *args], cli_env(missing, lib.root / "data"), lib.root)
    line = usage_error(proc)
    assert "model" in line.lower()
    assert str(missing) in line


@pytest.mark.parametrize("command", ["ingest", "search", "decode"])
def test_another_checkpoint_is_refused(lib, tiny_model_dir, other_model_dir, command):
    args = {"ingest": [lib.invoice], "search": ["x"], "decode": [MISSING_POINT]}[command]
    proc = run_here([command, *args], cli_env(other_model_dir, lib.root / "data"), lib.root)
    line = usage_error(proc)
    assert str(tiny_model_dir) in line
    assert str(other_model_dir) in line


def test_make_test_model_writes_a_loadable_checkpoint(tmp_path):
    from core.model import OcrModel

    target = tmp_path / "made"
    proc = run_here(["make-test-model", target], cli_env(tmp_path / "unused", tmp_path / "data"), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (target / "config.json").is_file()
    model = OcrModel(str(target), device="cpu").load()
    assert model.config.model_type == "deepseek_ocr2"
    assert model.dim == model.config.text_config.hidden_size
