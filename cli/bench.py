"""`tokendirect bench ...`: measurements users can repeat on their own machine (the logic lives outside cli/)."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Measure the pipeline on this machine.")


@app.command("ingest")
def ingest_bench(
    pages: int = typer.Option(16, "--pages", min=1, help="Pages of the synthetic PDF to ingest."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Ingest a synthetic PDF with the configured model into a temporary store: pages per second, and the share
    of wall time spent rasterizing, encoding and storing."""
    from cli import _emit, _settings, clean_errors
    from ingest.bench import bench_ingest

    result = clean_errors(bench_ingest)(_settings(), pages)
    t, shares = result["timings"], result["shares"]
    text = "\n".join([
        f"{result['pages']} pages in {t['wall_s']:.2f} s: {result['pages_per_s']:.2f} pages/s "
        f"(model {result['model']}, {result['device']}, batch {result['batch_size']})",
        f"busy share of wall time: encode {shares['encode']:.1%}, rasterize {shares['rasterize']:.1%}, "
        f"store {shares['store']:.1%}, hash {shares['hash']:.1%}",
        f"non-model share {result['non_model_share']:.1%} (target <= {result['target_non_model_share']:.0%}: "
        f"{'met' if result['target_met'] else 'NOT met'})",
    ])
    _emit(as_json, result, text)
