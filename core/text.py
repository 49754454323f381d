"""Page text and its BM25 sparse vector: the text signal that stands beside the vision tokens.

A page's text comes from the PDF's own text layer when it has one (one `pdftotext` call per document), else,
when asked, from the matched decoder reading the stored tokens. Documents and queries are tokenised by the same
Qdrant BM25 model (qdrant-edge's, offline: no model files to download), whichever engine holds the collection:
both store the result as a sparse vector with the IDF modifier, so Qdrant supplies the corpus statistics.
"""

from __future__ import annotations

import functools
import re
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from core.pages import PDF_SUFFIXES

# Where a page's text came from (payload `text_source`); None: the page has no text.
FROM_PDF = "pdf"
FROM_DECODER = "decoded"
TEXT_SOURCES = (FROM_PDF, FROM_DECODER)

BM25_LANGUAGE = "english"  # stemming and stop words; one setting for documents and queries alike
# A text layer with fewer letters or digits than this is noise (a page number, a stray mark on a scan).
MIN_TEXT_CHARS = 3


@dataclass(frozen=True)
class SparseVector:
    """A BM25 sparse vector, engine-neutral: each store turns it into its own type."""

    indices: list[int]
    values: list[float]


def pdf_page_texts(path: Path, pages: int, timeout: float = 120.0) -> list[str]:
    """The text layer of each of a PDF's `pages` pages, normalised ("" where a page has none).

    One pdftotext run for the whole document: it ends every page with a form feed."""
    if Path(path).suffix.lower() not in PDF_SUFFIXES:
        return [""] * pages
    try:
        run = subprocess.run(
            ["pdftotext", "-q", "-enc", "UTF-8", str(path), "-"], capture_output=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return [""] * pages  # no text layer to be had: the page is still searched visually
    if run.returncode != 0:
        return [""] * pages
    parts = run.stdout.decode("utf-8", errors="replace").split("\f")
    return [normalize(t) for t in (parts + [""] * pages)[:pages]]


_HYPHEN_BREAK = re.compile(r"(\w)-\n(\w)")
_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize(text: str | None) -> str:
    """Unicode-normalised text with words split across lines joined, spaces collapsed and line breaks kept;
    "" when it holds too few letters or digits to be text."""
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", text).replace("\u00ad", "").replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(ch if ch == "\n" or unicodedata.category(ch)[0] != "C" else " " for ch in text)
    text = _HYPHEN_BREAK.sub(r"\1\2", text)
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    text = _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
    return text if sum(ch.isalnum() for ch in text) >= MIN_TEXT_CHARS else ""


def text_fields(text: str | None, source: str | None) -> dict:
    """The page payload's text fields: `text` and `text_source` (None for both when the page has no text)."""
    text = normalize(text)
    return {"text": text or None, "text_source": source if text else None}


@functools.lru_cache(maxsize=1)
def _bm25():
    import qdrant_edge as q

    return q.Bm25(q.Bm25Config(language=BM25_LANGUAGE))


def embed_document(text: str | None) -> SparseVector | None:
    """A page's BM25 vector (term frequencies with length normalisation; Qdrant applies IDF at query time),
    or None when the text has no indexable term."""
    return _sparse(_bm25().embed_document(text)) if text else None


def embed_query(text: str | None) -> SparseVector | None:
    """A query's BM25 vector (weight 1 per distinct term), or None when it has no indexable term."""
    return _sparse(_bm25().embed_query(text)) if text else None


def _sparse(vector) -> SparseVector | None:
    indices = list(vector.indices)
    return SparseVector(indices, [float(v) for v in vector.values]) if indices else None
