"""A page point's payload: everything it carries besides its vectors. The one place to add a payload field."""

from __future__ import annotations

from typing import Any

from core.pages import Page, display_path
from core.text import FROM_PDF, text_fields
from ingest.plan import Doc


def page_payload(page: Page, doc: Doc, n_tokens: int, model: str, ingested_at: str) -> dict[str, Any]:
    return {
        "doc_id": page.doc_id,
        "source": doc.source,
        "file_name": display_path(doc.path.name),
        "page": page.page,
        "pages": page.pages,
        "width": page.image.width,
        "height": page.image.height,
        "n_tokens": n_tokens,
        "model": model,
        "ingested_at": ingested_at,
        # The file as it was read: a later run skips it unhashed while size and mtime still match.
        "file_size": doc.size,
        "file_mtime_ns": doc.mtime_ns,
        **text_fields(doc.texts[page.page - 1] if doc.texts else None, FROM_PDF),
    }


def location(doc: Doc) -> dict[str, Any]:
    """The payload fields that say where a document's file is (re-pointed when it moves)."""
    return {
        "source": doc.source,
        "file_name": display_path(doc.path.name),
        "file_size": doc.size,
        "file_mtime_ns": doc.mtime_ns,
    }
