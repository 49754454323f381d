"""Retrieval quality on a local labelled set in the ViDoRe (BEIR) layout, every search mode side by side.

    DIR/corpus/        the pages: images (PNG, JPEG, TIFF) and/or PDFs
    DIR/queries.jsonl  {"query-id": "q01", "query": "..."}                     one line per query
    DIR/qrels.jsonl    {"query-id": "q01", "corpus-id": "guide.pdf#2", "score": 1}   one line per relevant page

A corpus-id names a file under corpus/ (its path, or its name without extension when that is unique) and, after
`#`, a page of a PDF or multi-page TIFF (no `#`: page 1). A query may also name an image under DIR (`"image":
"queries/q01.png"`): the visual signal is then asked with that image instead of the rendered text. The corpus is
ingested into a collection of its own, then every query runs in each mode; nDCG@5 uses the qrels' scores as graded
gains. Hybrid's fusion weights are calibrated on the set too (search/fusion.py): the run `hybrid-calibrated` uses
them, and `save_weights` keeps them in the collection's record for every later search.

    from cli.evaluation import evaluate
    report = evaluate("eval-set/", settings)
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

from config import Settings
from core.errors import InputError
from core.model import OcrModel
from core.pages import count_pages, discover, file_digest, point_id
from core.store import PageStore, open_store
from core.text import FROM_DECODER, FROM_PDF
from ingest import Ingestor
from search import Searcher, fusion
from search.plan import signal_rankings

# (label, mode, exact): the visual signal both through its normal query and as exact MaxSim over every page; hybrid
# with the weights a search of the collection uses, and with those calibrated on the set (CALIBRATED)
RUNS = [
    ("visual", "visual", False),
    ("visual-exact", "visual", True),
    ("text", "text", False),
    ("hybrid", "hybrid", False),
    ("hybrid-calibrated", "hybrid", False),
    ("rerank", "rerank", False),
]
CALIBRATED = "hybrid-calibrated"
DEPTH = 10  # hits retrieved per query: recall@10 and MRR@10 look this deep


@dataclass
class EvalSet:
    root: Path
    corpus: Path
    queries: dict[str, str]  # query-id -> text
    qrels: dict[str, dict[str, float]]  # query-id -> {corpus-id: graded relevance > 0}
    pages: dict[str, tuple[Path, int]]  # corpus-id -> (file, page)
    images: dict[str, Path] = field(default_factory=dict)  # query-id -> the image the visual signal is asked with


@dataclass
class RunResult:
    run: str
    mode: str
    exact: bool
    hit_at_5: float  # share of queries with a relevant page among the first 5
    ndcg_at_5: float
    recall_at_1: float
    recall_at_5: float
    recall_at_10: float
    mrr: float  # MRR@10
    latency_ms_p50: float  # per query, as a caller waits for it: query encoding (modes that use it) + the search
    latency_ms_mean: float
    search_ms_mean: float  # the search alone (Qdrant's query, and BM25 embedding of the query text)


@dataclass
class EvalReport:
    set: str
    collection: str
    model: str
    queries: int
    pages: int
    text_pages: dict[str, int]
    encode_ms_mean: float  # rendering + encoding one query, part of every latency but text's
    fusion: dict = field(default_factory=dict)  # the weights the `hybrid` run used, and where they came from
    calibration: dict = field(default_factory=dict)  # the weights calibrated on the set (`hybrid-calibrated`)
    saved_weights: bool = False  # the calibrated weights were kept in the collection's record
    runs: list[RunResult] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def load_set(root: str | Path) -> EvalSet:
    """Read and check a labelled set; any problem is an InputError naming the file and line."""
    root = Path(root)
    corpus = root / "corpus"
    if not corpus.is_dir():
        raise InputError(f"{root} is not an evaluation set: it has no corpus/ folder (see `tokendirect eval --help`)")
    files, _ = discover([corpus])
    if not files:
        raise InputError(f"{corpus} holds no PDFs or images")
    queries, images = {}, {}
    for where, row in _jsonl(root / "queries.jsonl"):
        qid, text = _field(row, where, "query-id", "_id"), _field(row, where, "query", "text")
        queries[str(qid)] = str(text)
        if row.get("image"):
            image = root / str(row["image"])
            if not image.is_file():
                raise InputError(f"{where}: image {row['image']!r} is not a file under {root}")
            images[str(qid)] = image
    by_path = {f.relative_to(corpus).as_posix(): f for f in files}
    by_stem: dict[str, list[Path]] = {}
    for f in files:
        by_stem.setdefault(f.relative_to(corpus).with_suffix("").as_posix(), []).append(f)
    qrels: dict[str, dict[str, float]] = {}
    pages: dict[str, tuple[Path, int]] = {}
    page_counts: dict[Path, int] = {}
    for where, row in _jsonl(root / "qrels.jsonl"):
        qid, cid = str(_field(row, where, "query-id")), str(_field(row, where, "corpus-id"))
        score = float(row.get("score", 1))
        if qid not in queries:
            raise InputError(f"{where}: query-id {qid!r} is not in queries.jsonl")
        if score <= 0:
            continue
        name, _, number = cid.partition("#")
        path = by_path.get(name) or (by_stem.get(name) if len(by_stem.get(name, [])) == 1 else [None])[0]
        if path is None:
            raise InputError(f"{where}: corpus-id {cid!r} names no single file under {corpus}")
        if not re.fullmatch(r"\d*", number):
            raise InputError(f"{where}: corpus-id {cid!r}: the page after '#' must be a number")
        page = int(number or 1)
        if path not in page_counts:
            page_counts[path] = count_pages(path)
        if not 1 <= page <= page_counts[path]:
            raise InputError(f"{where}: corpus-id {cid!r}: {path.name} has {page_counts[path]} pages")
        qrels.setdefault(qid, {})[cid] = score
        pages[cid] = (path, page)
    unjudged = sorted(set(queries) - set(qrels))
    if unjudged:
        raise InputError(f"{root / 'qrels.jsonl'}: no relevant page for queries {', '.join(map(repr, unjudged[:5]))}")
    return EvalSet(root, corpus, queries, qrels, pages, images)


def metrics(ranked: list[str], relevant: dict[str, float]) -> dict[str, float]:
    """hit@5, nDCG@5 (graded, linear gain), recall@1/5/10 and MRR@10 of one ranked list of corpus-ids."""
    dcg = sum(relevant.get(cid, 0.0) / math.log2(i + 2) for i, cid in enumerate(ranked[:5]))
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(relevant.values(), reverse=True)[:5]))
    first = next((i for i, cid in enumerate(ranked[:DEPTH]) if cid in relevant), None)
    recall = {k: len(set(ranked[:k]) & set(relevant)) / len(relevant) for k in (1, 5, 10)}
    return {
        "hit_at_5": float(any(cid in relevant for cid in ranked[:5])),
        "ndcg_at_5": dcg / ideal,
        "recall_at_1": recall[1],
        "recall_at_5": recall[5],
        "recall_at_10": recall[10],
        "mrr": 0.0 if first is None else 1.0 / (first + 1),
    }


def evaluate(
    root: str | Path, settings: Settings | None = None, collection: str | None = None, *, save_weights: bool = False
) -> EvalReport:
    """Ingest the set's corpus into `collection` (default eval-<folder name>; pages already there are kept, pages
    of files no longer in the corpus are removed), then run every query in every mode of RUNS. `save_weights`:
    keep the fusion weights calibrated on the set in the collection's record, for every later hybrid search."""
    evalset = load_set(root)
    s = (settings or Settings()).model_copy(update={"collection": collection or default_collection(evalset.root)})
    model = OcrModel.from_settings(s)
    store = open_store(s)
    try:
        # prune (forced: the collection mirrors the corpus): pages of files edited or removed since the last run go
        ingest = Ingestor(model, store, s).ingest([evalset.corpus], prune=True, force=True)
        report = _run(evalset, Searcher(model, store, s), store, s.collection, ingest.failures)
        if save_weights:
            store.save_fusion(report.calibration["record"])
            report.saved_weights = True
        return report
    finally:
        store.close()


def default_collection(root: Path) -> str:
    return "eval-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", Path(root).resolve().name).strip("-") or "set")


def _run(evalset: EvalSet, searcher: Searcher, store: PageStore, collection: str, failures) -> EvalReport:
    point_to_cid = {point_id(file_digest(path), page): cid for cid, (path, page) in evalset.pages.items()}
    total, with_text = store.count(), _text_sources(store)
    weights = searcher.fusion()
    report = EvalReport(
        set=str(evalset.root),
        collection=collection,
        model=searcher.model.name,
        queries=len(evalset.queries),
        pages=total,
        text_pages={**with_text, "none": total - sum(with_text.values())},
        encode_ms_mean=0.0,
        fusion=weights.to_dict(),
        failures=[asdict(f) for f in failures],
    )
    searcher.search("warm up", DEPTH, mode="visual")  # first-call costs (kernels, caches) stay out of the timings
    runs = {label: _Run(label, mode, exact) for label, mode, exact in RUNS}
    encoded, rankings = {}, []
    for qid, text in evalset.queries.items():
        started = time.perf_counter()
        image = evalset.images.get(qid)
        tokens = searcher.query_tokens(_open_image(image)) if image else searcher.encode_query(text)
        encoded[qid] = (tokens, time.perf_counter() - started)
        for run in runs.values():
            if run.label != CALIBRATED:
                run.measure(searcher, qid, text, encoded[qid], evalset.qrels[qid], point_to_cid, weights)
        by_visual, by_text = signal_rankings(store, tokens, text, DEPTH)  # what hybrid fuses, to calibrate on
        relevant = {pid for pid, cid in point_to_cid.items() if cid in evalset.qrels[qid]}
        ids = [[h.point_id for h in hits] for hits in (by_visual, by_text)]
        rankings.append(fusion.QueryRankings(*ids, relevant))
    calibration = fusion.calibrate(rankings, weights)
    report.calibration = {**calibration.to_dict(), "record": fusion.record_fields(calibration, str(evalset.root))}
    pages = [p.point_id for batch in store.scroll(batch_size=256, with_tokens=False) for p in batch]
    report.fusion["random_visual_hit_at_5"] = round(fusion.random_visual_hit_at_5(rankings, weights, pages), 4)
    for qid, text in evalset.queries.items():
        qrels = evalset.qrels[qid]
        runs[CALIBRATED].measure(searcher, qid, text, encoded[qid], qrels, point_to_cid, calibration.weights)
    report.encode_ms_mean = round(1000 * statistics.fmean(t for _, t in encoded.values()), 1)
    report.runs = [run.result() for run in runs.values()]
    return report


@dataclass
class _Run:
    """One run's per-query metrics and timings."""

    label: str
    mode: str
    exact: bool
    scores: list = field(default_factory=list)
    times: list = field(default_factory=list)  # seconds a caller waits: query encoding (modes that use it) + search
    search_times: list = field(default_factory=list)

    def measure(self, searcher, qid, text, encoded, relevant, point_to_cid, weights) -> None:
        tokens, encode_s = encoded
        started = time.perf_counter()
        hits = searcher.search(text, DEPTH, mode=self.mode, exact=self.exact, tokens=tokens, fusion=weights)
        self.search_times.append(time.perf_counter() - started)
        self.times.append(self.search_times[-1] + (0.0 if self.mode == "text" else encode_s))
        # a page outside the qrels (judged or not) counts as not relevant
        self.scores.append(metrics([point_to_cid.get(h.point_id, h.point_id) for h in hits], relevant))

    def result(self) -> RunResult:
        mean = {k: round(statistics.fmean(m[k] for m in self.scores), 4) for k in self.scores[0]}
        ms = [1000 * t for t in self.times]
        return RunResult(
            self.label,
            self.mode,
            self.exact,
            **mean,
            latency_ms_p50=round(statistics.median(ms), 1),
            latency_ms_mean=round(statistics.fmean(ms), 1),
            search_ms_mean=round(1000 * statistics.fmean(self.search_times), 2),
        )


def _open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError as exc:
        raise InputError(f"cannot read query image {path}: {exc}") from None


def _text_sources(store) -> dict[str, int]:
    counts = {FROM_PDF: 0, FROM_DECODER: 0}
    for batch in store.scroll(batch_size=256, with_tokens=False):
        for p in batch:
            if p.payload.get("text_source") in counts:
                counts[p.payload["text_source"]] += 1
    return counts


def format_report(report: EvalReport) -> str:
    t = report.text_pages
    c = report.calibration
    w = fusion.FusionWeights(**{k: v for k, v in report.fusion.items() if k != "random_visual_hit_at_5"})
    text_hit = next((r.hit_at_5 for r in report.runs if r.run == "text"), 0.0)
    calibrated = fusion.FusionWeights(**c["weights"])
    lines = [
        f"set {report.set}: {report.queries} queries, {report.pages} pages ({t[FROM_PDF]} with a PDF text layer, "
        f"{t[FROM_DECODER]} with decoded text, {t['none']} without text)",
        f"collection {report.collection!r}, model {report.model}; query encoding {report.encode_ms_mean:.0f} ms",
        f"hybrid: {w.describe()}; with a random visual ranking instead (mean of 200): hit@5 "
        f"{report.fusion['random_visual_hit_at_5']:.3f}, text alone {text_hit:.3f}",
        f"hybrid-calibrated: {calibrated.describe().replace(' (calibrated)', '')}, the best of {c['candidates']} "
        f"weightings on these {c['queries']} queries (hit@5 {c['hit_at_5']:.3f}; leave-one-out, each query ranked "
        f"with weights chosen on the others: {c['loo_hit_at_5']:.3f})"
        + (f"; saved in collection {report.collection!r}" if report.saved_weights else ""),
        "",
        f"{'run':<19}{'hit@5':>7}{'nDCG@5':>8}{'R@1':>7}{'R@5':>7}{'R@10':>7}{'MRR':>7}{'p50 ms':>10}{'mean ms':>10}"
        f"{'search ms':>11}",
    ]
    for r in report.runs:
        lines.append(
            f"{r.run:<19}{r.hit_at_5:>7.3f}{r.ndcg_at_5:>8.3f}{r.recall_at_1:>7.3f}{r.recall_at_5:>7.3f}"
            f"{r.recall_at_10:>7.3f}{r.mrr:>7.3f}{r.latency_ms_p50:>10.1f}{r.latency_ms_mean:>10.1f}"
            f"{r.search_ms_mean:>11.2f}"
        )
    lines += [f"failed: {f['path']}: {f['reason']}" for f in report.failures]
    return "\n".join(lines)


def _jsonl(path: Path):
    if not path.is_file():
        raise InputError(f"{path} is missing (see `tokendirect eval --help` for the layout)")
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path.name} line {number}"
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise InputError(f"{where}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"{where}: not a JSON object")
            yield where, row


def _field(row: dict, where: str, *names: str):
    for name in names:
        if row.get(name) not in (None, ""):
            return row[name]
    raise InputError(f"{where}: no {names[0]!r}")


__all__ = ["evaluate", "load_set", "metrics", "format_report", "EvalReport", "EvalSet", "RunResult", "RUNS"]
