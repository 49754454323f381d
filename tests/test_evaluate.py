"""`tokendirect eval`: the labelled-set layout, the metrics, the sample set, and a run on a set the tests make."""

from __future__ import annotations

import json
import math

import pytest

from cli.evaluation import RUNS, evaluate, load_set, metrics
from cli.sample import DOCUMENTS, QUERIES, SCANS, build_sample, write_text_pdf
from core.errors import InputError
from core.text import pdf_page_texts
from search import Searcher
from tests.helpers import cli_env, ok_json, page_image, run_here, usage_error


def write_set(root, queries: dict[str, tuple[str, str]]):
    corpus = root / "corpus"
    corpus.mkdir(parents=True)
    write_text_pdf(
        corpus / "guide.pdf",
        [["Brewing guide", "Notes on zymurgy and yeast."], ["Harbour notes", "Ferry times change in winter."]],
    )
    page_image(["Scanned letter", "Dear Sir"], size=(600, 600)).save(corpus / "letter.png")
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"query-id": q, "query": t}) + "\n" for q, (t, _) in queries.items())
    )
    write_qrels(root, queries)
    return root


def write_qrels(root, queries: dict[str, tuple[str, str]]) -> None:
    (root / "qrels.jsonl").write_text(
        "".join(json.dumps({"query-id": q, "corpus-id": c, "score": 1}) + "\n" for q, (_, c) in queries.items())
    )


SMALL = {
    "q1": ("zymurgy and yeast", "guide.pdf#1"),
    "q2": ("ferry winter", "guide.pdf#2"),
    "q3": ("a scanned letter", "letter"),  # by name without extension; only pixels: text cannot find it
}


def test_metrics_by_hand():
    m = metrics(["a", "b", "c", "d", "e", "f"], {"b": 1.0, "f": 2.0})
    ideal = 2 + 1 / math.log2(3)
    assert m["ndcg_at_5"] == pytest.approx((1 / math.log2(3)) / ideal)
    assert (m["recall_at_1"], m["recall_at_5"], m["recall_at_10"], m["mrr"]) == (0.0, 0.5, 1.0, 0.5)
    assert m["hit_at_5"] == 1.0 and metrics(["a", "b", "c", "d", "e", "f"], {"f": 1.0})["hit_at_5"] == 0.0
    assert metrics([], {"a": 1.0}) == {
        "hit_at_5": 0.0,
        "ndcg_at_5": 0.0,
        "recall_at_1": 0.0,
        "recall_at_5": 0.0,
        "recall_at_10": 0.0,
        "mrr": 0.0,
    }
    assert metrics(["a"], {"a": 1.0})["ndcg_at_5"] == 1.0


def test_the_layout_is_checked_line_by_line(tmp_path):
    with pytest.raises(InputError, match="no corpus/ folder"):
        load_set(tmp_path)
    root = write_set(tmp_path / "set", SMALL)
    evalset = load_set(root)
    assert evalset.pages["guide.pdf#2"][1] == 2 and evalset.pages["letter"][0].name == "letter.png"
    qrels = root / "qrels.jsonl"
    for line, message in [
        ({"query-id": "q1", "corpus-id": "guide.pdf#3"}, "guide.pdf has 2 pages"),
        ({"query-id": "q1", "corpus-id": "nothing.png"}, "names no single file"),
        ({"query-id": "q9", "corpus-id": "letter"}, "'q9' is not in queries.jsonl"),
        ({"query-id": "q1"}, "no 'corpus-id'"),
    ]:
        qrels.write_text(json.dumps(line) + "\n")
        with pytest.raises(InputError, match=f"qrels.jsonl line 1: .*{message}"):
            load_set(root)
    qrels.write_text("{oops\n")
    with pytest.raises(InputError, match="line 1: not JSON"):
        load_set(root)
    write_qrels(root, SMALL)
    queries = root / "queries.jsonl"
    queries.write_text(json.dumps({"query-id": "q1", "query": "zymurgy", "image": "queries/q1.png"}) + "\n")
    with pytest.raises(InputError, match="queries.jsonl line 1: image 'queries/q1.png' is not a file"):
        load_set(root)


def test_the_sample_set_is_born_digital_text_plus_scans(tmp_path):
    evalset = load_set(build_sample(tmp_path / "sample"))
    assert len(evalset.queries) == len(QUERIES) and set(evalset.qrels) == set(QUERIES)
    for name, pages in DOCUMENTS.items():
        texts = pdf_page_texts(evalset.corpus / name, len(pages))
        assert all(text.startswith(page[0]) for text, page in zip(texts, pages, strict=True))
    for name in SCANS:
        assert pdf_page_texts(evalset.corpus / name, 1) == [""]
    before = {p.name: p.read_bytes() for p in evalset.corpus.iterdir()}
    build_sample(tmp_path / "sample")  # the same bytes again: an eval collection keeps its pages
    assert {p.name: p.read_bytes() for p in evalset.corpus.iterdir()} == before


def test_evaluate_reports_every_run_and_reuses_its_collection(settings, tmp_path):
    """On the embedded engine (the modes themselves are held to both engines in test_text_search)."""
    root = write_set(tmp_path / "small", SMALL)
    report = evaluate(root, settings)
    assert report.collection == "eval-small" and (report.pages, report.queries) == (3, 3)
    assert report.text_pages == {"pdf": 2, "decoded": 0, "none": 1}
    runs = {r.run: r for r in report.runs}
    assert list(runs) == [label for label, _, _ in RUNS]
    text = runs["text"]
    # the two text queries find their page first; the scanned page is out of BM25's reach
    assert (text.recall_at_1, text.recall_at_10, text.mrr) == (
        pytest.approx(2 / 3, abs=1e-4),
        pytest.approx(2 / 3, abs=1e-4),
        pytest.approx(2 / 3, abs=1e-4),
    )
    assert text.hit_at_5 == pytest.approx(2 / 3, abs=1e-4)
    assert runs["hybrid"].recall_at_10 == 1.0 and runs["visual"].recall_at_10 == 1.0  # 3 pages, all seen
    assert runs["hybrid"].hit_at_5 == runs["hybrid-calibrated"].hit_at_5 == 1.0  # 3 pages: all in the top 5
    assert runs["rerank"].recall_at_10 == pytest.approx(2 / 3, abs=1e-4)
    assert report.fusion["source"] == "default" and not report.saved_weights
    assert report.calibration["queries"] == 3 and report.calibration["record"]["calibrated_on"] == str(root)
    assert runs["text"].latency_ms_mean < runs["visual"].latency_ms_mean  # text needs no query encoding
    assert all(r.search_ms_mean > 0 for r in report.runs)

    (root / "corpus" / "letter.png").unlink()  # a page leaves the corpus: it leaves the collection too
    write_qrels(root, {**SMALL, "q3": ("a scanned letter", "guide.pdf#1")})
    again = evaluate(root, settings, save_weights=True)
    assert again.pages == 2 and again.text_pages["none"] == 0
    # the calibrated weights are kept with the collection, and every later hybrid search uses them
    assert again.saved_weights and again.fusion["source"] == "default"
    with Searcher.from_settings(settings.model_copy(update={"collection": "eval-small"})) as searcher:
        weights = searcher.fusion().to_dict()
        assert weights == {**again.calibration["weights"], "source": "collection"}
    assert evaluate(root, settings).fusion["source"] == "collection"


def test_the_eval_command(tiny_model_dir, tmp_path):
    root = write_set(tmp_path / "small", SMALL)
    # the scanned letter's query asks the visual signal with the page's own image
    (root / "queries").mkdir()
    page_image(["Scanned letter", "Dear Sir"], size=(600, 600)).save(root / "queries" / "q3.png")
    lines = (root / "queries.jsonl").read_text().splitlines()
    lines[2] = json.dumps({**json.loads(lines[2]), "image": "queries/q3.png"})
    (root / "queries.jsonl").write_text("\n".join(lines) + "\n")
    env = cli_env(tiny_model_dir, tmp_path / "data")
    data = ok_json(run_here(["eval", root, "--json", "--save-weights"], env, tmp_path))
    assert [r["run"] for r in data["runs"]] == [label for label, _, _ in RUNS]
    assert data["saved_weights"] and data["runs"][0]["recall_at_1"] >= 1 / 3 - 1e-4  # the image finds its page
    assert data["runs"][2]["mode"] == "text" and data["runs"][1]["exact"] is True
    on_set = env | {"TOKENDIRECT_COLLECTION": "eval-small"}
    hits = ok_json(run_here(["search", "zymurgy", "--mode", "text", "--json"], on_set, tmp_path))
    assert hits["mode"] == "text" and [(h["page"], h["signals"]) for h in hits["hits"]] == [(1, ["text"])]
    text = run_here(["eval", root], env, tmp_path).stdout  # the table: every run with its hit@5
    assert "hybrid: RRF k=" in text and "(collection)" in text and "leave-one-out" in text
    assert all(f"\n{label} " in text for label, _, _ in RUNS) and "hit@5" in text
    info = ok_json(run_here(["info", "--json"], on_set, tmp_path))
    assert (info["points"], info["text_search"], info["pages_with_text"]) == (3, True, 2)
    assert "no corpus/ folder" in usage_error(run_here(["eval", tmp_path / "nothing"], env, tmp_path))
    assert "unknown search mode 'fuzzy'" in usage_error(run_here(["search", "x", "--mode", "fuzzy"], env, tmp_path))
    built = run_here(["eval", "--build-sample", tmp_path / "sample"], env, tmp_path)
    assert built.returncode == 0 and len(load_set(tmp_path / "sample").queries) == len(QUERIES)
