"""`tokendirect ingest` (and `python -m ingest`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from core.cli import EXIT_OK, EXIT_PARTIAL, clean_errors, emit, settings
from core.errors import TokenDirectError, printable
from ingest.report import IngestReport


@clean_errors
def ingest(
    paths: list[Path] = typer.Argument(
        ..., help="Files or folders: PDFs and images (PNG, JPEG, TIFF (multi-page too), WebP, BMP, GIF)."
    ),
    ocr_text: bool = typer.Option(
        False, "--ocr-text", help="Pages without a PDF text layer get the decoder's text (TOKENDIRECT_OCR_TEXT)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON document."),
    prune: bool = typer.Option(
        False, "--prune", help="Also remove stored documents whose source file under PATH... is gone."
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="With --prune: prune even where that looks like a missing volume (a PATH with no supported file left, "
        "or most of its documents gone at once).",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Change nothing: report what a run would add, update, prune and clean."
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
        try:
            report = ingestor.ingest(
                paths,
                progress="lines" if as_json else None,
                prune=prune,
                wait=wait,
                force=force,
                dry_run=dry_run,
                partition=share,
            )
        except TokenDirectError as exc:
            stopped = (exc.details or {}).get("report")
            # what a run stopped part way had done (--json: in the error document)
            if stopped and not as_json and stopped["pages_added"] + stopped["pages_removed"]:
                typer.echo(
                    "\n".join(["the run stopped; what it had done:", *report_lines(IngestReport.from_dict(stopped))])
                )
            raise
    emit(as_json, report.to_dict(), "\n".join(report_lines(report)))
    for f in report.failures if as_json else ():
        typer.echo(f"failed: {printable(f.path)}: {printable(f.reason)}", err=True)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_PARTIAL)


def report_lines(report: IngestReport) -> list[str]:
    """The report for people: counts first, then each document by what happened to it (names escaped, so each
    stays on its line). A dry run's report says what a run would do."""
    past = {"add": "added", "update": "updated", "remove": "removed", "prune": "pruned", "clean": "cleaned"}
    done = (lambda verb: f"would {verb}") if report.dry_run else past.get
    lines = ["dry run: nothing was changed; a run would do this:"] if report.dry_run else []
    added = len(report.documents_added) + len(report.documents_updated)
    lines.append(
        f"{done('add')} {report.pages_added} pages from {added} documents ({len(report.documents_updated)} updated); "
        f"skipped {report.pages_skipped} pages already stored ({len(report.documents_skipped)} documents); "
        f"{done('remove')} {report.pages_removed} pages ({len(report.documents_pruned)} documents pruned, "
        f"{len(report.documents_cleaned)} unfinished cleaned)"
    )
    if not report.dry_run:
        lines.append(
            "text of the added pages: {pdf} from the PDF text layer, {decoded} decoded, {none} without text".format(
                **report.text_pages
            )
        )
    if report.partition:
        lines.append(
            f"partition {report.partition}: left {len(report.documents_other_partition)} documents to other partitions"
        )
    if report.files_skipped:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(report.files_skipped.items()))
        lines.append(f"files left out: {reasons}")
    for label, names in (
        (done("add"), report.documents_added),
        (done("update"), report.documents_updated),
        (done("prune"), report.documents_pruned),
        (f"{done('clean')} (unfinished; its file changed or is gone)", report.documents_cleaned),
        ("left unfinished (outside these paths; ingest its file to finish it)", report.documents_unfinished),
    ):
        lines += [f"{label}: {printable(p)}" for p in names]
    for held in report.prune_withheld:
        lines += [f"kept, not pruned: {printable(p)}" for p in held["documents"]]
    lines += [f"failed: {printable(f.path)}: {printable(f.reason)}" for f in report.failures]
    return lines


def main() -> None:
    from core.cli import run_one

    run_one(ingest, "ingest")
