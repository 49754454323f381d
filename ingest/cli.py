"""`tokendirect ingest` (and `python -m ingest`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from core.cli import EXIT_OK, EXIT_PARTIAL, clean_errors, emit, settings


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
        0.0,
        "--wait",
        min=0,
        metavar="SECONDS",
        help="Wait this long for another ingest into the same collection to finish (default: exit 2 at once).",
    ),
    partition: Optional[str] = typer.Option(
        None,
        "--partition",
        metavar="I/N",
        help="Worker I of N (from 0): store, clean and prune only this share of the documents, by doc_id; "
        "N workers given 0/N .. N-1/N cover the corpus exactly once.",
    ),
) -> None:
    """Store every page of the given documents as a multivector point; unchanged files are skipped, changed ones
    replaced. Safe to run from a scheduler: one writer at a time, and a killed run is completed by the next."""
    from ingest import Ingestor
    from ingest.plan import WHOLE, Partition

    share = WHOLE if partition is None else Partition.parse(partition)
    s = settings()
    if ocr_text:
        s = s.model_copy(update={"ocr_text": True})
    with Ingestor.from_settings(s) as ingestor:
        report = ingestor.ingest(paths, prune=prune, wait=wait, partition=share)
    lines = [
        f"added {report.pages_added} pages from {len(report.documents_added) + len(report.documents_updated)} "
        f"documents ({len(report.documents_updated)} updated); skipped {report.pages_skipped} pages already stored "
        f"({len(report.documents_skipped)} documents); removed {report.pages_removed} pages "
        f"({len(report.documents_pruned)} documents pruned)",
        "text of the added pages: {pdf} from the PDF text layer, {decoded} decoded, {none} without text".format(
            **report.text_pages
        ),
    ]
    if report.partition:
        lines.append(
            f"partition {report.partition}: left {len(report.documents_other_partition)} documents to other partitions"
        )
    lines += [f"added: {p}" for p in report.documents_added]
    lines += [f"updated: {p}" for p in report.documents_updated]
    lines += [f"pruned: {p}" for p in report.documents_pruned]
    lines += [f"failed: {f.path}: {f.reason}" for f in report.failures]
    emit(as_json, report.to_dict(), "\n".join(lines))
    for f in report.failures if as_json else ():
        typer.echo(f"failed: {f.path}: {f.reason}", err=True)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_PARTIAL)


def main() -> None:
    from core.cli import run_one

    run_one(ingest, "ingest")
