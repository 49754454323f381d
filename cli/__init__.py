"""The `tokendirect` command. Results go to stdout (one JSON document with --json); progress and logs to stderr.

Exit codes: 0 all done; 1 some inputs failed (the rest done, each failure named); 2 usage or configuration error.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Optional

import typer

from config import Settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Search scanned and visual documents by their DeepSeek-OCR-2 vision tokens; regenerate text from them.",
)

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_USAGE)


def clean_errors(fn):
    """Known failures become one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from pydantic import ValidationError

        from core.model import ModelLoadError
        from core.pages import InputError
        from core.store import StoreError
        from decode import PointNotFoundError
        from ingest import IngestBusyError

        try:
            return fn(*args, **kwargs)
        except (ModelLoadError, StoreError, PointNotFoundError, InputError, IngestBusyError, ValueError) as exc:
            _fail(str(exc))
        except ValidationError as exc:
            err = exc.errors()[0]
            _fail(f"invalid setting TOKENDIRECT_{str(err['loc'][0]).upper()}: {err['msg']}")

    return wrapper


def _settings() -> Settings:
    return Settings()


def _emit(as_json: bool, data, text: str) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False) if as_json else text)


@app.command()
@clean_errors
def ingest(
    paths: list[Path] = typer.Argument(..., help="Files or folders: PDFs, PNG, JPEG, TIFF (multi-page too)."),
    ocr_text: bool = typer.Option(
        False, "--ocr-text", help="Pages without a PDF text layer get the decoder's text (TOKENDIRECT_OCR_TEXT)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON document."),
    prune: bool = typer.Option(
        False, "--prune", help="Also remove stored documents whose source file under PATH... is gone."
    ),
    wait: float = typer.Option(
        0.0, "--wait", min=0, metavar="SECONDS",
        help="Wait this long for another ingest into the same collection to finish (default: exit 2 at once).",
    ),
) -> None:
    """Store every page of the given documents as a multivector point; unchanged files are skipped, changed ones
    replaced. Safe to run from a scheduler: one writer at a time, and a killed run is completed by the next."""
    from ingest import Ingestor

    settings = _settings()
    if ocr_text:
        settings = settings.model_copy(update={"ocr_text": True})
    ingestor = Ingestor.from_settings(settings)
    try:
        report = ingestor.ingest(paths, prune=prune, wait=wait)
    finally:
        ingestor.store.close()
    lines = [
        f"added {report.pages_added} pages from {len(report.documents_added) + len(report.documents_updated)} "
        f"documents ({len(report.documents_updated)} updated); skipped {report.pages_skipped} pages already stored "
        f"({len(report.documents_skipped)} documents); removed {report.pages_removed} pages "
        f"({len(report.documents_pruned)} documents pruned)",
        "text of the added pages: {pdf} from the PDF text layer, {decoded} decoded, {none} without text".format(
            **report.text_pages
        ),
    ]
    lines += [f"added: {p}" for p in report.documents_added]
    lines += [f"updated: {p}" for p in report.documents_updated]
    lines += [f"pruned: {p}" for p in report.documents_pruned]
    lines += [f"failed: {f.path}: {f.reason}" for f in report.failures]
    _emit(as_json, report.to_dict(), "\n".join(lines))
    for f in report.failures if as_json else ():
        typer.echo(f"failed: {f.path}: {f.reason}", err=True)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_PARTIAL)


@app.command()
@clean_errors
def search(
    text: str = typer.Argument("", help="The query text (rendered to an image and encoded like a page)."),
    image: Optional[Path] = typer.Option(None, "--image", help="Query by an image file instead of text."),
    top_k: Optional[int] = typer.Option(None, "--top-k", min=1, help="Number of hits (default TOKENDIRECT_TOP_K)."),
    doc: Optional[str] = typer.Option(None, "--doc", help="Only pages of this doc_id."),
    mode: Optional[str] = typer.Option(
        None, "--mode", help="visual, text, hybrid or rerank (default: hybrid when pages have text, else visual)."
    ),
    exact: bool = typer.Option(
        False, "--exact", help="Rank every page by exact MaxSim, bypassing the fast path (for comparison)."
    ),
    decode: bool = typer.Option(False, "--decode", help="Regenerate each hit's text from its stored tokens."),
    decode_mode: str = typer.Option("ocr", "--decode-mode", help="Decoding prompt with --decode: ocr or markdown."),
    as_json: bool = typer.Option(False, "--json", help="Print hits as one JSON document."),
) -> None:
    """Rank stored pages against a text query by MaxSim over the vision tokens, BM25 over the page text, or both
    fused; or against an image by MaxSim."""
    from PIL import Image

    from core.model import prompt_for
    from core.store import SEARCH_MODES
    from decode import Decoder
    from search import Searcher

    if not text.strip() and image is None:
        _fail("give a query TEXT or --image FILE")
    if mode is not None and mode not in SEARCH_MODES:
        _fail(f"unknown search mode {mode!r}; use one of: {', '.join(SEARCH_MODES)}")
    if image is not None and mode not in (None, "visual"):
        _fail("an --image query is searched visually only; leave out --mode or use --mode visual")
    prompt_for(decode_mode)  # an unknown mode fails now, not after the search
    settings = _settings()
    searcher = Searcher.from_settings(settings)
    rendered = None  # the text query as drawn: views used, characters left out, warnings
    try:
        if image is not None:
            try:
                query = Image.open(image).convert("RGB")
            except OSError as exc:
                _fail(f"cannot read query image {image}: {exc}")
            hits = searcher.search_image(query, top_k, doc, exact=exact)
        else:
            mode = mode or searcher.default_mode()
            rendered = None if mode == "text" else searcher.render(text)  # warns of what it cannot draw
            tokens = None if rendered is None else searcher.encode_query(rendered)
            hits = searcher.search(text, top_k, doc, mode=mode, exact=exact, tokens=tokens)
        rows = [h.to_dict() for h in hits]
        if decode:
            decoder = Decoder(searcher.model, searcher.store, settings)
            for row in rows:
                row["text"] = decoder.decode(row["point_id"], decode_mode)
    finally:
        searcher.store.close()
    lines = []
    for rank, row in enumerate(rows, 1):
        found = "+".join(row["signals"])
        lines.append(
            f"{rank}. {row['score']:.4f}  {row['source']}  page {row['page']}  ({found})  [{row['point_id']}]"
        )
        if "text" in row:
            lines.append("   " + row["text"].replace("\n", "\n   "))
    data = {"query": text or str(image), "mode": mode or "visual", "hits": rows,
            "rendering": rendered.to_dict() if rendered else None}
    _emit(as_json, data, "\n".join(lines) or "no hits")


@app.command()
@clean_errors
def decode(
    point_id: str = typer.Argument(..., help="A hit's point id."),
    mode: str = typer.Option("ocr", "--mode", help="ocr (plain text) or markdown."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Regenerate a stored page's text from its tokens: no source file, no re-encoding."""
    from core.model import prompt_for
    from decode import Decoder

    prompt_for(mode)
    decoder = Decoder.from_settings(_settings())
    try:
        point = decoder.store.get(point_id, with_tokens=False)
        text = decoder.decode(point_id, mode)
    finally:
        decoder.store.close()
    data = {"point_id": point_id, "mode": mode, "text": text}
    data.update({k: point.payload[k] for k in ("doc_id", "source", "page") if point and k in point.payload})
    _emit(as_json, data, text)


@app.command()
@clean_errors
def info(as_json: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """The collection: the model it was built with, token dimension, points and documents."""
    from core.store import open_store

    settings = _settings()
    with open_store(settings) as store:
        record = store.record()
        docs = store.documents() if record else {}
        data = {
            "collection": settings.collection,
            "backend": settings.qdrant_url or f"embedded ({Path(settings.data_dir) / 'qdrant' / settings.collection})",
            "exists": record is not None,
            "model": record and record["model"],
            "revision": record and record["revision"],
            "dimension": record and record["dim"],
            "points": sum(docs.values()),
            "documents": len(docs),
            "text_search": bool(record) and store.has_text_index(),  # False: made before text search, visual only
            "pages_with_text": store.text_pages() if record else 0,
            "configured_model": settings.model,
        }
    text = "\n".join(f"{k}: {v}" for k, v in data.items())
    _emit(as_json, data, text)


@app.command()
@clean_errors
def export(
    file: Path = typer.Argument(..., help="The file to write (a zip; it appears only when complete)."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Pages read and written at a time."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON document."),
) -> None:
    """Write the configured collection - pages, exact tokens, payload, model record - to one portable file."""
    from core.store import open_store
    from core.transfer import export_collection

    with open_store(_settings()) as store:
        report = export_collection(store, file, batch_size)
    text = (
        f"exported {report.points} pages of collection {report.collection!r} to {report.file} "
        f"({report.bytes / 1e6:.1f} MB); read back and verified"
    )
    _emit(as_json, report.to_dict(), text)


@app.command("import")
@clean_errors
def import_(
    file: Path = typer.Argument(..., help="A file written by `tokendirect export`."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON document."),
) -> None:
    """Load an exported file into the configured collection, then read every page back and compare its tokens."""
    from core.store import open_store
    from core.transfer import import_collection

    with open_store(_settings()) as store:
        report = import_collection(store, file)
    lines = [
        f"imported {report.points} pages into collection {report.collection!r}: {report.added} added, "
        f"{report.replaced} already there; {report.verified} of {report.points} verified "
        f"({report.target_points} pages in the collection now)"
    ]
    lines += [f"failed: page {pid} is missing or differs after the import" for pid in report.mismatched]
    _emit(as_json, report.to_dict(), "\n".join(lines))
    raise typer.Exit(EXIT_OK if report.ok else EXIT_PARTIAL)


@app.command("eval")
@clean_errors
def eval_(
    directory: Path = typer.Argument(..., help="A labelled set: corpus/, queries.jsonl, qrels.jsonl (see README)."),
    build_sample: bool = typer.Option(False, "--build-sample", help="Write the project's sample set to DIRECTORY."),
    collection: Optional[str] = typer.Option(None, "--collection", help="Collection for the set (default eval-NAME)."),
    ocr_text: bool = typer.Option(False, "--ocr-text", help="Pages without a PDF text layer get the decoder's text."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON document."),
) -> None:
    """Ingest a labelled set and report nDCG@5, recall@1/5/10, MRR and latency for every search mode."""
    from evaluation import evaluate, format_report
    from evaluation.sample import build_sample as write_sample

    if build_sample:
        typer.echo(f"wrote the sample set to {write_sample(directory)}; evaluate it with: tokendirect eval {directory}")
        return
    settings = _settings().model_copy(update={"ocr_text": True} if ocr_text else {})
    report = evaluate(directory, settings, collection)
    _emit(as_json, report.to_dict(), format_report(report))
    raise typer.Exit(EXIT_OK if not report.failures else EXIT_PARTIAL)


@app.command("make-test-model")
@clean_errors
def make_test_model_cmd(directory: Path = typer.Argument(..., help="Where to write the checkpoint.")) -> None:
    """Write a tiny random-weight DeepSeek-OCR-2 checkpoint (same classes, meaningless output) for offline tests."""
    from core.testmodel import make_test_model

    path = make_test_model(directory)
    typer.echo(f"wrote a tiny random-weight DeepSeek-OCR-2 checkpoint to {path}; use TOKENDIRECT_MODEL={path}")


@app.command()
@clean_errors
def demo() -> None:
    """Ingest sample documents, search them and regenerate a hit's text, end to end."""
    from cli.demo import run_demo

    raise typer.Exit(run_demo(_settings()))


from cli.bench import register as _register_bench  # noqa: E402

_register_bench(app, clean_errors, _settings, _emit)


def main() -> None:
    app(prog_name="tokendirect")


def run_stage(name: str) -> None:
    """`python -m ingest|search|decode ...` is `tokendirect ingest|search|decode ...`."""
    stage = typer.Typer(add_completion=False)
    stage.command(name)({"ingest": ingest, "search": search, "decode": decode}[name])
    stage(prog_name=f"python -m {name}")  # one command: its arguments come straight after the module
