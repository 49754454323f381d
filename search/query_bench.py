"""`tokendirect bench query`: where the time of a query goes, from a command line's start to its hits.

Works in a temporary directory: the documents (the sample set's corpus unless --corpus names a folder) are ingested
with the configured model into an embedded store there, so the configured collection is never touched.

- Command line: fresh processes, each timed from its launch: start-up (the interpreter and the project's modules),
  libraries (torch and transformers, which the first use of the model imports), open (store, collection record,
  model guard), model load (the weights), render, encode (the query's views, and a blank canvas when its tokens are
  not cached yet), search (hybrid: Qdrant's query and the BM25 embedding of the text). Half of the runs start with
  an empty blank-canvas cache (what every command-line search paid before the cache), half with a filled one; the
  real `tokendirect search` command is timed end to end the same way, for comparison with the sum of the parts.
- In one process, the model loaded once: render, encode and search for each query in each mode, p50.
- Encoding a query of several views: one model call for all of them against one call per view, and with or without
  a blank canvas in the call.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from config import Settings
from search.plan import SEARCH_MODES

COLLECTION = "bench-query"
CHILD = "from search.query_bench import child; child()"
PHASES = ("start_up", "libraries", "open", "model_load", "render", "encode", "search")
LONG_QUERY_VIEWS = 2  # views of the multi-view query timed in the encoding comparison


def bench_query(
    settings: Settings | None = None,
    corpus: Path | None = None,
    queries: list[str] | None = None,
    runs: int = 3,
    repeat: int = 3,
    progress: Callable[[str], None] = lambda message: None,
) -> dict:
    from cli.sample import QUERIES, build_sample

    base = settings or Settings()
    queries = queries or [text for text, _ in QUERIES.values()]
    with tempfile.TemporaryDirectory(prefix="tokendirect-bench-query-") as tmp:
        s = base.model_copy(update={"data_dir": Path(tmp) / "data", "qdrant_url": None, "collection": COLLECTION})
        documents = corpus or build_sample(Path(tmp) / "sample") / "corpus"
        progress(f"ingesting {documents} with {s.model}")
        pages = _ingest(s, documents)
        env = _child_env(s)
        cache = Path(s.data_dir) / "cache"
        cold = {"empty_cache": [], "filled_cache": []}
        command = {"empty_cache": [], "filled_cache": []}
        for run in range(runs):
            for state in ("empty_cache", "filled_cache"):
                if state == "empty_cache":
                    shutil.rmtree(cache, ignore_errors=True)
                progress(f"command line, {state.replace('_', ' ')}, run {run + 1} of {runs}")
                cold[state].append(_child_run(env, queries[run % len(queries)]))
                if state == "empty_cache":
                    shutil.rmtree(cache, ignore_errors=True)
                command[state].append(_command_run(env, queries[run % len(queries)]))
        progress("one process, the model loaded once")
        warm, encoding = _warm(s, queries, repeat)
    return {
        "model": s.model,
        "pages": pages,
        "queries": len(queries),
        "runs": runs,
        "command_line": {
            state: {
                "phases_s": {p: _median(r[p] for r in cold[state]) for p in PHASES},
                "total_s": _median(r["total"] for r in cold[state]),
                "command_s": _median(command[state]),
            }
            for state in cold
        },
        "in_process_ms": warm,
        "encoding_ms": encoding,
    }


def _ingest(s: Settings, documents: Path) -> int:
    from core.model import OcrModel
    from core.store import open_store
    from ingest import Ingestor

    with open_store(s) as store:
        report = Ingestor(OcrModel.from_settings(s), store, s).ingest([documents])
        return report.pages_added + report.pages_skipped


def _child_env(s: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENDIRECT_")}
    for name in ("model", "revision", "device", "dtype", "data_dir", "collection", "query_font_px"):
        value = getattr(s, name)
        if value is not None:
            env[f"TOKENDIRECT_{name.upper()}"] = str(value)
    return env


def _child_run(env: dict[str, str], query: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, repr(time.time()), query], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the timed search failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout)


def _command_run(env: dict[str, str], query: str) -> float:
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", "from cli import main; main()", "search", query, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"tokendirect search failed: {proc.stderr.strip().splitlines()[-1:]}")
    return time.time() - started


def child() -> None:
    """One command-line search, timed phase by phase from the process's launch (argv: launch time, query)."""
    launched, query = float(sys.argv[1]), sys.argv[2]
    marks = {}

    def mark(name: str) -> None:
        marks[name] = time.time()

    from search import Searcher

    mark("start_up")
    import torch  # noqa: F401  what the first use of the model imports
    import transformers  # noqa: F401
    from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: F401

    mark("libraries")
    searcher = Searcher.from_settings()
    mode = searcher.default_mode()
    mark("open")
    searcher.model.load()
    mark("model_load")
    rendered = searcher.render(query)
    mark("render")
    tokens = searcher.encode_query(rendered)
    mark("encode")
    searcher.search(query, mode=mode, tokens=tokens)
    mark("search")
    searcher.close()
    times, previous = {}, launched
    for name in PHASES:
        times[name] = round(marks[name] - previous, 4)
        previous = marks[name]
    times["total"] = round(previous - launched, 4)
    print(json.dumps(times))


def _warm(s: Settings, queries: list[str], repeat: int) -> tuple[dict, dict]:
    from search import Searcher

    with Searcher.from_settings(s) as searcher:
        searcher.search("warm up", mode="visual")  # first-call costs (kernels, the blank canvas) stay out
        parts: dict[str, dict[str, list[float]]] = {m: {"render": [], "encode": [], "search": []} for m in SEARCH_MODES}
        for _ in range(repeat):
            for query in queries:
                started = time.perf_counter()
                rendered = searcher.render(query)
                rendered_s = time.perf_counter() - started
                tokens = searcher.encode_query(rendered)
                encode_s = time.perf_counter() - started - rendered_s
                for mode in SEARCH_MODES:
                    started = time.perf_counter()
                    searcher.search(query, mode=mode, tokens=tokens)
                    parts[mode]["search"].append(time.perf_counter() - started)
                    parts[mode]["render"].append(0.0 if mode == "text" else rendered_s)
                    parts[mode]["encode"].append(0.0 if mode == "text" else encode_s)
        warm = {}
        for mode, p in parts.items():
            total = [sum(x) for x in zip(p["render"], p["encode"], p["search"], strict=True)]
            warm[mode] = {"p50": _ms(total), **{f"{k}_p50": _ms(v) for k, v in p.items()}}
        return warm, _encoding(searcher, queries, repeat)


def _encoding(searcher, queries: list[str], repeat: int) -> dict:
    """A query of LONG_QUERY_VIEWS views encoded in one call or one call per view; a one-view query with and without
    its blank canvas in the call (the cost the cache spares a command-line search)."""
    from PIL import Image

    long_text = " ".join(queries)
    while len(searcher.render(long_text).views) < LONG_QUERY_VIEWS:
        long_text += " " + long_text
    views = searcher.render(long_text).views[:LONG_QUERY_VIEWS]
    one = searcher.render(queries[0]).views[0]
    blank = Image.new("RGB", one.size, "white")
    model = searcher.model
    timed = {
        "views_one_call": lambda: model.encode_pages(views, batch_size=len(views)),
        "views_one_call_per_view": lambda: [model.encode_pages([v]) for v in views],
        "query_alone": lambda: model.encode_pages([one]),
        "query_with_blank_canvas": lambda: model.encode_pages([one, blank], batch_size=2),
    }
    out = {name: [] for name in timed}
    for _ in range(repeat):
        for name, fn in timed.items():
            started = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - started)
    return {"views": len(views), **{name: _ms(v) for name, v in out.items()}}


def _median(values) -> float:
    return round(statistics.median(list(values)), 3)


def _ms(seconds: list[float]) -> float:
    return round(1000 * statistics.median(seconds), 1)


def describe(result: dict) -> str:
    cl = result["command_line"]
    empty, filled = cl["empty_cache"], cl["filled_cache"]
    lines = [
        f"{result['pages']} pages, {result['queries']} queries, model {result['model']}",
        f"command line (fresh processes, median of {result['runs']}), seconds: blank-canvas cache empty / filled",
    ]
    for phase in PHASES:
        lines.append(f"  {phase:<12}{empty['phases_s'][phase]:>9.3f} {filled['phases_s'][phase]:>9.3f}")
    lines.append(f"  {'total':<12}{empty['total_s']:>9.3f} {filled['total_s']:>9.3f}")
    lines.append(f"  tokendirect search, end to end: {empty['command_s']:.3f} / {filled['command_s']:.3f}")
    lines.append("in one process, the model loaded once (p50 ms): total = render + encode + search")
    for mode, w in result["in_process_ms"].items():
        lines.append(
            f"  {mode:<8}{w['p50']:>9.1f} = {w['render_p50']:.1f} + {w['encode_p50']:.1f} + {w['search_p50']:.1f}"
        )
    e = result["encoding_ms"]
    lines += [
        f"encoding (p50 ms): {e['views']} views in one call {e['views_one_call']:.1f}, one call per view "
        f"{e['views_one_call_per_view']:.1f}",
        f"  one view alone {e['query_alone']:.1f}, with its blank canvas in the call "
        f"{e['query_with_blank_canvas']:.1f}",
    ]
    return "\n".join(lines)
