"""`tokendirect bench ...`: measurements the project ships. The logic lives in search/bench.py and ingest/bench.py."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from core.cli import clean_errors, emit, settings
from core.errors import UsageError
from core.store.layout import SearchLayout

bench_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Benchmarks (results on stdout).")


def _sizes(pages: list[str]) -> list[int]:
    sizes = _counts(pages, "--pages")
    if min(sizes) < 11:
        raise UsageError("--pages needs at least 11 pages (recall@10 and the gap between ranks 10 and 11)")
    return sizes


def _fine(r) -> str:
    return "" if r.fine_vectors_per_page is None else f"fine vectors {r.fine_vectors_per_page:g} a page; "


def _first_depth(r) -> str:
    if r.first_stage == "none":
        return "first: none (the codebook is learned at CODEBOOK_PAGES pages), the fine stage scores every page"
    if r.codebook:
        depth = f"{r.prefetch_codebook}" if not r.prefetch_at else _grown(r.prefetch_codebook, r.prefetch_at)
        return f"first: the codebook's {r.codebook} centroids, {depth}"
    depth = f"{r.prefetch_dense}" if not r.prefetch_at else _grown(r.prefetch_dense, r.prefetch_at)
    return (
        f"first: the coarse scan, {depth} or {r.prefetch_share:.0%} of the pages, scanned with a query vector per "
        f"{r.query_pool_size:g} tokens{_deeper(r)}"
    )


def _grown(depth: int, at: int) -> str:
    return f"{depth} at {at} pages x sqrt(pages / {at})"


def _stages(p50: dict[str, float] | None) -> str:
    if not p50:
        return "no staged plan (exact search)"
    cuts = [f"{ms:.1f} ({'+ ' if i else ''}{name})" for i, (name, ms) in enumerate(p50.items())]
    return ", then ".join(cuts) + " ms"


def _survivors(recall: dict[str, float] | None) -> str:
    if not recall:
        return "no staged plan (exact search)"
    return ", ".join(f"{name} {share:.3f}" for name, share in recall.items())


def _structure(changes: dict | None) -> str:
    if not changes:
        return ""
    values = {k: ",".join(map(str, v)) if isinstance(v, (tuple, list)) else v for k, v in changes.items()}
    return " varied: " + ", ".join(f"{k}={v}" for k, v in values.items())


def _deeper(r) -> str:
    return f"; both {r.depth_scale:g} times deeper for {r.dim}-dimension tokens" if r.depth_scale > 1 else ""


def _cold_reads(r) -> str:
    if r.fast_cold_read_bytes_p50 is None:
        return ""
    ahead = f", the disk's read-ahead {r.readahead_kb} kB" if r.readahead_kb is not None else ""
    return f" (reading {r.fast_cold_read_bytes_p50 / 1e6:.1f} MB from disk a query, median{ahead})"


def _describe(r) -> str:
    def ms(p50, p95) -> str:
        return f"{p50:.1f} / {p95:.1f} ms" if p50 is not None else "not measured"

    scan = f"{ms(r.scan_p50_ms, r.scan_p95_ms)} (fast path {r.speedup_vs_scan}x faster)" if r.scan_p50_ms else "not run"
    agree = "" if r.scan_recall_at_10 is None else f"; the scan's top 10 against exact: {r.scan_recall_at_10:.3f}"
    if r.chunked and r.scan_recall_at_10 is not None:
        agree += " (the scan ranks by every token, exact MaxSim by the `tokens` chunk)"
    disk = f"{r.disk_bytes_per_page / 1e6:.2f} MB" if r.disk_bytes_per_page is not None else "unknown"
    q = r.gap_relative_quantiles
    if r.ram_bytes_per_page is not None:
        ram = (
            f"  RAM-resident search data (measured in a fresh process: heap growth on opening the store, plus its "
            f"mapped vector files): {r.ram_bytes_per_page / 1e3:.1f} kB a page ({r.ram_fraction:.1%} of the "
            f"{r.token_bytes_per_page / 1e3:.0f} kB float16 token set), {r.ram_after_queries_bytes_per_page / 1e3:.1f}"
            f" kB after the cold queries; estimate from the layout {r.ram_estimate_bytes_per_page / 1e3:.1f} kB; "
            f"mapped payload files (and write-ahead log, where the shard has one) {r.ram_fixed_bytes / 1e6:.1f} MB "
            "in all"
        )
    else:
        estimate = r.ram_estimate_bytes_per_page / 1e3
        ram = f"  RAM-resident: not measured on this store; estimate from the layout {estimate:.1f} kB a page"
    return "\n".join(
        [
            f"{r.pages} pages ({r.source}{_structure(r.structure)}, {r.tokens_per_page:g} tokens a page), "
            f"{r.queries} queries, "
            f"load average {r.load_average}:",
            f"  recall@10 against exact MaxSim: fast path {r.recall_at_10:.3f} (worst query {r.recall_at_10_min:.1f}), "
            f"its first stage alone {r.first_stage_recall_at_10:.3f}, a random ranking {r.random_recall_at_10:.3f}"
            + agree,
            f"  fast path   p50 / p95: warm {ms(r.fast_p50_ms, r.fast_p95_ms)} (each right after an exact query), "
            f"{ms(r.fast_alone_p50_ms, r.fast_alone_p95_ms)} (one after another), "
            f"cold {ms(r.fast_cold_p50_ms, r.fast_cold_p95_ms)}{_cold_reads(r)}",
            f"  exact       p50 / p95: {ms(r.exact_p50_ms, r.exact_p95_ms)} "
            f"(fast path {r.speedup_vs_exact}x faster, warm; {r.speedup_alone_vs_exact}x one after another)",
            f"  torch scan  p50 / p95: {scan}",
            f"  fast path's plan cut after each stage, in the engine, p50: {_stages(r.stage_p50_ms)}",
            f"  exact top 10 among each stage's survivors: {_survivors(r.survivor_recall)}",
            f"  exact score gap, rank 10 to 11: median {r.exact_gap_10_11:.3f} "
            f"({r.exact_gap_10_11_relative:.2%} of rank 10; p10 / p90 {q['p10']:.2%} / {q['p90']:.2%})",
            ram,
            f"  disk: {disk} a page; {_fine(r)}build {r.build_s:.0f} s; "
            f"prefetch {r.prefetch_first} / {r.prefetch_last} ({_first_depth(r)}), pool size {r.pool_size}, "
            f"exact below {r.exact_below} pages",
        ]
        + (
            [f"  (a build of {r.trimmed_from} pages cut down to {r.pages}: RAM and disk a page read high)"]
            if r.trimmed_from
            else []
        )
    )


@bench_app.command("search")
@clean_errors
def search(
    pages: list[str] = typer.Option(
        ["2000"], "--pages", help="Synthetic pages; several (--pages 1000,2000) measure at each size in turn."
    ),
    queries: int = typer.Option(20, "--queries", min=1, help="Queries measured at each size."),
    tokens: int = typer.Option(257, "--tokens", min=20, help="Tokens per synthetic page (the real shape: 257)."),
    dim: int = typer.Option(1280, "--dim", min=16, help="Token dimension of synthetic pages (the real: 1280)."),
    collection: Optional[str] = typer.Option(
        None, "--collection", help="Measure an existing collection instead (queries sampled from its pages)."
    ),
    workdir: Optional[Path] = typer.Option(
        None, "--workdir", help="Keep the synthetic collection here and reuse it in later runs (default: temporary)."
    ),
    scan: bool = typer.Option(True, "--scan/--no-scan", help="Also time an in-memory torch MaxSim scan."),
    vary: list[str] = typer.Option(
        [],
        "--vary",
        help="Another structure of synthetic pages, FIELD=VALUE (repeatable; a range: regions=5,9): see "
        "search/bench.py SyntheticSpec.",
    ),
    plot_file: Optional[Path] = typer.Option(None, "--plot", help="Draw latency and recall against pages (PNG)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (the largest size; all in `runs`)."),
) -> None:
    """Fast path vs exact MaxSim vs an in-memory scan: recall@10, latency, RAM and disk bytes per page."""
    from search import bench

    s = settings()

    def progress(message: str) -> None:
        typer.echo(message, err=True)

    if collection and vary:
        raise UsageError("--vary changes the synthetic pages; it does not apply to --collection")
    if collection:
        results = [bench.collection_bench(s.model_copy(update={"collection": collection}), queries, scan, progress)]
    else:
        spec = bench.varied(bench.SyntheticSpec(tokens=tokens, dim=dim), vary)
        results = bench.synthetic_bench(
            _sizes(pages),
            s,
            queries,
            spec,
            workdir=workdir,
            scan=scan,
            progress=progress,
            on_result=lambda r: progress(_describe(r)),
        )
    if plot_file is not None:
        bench.plot(results, plot_file)
    data = {**results[-1].to_dict(), "runs": [r.to_dict() for r in results]}
    emit(as_json, data, "\n".join(_describe(r) for r in results))


@bench_app.command("ingest")
@clean_errors
def ingest_bench(
    pages: int = typer.Option(16, "--pages", min=1, help="Pages of the synthetic PDF to ingest."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Ingest a synthetic PDF with the configured model into a temporary store: pages per second, and where the
    time goes."""
    from ingest.bench import bench_ingest

    result = bench_ingest(settings(), pages)
    t, shares, store = result["timings"], result["shares"], result["store_path"]
    text = "\n".join(
        [
            f"{result['pages']} pages in {t['wall_s']:.2f} s: {result['pages_per_s']:.2f} pages/s "
            f"(model {result['model']}, {result['device']}, batch {result['batch_size']})",
            f"busy share of wall time: encode {shares['encode']:.1%}, rasterize {shares['rasterize']:.1%}, "
            f"store {shares['store']:.1%}, hash {shares['hash']:.1%}",
            f"non-model share {result['non_model_share']:.1%} (target <= {result['target_non_model_share']:.0%}: "
            f"{'met' if result['target_met'] else 'NOT met'})",
            f"store path (token conversion, payload, derived vectors, storage form, write) CPU per page: "
            f"{store['cpu_ms_per_page']:.1f} ms (target <= {result['target_store_cpu_ms_per_page']} ms), at "
            f"{store['dim']} dimensions and {store['tokens_per_page']} tokens a page; of it, storage form and "
            f"derived vectors {store['prepare_cpu_ms_per_page']:.1f} ms, the engine (values handed over, write, "
            f"flush) {store['engine_cpu_ms_per_page']:.1f} ms, of which the token chunks alone take "
            f"{store['tokens_alone_engine_cpu_ms_per_page']:.1f} ms",
        ]
    )
    emit(as_json, result, text)


@bench_app.command("page")
@clean_errors
def page_bench(
    dim: int = typer.Option(1280, "--dim", min=8, help="Token dimension (the published model's: 1280)."),
    tokens: int = typer.Option(1121, "--tokens", min=1, help="Tokens a page (1121: six tiles; 257: one view)."),
    pages: int = typer.Option(8, "--pages", min=1, help="Synthetic pages to store."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """What a page costs on a Qdrant server (requests and bytes over REST and gRPC, rows per named vector) and on
    the embedded engine's disk, from synthetic pages of the given shape."""
    from core.store.costs import page_costs

    r = page_costs(dim, tokens, pages, SearchLayout.from_settings(settings()))
    rest, grpc = r["rest"], r["grpc"]
    rows = ", ".join(f"{name} {n}" for name, n in r["rows"].items())
    text = "\n".join(
        [
            f"a page of {r['tokens']} tokens x {r['dim']} ({r['token_bytes'] / 1e6:.2f} MB as float16), "
            f"{r['pages']} pages:",
            f"  rows per named vector: {rows} (a server accepts at most {(1 << 20) - 1} values in one)",
            f"  REST: {rest['requests_per_page']:g} requests a page, {rest['bytes_per_page'] / 1e6:.1f} MB, "
            f"largest {rest['largest_request_bytes'] / 1e6:.1f} MB",
            f"  gRPC: {grpc['requests_per_page']:g} requests a page, {grpc['bytes_per_page'] / 1e6:.1f} MB, "
            f"largest {grpc['largest_request_bytes'] / 1e6:.1f} MB",
            f"  requests over a server's limits: {rest['over_limits']} (REST), {grpc['over_limits']} (gRPC)",
            f"  tokens read back exact: {r['exact']}; {r['patched_values']} values in the patch, "
            f"{r['store_payload_bytes'] / 1e3:.1f} kB of payload the store keeps",
            f"  embedded disk: {r['disk_bytes_per_page'] / 1e6:.2f} MB a page "
            f"({r['disk_ratio']:.2f}x the token bytes), plus a write-ahead log of {r['wal_bytes'] / 1e6:.0f} MB "
            "for the shard",
        ]
    )
    emit(as_json, r, text)


@bench_app.command("scale")
@clean_errors
def scale_cmd(
    from_json: list[Path] = typer.Option(
        [], "--from", help="JSON printed by `tokendirect bench search --json`, one per page shape (else: measure)."
    ),
    tokens: list[str] = typer.Option(
        ["257,1121"], "--tokens", help="Page shapes to measure, in tokens (the published model: 257 to 1121)."
    ),
    dim: int = typer.Option(1280, "--dim", min=16, help="Token dimension of the measured pages (the published: 1280)."),
    measure_pages: int = typer.Option(
        1000, "--measure-pages", min=11, help="Pages of the collection built to measure (fixed costs weigh on few)."
    ),
    corpus: list[str] = typer.Option(["1000000,100000000"], "--pages", help="Corpus sizes to plan for, in pages."),
    node_ram_gb: float = typer.Option(64.0, "--node-ram-gb", min=1, help="RAM of one Qdrant node."),
    node_disk_gb: float = typer.Option(2000.0, "--node-disk-gb", min=1, help="Disk of one Qdrant node."),
    fill: float = typer.Option(0.7, "--fill", min=0.01, max=1.0, help="Share of a node's RAM and disk to fill."),
    replication_factor: int = typer.Option(2, "--replication-factor", min=1, help="Copies of each shard."),
    hours: float = typer.Option(24.0, "--hours", min=0.01, help="Time to ingest the corpus in."),
    encode_rate: Optional[float] = typer.Option(
        None, "--encode-pages-per-s", min=0.001, help="Pages/s one worker encodes (`bench ingest`, real model)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Disk, RAM and Qdrant nodes for a corpus, and the ingest rates to store it in a day, from measured bytes per
    page (see README, "Scaling out")."""
    from cli import scale

    s = settings()
    sizes = _counts(corpus, "--pages")  # before any measuring
    if from_json:
        shapes = [scale.from_bench_json(path) for path in from_json]
    else:
        shapes = [
            scale.measure(s, n, dim, measure_pages, lambda message: typer.echo(message, err=True))
            for n in _counts(tokens, "--tokens")
        ]
    node = scale.Node(node_ram_gb, node_disk_gb, fill)
    model = scale.scale(shapes, sizes, node, replication_factor, hours, encode_rate)
    emit(as_json, model.to_dict(), scale.format_model(model))


def _counts(values: list[str], option: str) -> list[int]:
    """Whole numbers given as `N`, `N,N` or the option repeated."""
    try:
        counts = [int(part) for item in values for part in item.split(",") if part.strip()]
    except ValueError:
        raise UsageError(
            f"{option} takes whole numbers, e.g. {option} 1000 or {option} 1000,2000: got {values}"
        ) from None
    if not counts or min(counts) < 1:
        raise UsageError(f"{option} takes whole numbers of at least 1: got {values}")
    return counts


@bench_app.command("query")
@clean_errors
def query_bench(
    corpus: Optional[Path] = typer.Option(
        None, "--corpus", help="Documents to search (default: the sample set's), ingested into a temporary store."
    ),
    query: list[str] = typer.Option([], "--query", help="A query to time (repeatable; default: the sample set's)."),
    runs: int = typer.Option(3, "--runs", min=1, help="Fresh command-line processes per blank-canvas cache state."),
    repeat: int = typer.Option(3, "--repeat", min=1, help="Passes over the queries in one process."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Query latency end to end: a command line's start-up, model load, render, encode and search, and each mode's
    p50 with the model loaded once."""
    from search.query_bench import bench_query, describe

    if corpus is not None and not corpus.exists():
        raise UsageError(f"--corpus {corpus} does not exist")
    result = bench_query(
        settings(), corpus, list(query) or None, runs, repeat, progress=lambda m: typer.echo(m, err=True)
    )
    emit(as_json, result, describe(result))
