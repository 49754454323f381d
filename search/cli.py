"""`tokendirect search` (and `python -m search`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from core.cli import clean_errors, emit, settings
from core.errors import UsageError, printable


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
    from core.model import prompt_for
    from core.pages import Limits, open_image
    from decode import Decoder
    from search import Searcher
    from search.plan import check_mode

    if text.strip() and image is not None:
        raise UsageError("give either a query TEXT or --image FILE, not both")
    if not text.strip() and image is None:
        raise UsageError("give a query TEXT or --image FILE")
    if mode is not None:
        check_mode(mode)
    if image is not None and mode not in (None, "visual"):
        raise UsageError("an --image query is searched visually only; leave out --mode or use --mode visual")
    if exact and mode == "text":
        raise UsageError("--exact applies to the visual ranking, which --mode text does not use; leave one out")
    prompt_for(decode_mode)  # an unknown mode fails now, not after the search
    if decode_mode != "ocr" and not decode:
        typer.echo("warning: --decode-mode has no effect without --decode", err=True)
    s = settings()
    rendered = None  # the text query as drawn: views used, characters left out, warnings
    with Searcher.from_settings(s) as searcher:
        if doc is not None and searcher.store.count(doc) == 0:
            raise UsageError(
                f"no document with doc_id {doc!r} in collection {s.collection!r} (the search output shows the "
                "doc_id of each hit)"
            )
        if image is not None:
            query = open_image(image, Limits.from_settings(s))
            hits = searcher.search_image(query, top_k, doc, exact=exact)
        else:
            mode = mode or searcher.default_mode()
            rendered = None if mode == "text" else searcher.render(text)  # warns of what it cannot draw
            tokens = None if rendered is None else searcher.encode_query(rendered)
            hits = searcher.search(text, top_k, doc, mode=mode, exact=exact, tokens=tokens)
        rows = [h.to_dict() for h in hits]
        if decode:
            with Decoder.from_settings(s) as decoder:  # the same model and store handle, shared in this process
                for row in rows:
                    row["text"] = decoder.decode(row["point_id"], decode_mode)
    lines = []
    for rank, row in enumerate(rows, 1):
        found = "+".join(row["signals"])
        lines.append(
            f"{rank}. {row['score']:.4f}  {printable(row['source'])}  page {row['page']}  ({found})  "
            f"doc {row['doc_id']}  [{row['point_id']}]"
        )
        if "text" in row:
            lines.append("   " + row["text"].replace("\n", "\n   "))
    data = {
        "query": text or str(image),
        "mode": mode or "visual",
        "hits": rows,
        "rendering": rendered.to_dict() if rendered else None,
    }
    emit(as_json, data, "\n".join(lines) or "no hits")


def main() -> None:
    from core.cli import run_one

    run_one(search, "search")
