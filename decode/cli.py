"""`tokendirect decode` (and `python -m decode`)."""

from __future__ import annotations

import typer

from core.cli import clean_errors, emit, settings


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
    with Decoder.from_settings(settings()) as decoder:
        page = decoder.page(point_id)
        text = decoder.decode(point_id, mode)
    data = {"point_id": point_id, "mode": mode, "text": text}
    data.update({k: page[k] for k in ("doc_id", "source", "page") if k in page})
    emit(as_json, data, text)


def main() -> None:
    from core.cli import run_one

    run_one(decode, "decode")
