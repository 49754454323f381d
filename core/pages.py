"""Documents -> page images, with the identities every stage agrees on."""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from PIL import Image, UnidentifiedImageError

PDF_SUFFIXES = {".pdf"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
SUPPORTED_SUFFIXES = PDF_SUFFIXES | IMAGE_SUFFIXES

# The processor's global view is 1024 px on the long side: rasterize to that so nothing is thrown away
# and nothing is invented by upscaling.
TARGET_LONG_SIDE = 1024

_POINT_NAMESPACE = uuid.UUID("6f1c1f3e-8f0a-5d9c-9b7e-2a4d5c6b7e80")


class InputError(ValueError):
    """A file that cannot be turned into pages; the message says why in one line."""


@dataclass
class Page:
    doc_id: str
    source: str
    page: int  # 1-based
    pages: int
    image: Image.Image

    @property
    def point_id(self) -> str:
        return point_id(self.doc_id, self.page)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def point_id(doc_id: str, page: int) -> str:
    """Deterministic: the same page of the same bytes always lands on the same point."""
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{doc_id}:{page}"))


def discover(paths: list[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files and folders into supported files (sorted, each once). Returns (files, failures)."""
    files: list[Path] = []
    failures: list[tuple[str, str]] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            failures.append((str(raw), "no such file or folder"))
        elif path.is_dir():
            for root, dirs, names in os.walk(path, followlinks=False):
                dirs.sort()
                for name in sorted(names):
                    f = Path(root) / name
                    if f.suffix.lower() in SUPPORTED_SUFFIXES and f.resolve() not in seen:
                        seen.add(f.resolve())
                        files.append(f)
        elif path.suffix.lower() not in SUPPORTED_SUFFIXES:
            failures.append((str(raw), f"unsupported file type {path.suffix or '(none)'!r}"))
        elif path.resolve() not in seen:
            seen.add(path.resolve())
            files.append(path)
    return files, failures


def count_pages(path: Path) -> int:
    """Number of pages, validating the file on the way; raises InputError for anything unusable."""
    if path.stat().st_size == 0:
        raise InputError("empty file")
    if path.suffix.lower() in PDF_SUFFIXES:
        return _pdf_page_count(path)
    return _image_frame_count(path)


def render_pages(path: Path, doc_id: str, dpi: int = 0) -> Iterator[Page]:
    """Yield the file's pages one at a time as RGB images."""
    n = count_pages(path)
    source = str(path)
    if path.suffix.lower() in PDF_SUFFIXES:
        for number in range(1, n + 1):
            yield Page(doc_id, source, number, n, _pdf_page(path, number, dpi))
    else:
        with Image.open(path) as im:
            for number in range(1, n + 1):
                im.seek(number - 1)
                yield Page(doc_id, source, number, n, to_rgb(im))


def to_rgb(image: Image.Image) -> Image.Image:
    """Transparent areas become white paper, not black."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGB", rgba.size, "white")
        paper.paste(rgba, mask=rgba.getchannel("A"))
        return paper
    return image.convert("RGB")


def _pdf_page_count(path: Path) -> int:
    from pdf2image import pdfinfo_from_path
    from pdf2image.exceptions import PDFInfoNotInstalledError, PDFPageCountError, PDFSyntaxError

    try:
        info = pdfinfo_from_path(str(path), timeout=60)
    except PDFInfoNotInstalledError:
        raise InputError("poppler is not installed (pdfinfo not found); install poppler-utils") from None
    except (PDFPageCountError, PDFSyntaxError) as exc:
        text = str(exc).lower()
        if "incorrect password" in text or "encrypt" in text:
            raise InputError("encrypted PDF (password required)") from None
        if "invalid page count 0" in text:
            raise InputError("PDF has no pages") from None
        raise InputError("not a readable PDF (corrupt or truncated)") from None
    except Exception as exc:  # pdfinfo timeouts and odd failures: one clear line, never a traceback
        raise InputError(f"not a readable PDF ({type(exc).__name__})") from None
    pages = int(info.get("Pages", 0) or 0)
    if pages < 1:
        raise InputError("PDF has no pages")
    return pages


def _pdf_page(path: Path, number: int, dpi: int) -> Image.Image:
    from pdf2image import convert_from_path

    kwargs = {"dpi": dpi} if dpi else {"size": TARGET_LONG_SIDE}
    try:
        images = convert_from_path(str(path), first_page=number, last_page=number, timeout=120, **kwargs)
    except Exception as exc:
        raise InputError(f"page {number} could not be rasterized ({type(exc).__name__})") from None
    if not images:
        raise InputError(f"page {number} could not be rasterized")
    return images[0].convert("RGB")


def _image_frame_count(path: Path) -> int:
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            frames = getattr(im, "n_frames", 1)
            im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"not a readable image ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
    return int(frames)
