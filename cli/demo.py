"""`tokendirect demo`: make sample documents, ingest them, search, and regenerate a hit's text."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import typer

from config import Settings

SAMPLE_PAGES = {
    "annual-report.pdf": [
        [
            "Annual Report 2025",
            "",
            "Revenue grew 14 percent to 2.4 million euros.",
            "Operating costs fell in the",
            "second half, mainly from lower energy prices.",
            "",
            "The board proposes a dividend of 0.35 per share.",
        ],
        [
            "Outlook",
            "",
            "We expect steady demand for maintenance contracts",
            "and plan to open an office in Lyon.",
            "",
            "Risks: supplier delays, currency moves, staff turnover.",
        ],
    ],
    "invoice-0042.png": [
        [
            "INVOICE No. 0042",
            "",
            "Bill to: Harbor Logistics GmbH",
            "Date: 3 March 2026",
            "",
            "2 x pallet scanner        1,180.00",
            "1 x service visit           240.00",
            "",
            "Total due: 1,420.00 EUR",
            "Payment within 30 days.",
        ],
    ],
    "field-notes.tiff": [
        [
            "Field notes, river survey",
            "",
            "Water level at gauge 7: 2.31 m.",
            "Heron colony counted: 48 nests.",
            "",
            "Sample bottles B1 to B6 sent to the lab.",
        ],
    ],
}
DEMO_QUERY = "Total due invoice"


def make_samples(folder: Path) -> list[Path]:
    """Scanned-looking documents drawn with Pillow: a two-page PDF, a PNG and a TIFF."""
    from PIL import Image, ImageDraw, ImageFont

    folder.mkdir(parents=True, exist_ok=True)
    font = ImageFont.load_default(size=22)
    paths = []
    for name, pages in SAMPLE_PAGES.items():
        images = []
        for lines in pages:
            page = Image.new("RGB", (850, 1100), "white")
            draw = ImageDraw.Draw(page)
            for row, line in enumerate(lines):
                draw.text((80, 90 + row * 34), line, fill="black", font=font)
            images.append(page)
        path = folder / name
        if not path.exists():
            images[0].save(path, save_all=True, append_images=images[1:], resolution=100)
        paths.append(path)
    return paths


def _real_model_available(settings: Settings) -> str | None:
    """None when the configured model can be loaded, else why not, in a few words."""
    from huggingface_hub import try_to_load_from_cache

    from core.model import hub_reachable

    if Path(settings.model).is_dir():
        return None
    cached = try_to_load_from_cache(settings.model, "config.json", revision=settings.revision)
    if isinstance(cached, str) or hub_reachable():
        return None
    return "no network and no local copy"


def command_name() -> str:
    """How to run `tokendirect` from here: its name when it is on the PATH, else the path of this installation's
    script (`.venv/bin/tokendirect` after `make install`)."""
    if shutil.which("tokendirect"):
        return "tokendirect"
    script = Path(sys.executable).parent / "tokendirect"
    if not script.exists():
        return "tokendirect"
    try:
        return str(script.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def run_demo(settings: Settings) -> int:
    from core.errors import ModelLoadError
    from core.model import OcrModel
    from core.store import open_store
    from decode import Decoder
    from ingest import Ingestor
    from ingest.runlog import target
    from search import Searcher

    data_dir = Path(settings.data_dir)
    why = _real_model_available(settings)
    model = None
    if why is None:
        try:
            model = OcrModel.from_settings(settings).load()
        except ModelLoadError as exc:
            why = str(exc)
    if model is None:
        from core.model import quiet_transformers
        from core.testmodel import make_test_model

        tiny = data_dir / "test-model"
        if not (tiny / "config.json").exists():
            quiet_transformers()
            make_test_model(tiny)
        typer.echo(
            f"note: cannot load {settings.model} ({why}); running on the tiny random-weight test model.", err=True
        )
        typer.echo(
            "note: with the test model, scores and regenerated text are MEANINGLESS; the run shows the "
            "pipeline, not its quality.",
            err=True,
        )
        settings = settings.model_copy(update={"model": str(tiny), "collection": "demo-test-model"})
        model = OcrModel.from_settings(settings)
    logging.getLogger("transformers").setLevel(logging.ERROR)

    samples = make_samples(data_dir / "samples")
    typer.echo(f"== ingest {len(samples)} sample documents from {samples[0].parent} into {settings.collection!r}")
    store = open_store(settings)
    try:
        report = Ingestor(model, store, settings).ingest(samples)
        typer.echo(f"   added {report.pages_added} pages, skipped {report.pages_skipped} already stored")
        for f in report.failures:
            typer.echo(f"   failed: {f.path}: {f.reason}")

        typer.echo(f"== search {DEMO_QUERY!r}")
        hits = Searcher(model, store, settings).search(DEMO_QUERY, top_k=3)
        for rank, hit in enumerate(hits, 1):
            typer.echo(f"   {rank}. score {hit.score:.3f}  {Path(hit.source).name} page {hit.page}")

        top = hits[0]
        typer.echo(f"== decode the top hit from its stored tokens ({Path(top.source).name} page {top.page})")
        text = Decoder(model, store, settings).decode(top.point_id)
        typer.echo("   " + (text[:400] or "(empty)").replace("\n", "\n   "))
    finally:
        store.close()
    env = f"TOKENDIRECT_MODEL={settings.model} TOKENDIRECT_COLLECTION={settings.collection} "
    typer.echo(f"== done. The pages are in collection {settings.collection!r} ({target(settings)}).")
    typer.echo(f'   Try: {env}{command_name()} search "dividend" --decode')
    typer.echo(f"   and: {env}{command_name()} info")
    return 0 if report.ok else 1
