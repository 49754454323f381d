"""The `tokendirect` command: every stage's command (ingest/cli.py, search/cli.py, decode/cli.py), the store's
(info, export, import), and the tools that drive all stages (demo, eval, bench, make-test-model).

Exit codes and output: core/cli.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from core.cli import EXIT_OK, EXIT_PARTIAL, clean_errors, emit, fail, settings
from core.errors import printable
from core.testmodel import TEST_HIDDEN_SIZE
from decode.cli import decode
from ingest.cli import ingest
from search.cli import search

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Search scanned and visual documents by their DeepSeek-OCR-2 vision tokens; regenerate text from them.",
)
app.command()(ingest)
app.command()(search)
app.command()(decode)


@app.command()
@clean_errors
def info(as_json: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """The collection: the model it was built with, token dimension, shards and replicas, points and documents."""
    from core.store import open_store
    from core.store.cluster import FIELDS
    from ingest import read_catalog

    s = settings()
    with open_store(s) as store:
        record = store.record()
        catalog = read_catalog(store) if record else {}
        unfinished = sorted(d.source for d in catalog.values() if not d.complete)
        data = {
            "collection": s.collection,
            "backend": s.qdrant_url or f"embedded ({s.shard_path()})",
            "exists": record is not None,
            "model": record and record["model"],
            "revision": record and record["revision"],
            "dimension": record and record["dim"],
            # on a server: as the collection was created; embedded: one shard, one copy
            **(store.distribution() if record else dict.fromkeys(FIELDS)),
            "points": sum(len(d.stored) for d in catalog.values()),
            "documents": len(catalog),
            # documents an interrupted ingest left without all their pages: not searchable as whole documents until
            # an ingest over their files finishes them
            "unfinished_documents": unfinished,
            "first_stage": record and first_stage(store),
            "text_search": bool(record) and store.has_text_index(),  # False: made before text search, visual only
            "pages_with_text": store.text_pages() if record else 0,
            "configured_model": s.model,
            "collections": store.collections(),  # every collection this store holds
        }
    lines = [f"{k}: {v}" for k, v in data.items() if k not in ("unfinished_documents", "collections")]
    lines.insert(lines.index(f"documents: {len(catalog)}") + 1, f"unfinished_documents: {len(unfinished)}")
    lines.append(f"collections in this store: {', '.join(data['collections']) or 'none'}")
    if unfinished:
        lines.append(
            f"note: {len(unfinished)} documents lack pages (an ingest was interrupted); an ingest over their files "
            "finishes them: " + ", ".join(printable(p) for p in unfinished)
        )
    others = [c for c in data["collections"] if c != s.collection]
    if record is None and others:
        lines.append(
            f"note: collection {s.collection!r} does not exist yet; this store holds {', '.join(others)} "
            f"(set TOKENDIRECT_COLLECTION={others[0]} to use it)"
        )
    emit(as_json, data, "\n".join(lines))


def first_stage(store) -> str:
    """The fast path's first stage in the collection, in words."""
    layout = store.layout
    if not store.has_fast_path():
        return "none: every search is exact (made before the fast path)"
    if layout.codebook:
        centroids = store.centroids()
        if centroids is None:
            return f"codebook, learned at {layout.codebook_pages} pages (not yet: the fine stage scores every page)"
        return f"codebook of {len(centroids)} centroids"
    return "coarse scan of every page" if layout.coarse else f"HNSW over one {layout.first_stage} vector per page"


@app.command()
@clean_errors
def export(
    file: Path = typer.Argument(..., help="The file to write (a zip; it appears only when complete)."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Pages read and written at a time."),
    wait: float = typer.Option(
        0.0, "--wait", min=0, metavar="SECONDS", help="Wait this long for a running ingest to finish."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON document."),
) -> None:
    """Write the configured collection - pages, exact tokens, payload, model record - to one portable file."""
    from core.store import open_store
    from core.store.transfer import export_collection
    from ingest.runlog import no_ingest

    s = settings()
    with no_ingest(s, wait, "export"), open_store(s) as store:
        report = export_collection(store, file, batch_size)
    text = (
        f"exported {report.points} pages of collection {report.collection!r} to {report.file} "
        f"({report.bytes / 1e6:.1f} MB); read back and verified"
    )
    if report.unfinished:
        warning = (
            f"{len(report.unfinished)} documents in the export lack pages (an ingest was interrupted); an ingest over "
            "their files finishes them, in the collection or after the import: "
            + ", ".join(printable(p) for p in report.unfinished)
        )
        typer.echo(f"warning: {warning}", err=True)
    emit(as_json, report.to_dict(), text)


@app.command("import")
@clean_errors
def import_(
    file: Path = typer.Argument(..., help="A file written by `tokendirect export`."),
    wait: float = typer.Option(
        0.0, "--wait", min=0, metavar="SECONDS", help="Wait this long for a running ingest to finish."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON document."),
) -> None:
    """Load an exported file into the configured collection, then read every page back and compare its tokens."""
    from core.store import open_store
    from core.store.transfer import import_collection
    from ingest.runlog import no_ingest

    s = settings()
    with no_ingest(s, wait, "import"), open_store(s) as store:
        report = import_collection(store, file)
    lines = [
        f"imported {report.points} pages into collection {report.collection!r}: {report.added} added, "
        f"{report.replaced} already there; {report.verified} of {report.points} verified "
        f"({report.target_points} pages in the collection now)"
    ]
    lines += [f"failed: page {pid} is missing or differs after the import" for pid in report.mismatched]
    emit(as_json, report.to_dict(), "\n".join(lines))
    raise typer.Exit(EXIT_OK if report.ok else EXIT_PARTIAL)


@app.command("eval")
@clean_errors
def eval_(
    directory: Path = typer.Argument(..., help="A labelled set: corpus/, queries.jsonl, qrels.jsonl (see README)."),
    build_sample: bool = typer.Option(False, "--build-sample", help="Write the project's sample set to DIRECTORY."),
    sample: str = typer.Option(
        "basic",
        "--sample",
        help="Which sample set --build-sample writes: basic (16 queries), manuals (30), manuals-images (the same, "
        "each query with an image of its page: a strong visual signal) or debian-manuals (28 queries over two real "
        "PDFs that Debian ships; needs the packages libtasn1-doc and shared-mime-info).",
    ),
    collection: Optional[str] = typer.Option(None, "--collection", help="Collection for the set (default eval-NAME)."),
    ocr_text: bool = typer.Option(False, "--ocr-text", help="Pages without a PDF text layer get the decoder's text."),
    save_weights: bool = typer.Option(
        False, "--save-weights", help="Keep the fusion weights calibrated on the set in the collection, for hybrid."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON document."),
) -> None:
    """Ingest a labelled set and report hit@5, nDCG@5, recall@1/5/10, MRR and latency for every search mode, and
    hybrid with fusion weights calibrated on the set."""
    from cli.evaluation import evaluate, format_report
    from cli.sample import SAMPLES

    if build_sample:
        if sample not in SAMPLES:
            fail(f"unknown sample set {sample!r}; choose one of: {', '.join(SAMPLES)}")
        written = SAMPLES[sample](directory)
        typer.echo(f"wrote the {sample} sample set to {written}; evaluate it with: tokendirect eval {directory}")
        return
    s = settings().model_copy(update={"ocr_text": True} if ocr_text else {})
    report = evaluate(directory, s, collection, save_weights=save_weights)
    emit(as_json, report.to_dict(), format_report(report))
    raise typer.Exit(EXIT_OK if not report.failures else EXIT_PARTIAL)


@app.command("make-test-model")
@clean_errors
def make_test_model_cmd(
    directory: Path = typer.Argument(..., help="Where to write the checkpoint."),
    hidden_size: int = typer.Option(
        TEST_HIDDEN_SIZE, "--hidden-size", min=8, help="Token dimension (the published model's: 1280); a multiple of 4."
    ),
) -> None:
    """Write a tiny random-weight DeepSeek-OCR-2 checkpoint (same classes, meaningless output) for offline tests."""
    from core.errors import UsageError
    from core.model import quiet_transformers
    from core.testmodel import make_test_model

    if hidden_size % 4:
        raise UsageError(f"--hidden-size must be a multiple of 4 (the attention heads): got {hidden_size}")
    quiet_transformers()  # no bar of transformers' own before the line that says what was written
    path = make_test_model(directory, hidden_size=hidden_size)
    typer.echo(f"wrote a tiny random-weight DeepSeek-OCR-2 checkpoint to {path}; use TOKENDIRECT_MODEL={path}")


@app.command()
@clean_errors
def demo() -> None:
    """Ingest sample documents, search them and regenerate a hit's text, end to end."""
    from cli.demo import run_demo

    raise typer.Exit(run_demo(settings()))


from cli.bench import bench_app  # noqa: E402

app.add_typer(bench_app, name="bench")


def main() -> None:
    from core.cli import run_app

    run_app(app, "tokendirect")
