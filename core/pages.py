"""Documents -> page images, with the identities every stage agrees on."""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from PIL import Image, UnidentifiedImageError

from config import defaults
from core.errors import InputError, first_line

PDF_SUFFIXES = {".pdf"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif"}
SUPPORTED_SUFFIXES = PDF_SUFFIXES | IMAGE_SUFFIXES
MULTI_PAGE_FORMATS = {"TIFF"}  # each frame is a page; other formats' further frames (an animation) are not pages

# Pillow's own decompression-bomb check (a warning above 89 million pixels, an error above twice that) would
# contradict TOKENDIRECT_MAX_IMAGE_PIXELS both ways: the project checks every image's size against that setting from
# its header, before decoding it (Limits.max_pixels), so Pillow's check is off.
Image.MAX_IMAGE_PIXELS = None

# The processor's global view is 1024 px on the long side: rasterize to that so nothing is thrown away
# and nothing is invented by upscaling.
TARGET_LONG_SIDE = 1024

_POINT_NAMESPACE = uuid.UUID("6f1c1f3e-8f0a-5d9c-9b7e-2a4d5c6b7e80")


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


@dataclass(frozen=True)
class Limits:
    """What one input file may cost; a breach fails that file alone, with a reason naming the setting."""

    max_pages: int
    max_bytes: int
    max_pixels: int
    raster_timeout: float
    chunk: int  # PDF pages rasterized per poppler call: fewer process starts, still a bounded few in memory

    @classmethod
    def from_settings(cls, s) -> "Limits":
        return cls(
            max_pages=s.max_pages,
            max_bytes=int(s.max_file_mb * (1 << 20)),
            max_pixels=s.max_image_pixels,
            raster_timeout=s.raster_timeout,
            chunk=max(1, s.batch_size),
        )


DEFAULT_LIMITS = Limits.from_settings(defaults())


def display_path(path: str | Path) -> str:
    """A path as text that can always be printed and stored: bytes that are not UTF-8 appear as \\xNN."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def discover(
    paths: list[str | Path], skipped: dict[str, int] | None = None
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files and folders into supported files (sorted, each once). Returns (files, failures); `skipped`, when
    given, counts the files in the folders that are left out, by reason (`unsupported type .txt`).

    Symbolic links are followed; a link that leads back into a folder being walked is named as a loop and not
    entered, a broken link to a supported file is named too, as is a folder that cannot be read."""
    files: list[Path] = []
    failures: list[tuple[str, str]] = []
    seen: set[Path] = set()
    walked: set[tuple[int, int]] = set()

    def add(path: Path) -> None:
        try:
            real = path.resolve()
            if not real.is_file():
                failures.append((display_path(path), "not a regular file"))
            elif real not in seen:
                seen.add(real)
                files.append(path)
        except OSError as exc:
            failures.append((display_path(path), _os_reason(exc)))

    def walk(folder: Path, ancestors: frozenset) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            failures.append((display_path(folder), f"cannot read folder ({_os_reason(exc)})"))
            return
        for entry in entries:
            path = Path(entry.path)
            try:
                if entry.is_dir(follow_symlinks=True):
                    st = path.stat()
                    key = (st.st_dev, st.st_ino)
                    if key in ancestors:
                        target = display_path(path.resolve())
                        failures.append((display_path(path), f"folder loop: links back to {target}"))
                    elif key not in walked:  # a folder reached by two links is walked once
                        walked.add(key)
                        walk(path, ancestors | {key})
                elif path.suffix.lower() in SUPPORTED_SUFFIXES:
                    if entry.is_symlink() and not path.exists():
                        failures.append((display_path(path), "broken symbolic link"))
                    else:
                        add(path)
                elif skipped is not None:
                    reason = f"unsupported type {path.suffix.lower()}" if path.suffix else "no file type (extension)"
                    skipped[reason] = skipped.get(reason, 0) + 1
            except OSError as exc:  # a link to itself (ELOOP), a file gone meanwhile
                failures.append((display_path(path), _os_reason(exc)))

    for raw in paths:
        path = Path(raw)
        if path.is_symlink() and not path.exists():
            failures.append((display_path(raw), "broken symbolic link"))
        elif not path.exists():
            failures.append((display_path(raw), "no such file or folder"))
        elif path.is_dir():
            st = path.stat()
            walked.add((st.st_dev, st.st_ino))
            walk(path, frozenset({(st.st_dev, st.st_ino)}))
        elif path.suffix.lower() not in SUPPORTED_SUFFIXES:
            failures.append((display_path(raw), f"unsupported file type {path.suffix or '(none)'!r}"))
        else:
            add(path)
    return files, failures


def count_pages(path: Path, limits: Limits = DEFAULT_LIMITS, dpi: int = 0) -> int:
    """Number of pages, validating the file on the way; raises InputError for anything unusable."""
    size = path.stat().st_size
    if size == 0:
        raise InputError("empty file")
    if size > limits.max_bytes:
        raise InputError(
            f"file too large ({size / (1 << 20):.1f} MB > {limits.max_bytes / (1 << 20):g} MB, TOKENDIRECT_MAX_FILE_MB)"
        )
    _check_content(path)
    if path.suffix.lower() in PDF_SUFFIXES:
        n = _pdf_page_count(path, limits, dpi)
    else:
        n = _image_frame_count(path, limits)
    if n > limits.max_pages:
        raise InputError(f"too many pages ({n} > {limits.max_pages}, TOKENDIRECT_MAX_PAGES)")
    return n


def render_pages(
    path: Path,
    doc_id: str,
    dpi: int = 0,
    limits: Limits = DEFAULT_LIMITS,
    numbers: list[int] | None = None,
    n: int | None = None,
) -> Iterator[Page]:
    """Yield the file's pages (or only those in `numbers`) one at a time as RGB images; a few at most in memory."""
    n = n or count_pages(path, limits, dpi)
    wanted = list(range(1, n + 1)) if numbers is None else sorted(numbers)
    source = str(path)
    if path.suffix.lower() in PDF_SUFFIXES:
        for first, last in _runs(wanted, limits.chunk):
            for number, image in zip(range(first, last + 1), _pdf_pages(path, first, last, dpi, limits), strict=True):
                yield Page(doc_id, source, number, n, image)
    else:
        with Image.open(path) as im:
            for number in wanted:
                im.seek(number - 1)
                _check_pixels(im.size, limits, number)
                yield Page(doc_id, source, number, n, to_rgb(im))


def _runs(numbers: list[int], chunk: int) -> Iterator[tuple[int, int]]:
    """Consecutive page numbers as (first, last) runs of at most `chunk` pages."""
    start = prev = None
    for k in numbers:
        if start is not None and k == prev + 1 and k - start < chunk:
            prev = k
            continue
        if start is not None:
            yield start, prev
        start = prev = k
    if start is not None:
        yield start, prev


# Leading bytes of each format: a file whose content is another format than its name says is refused.
_MAGIC = {
    b"%PDF": "PDF",
    b"\x89PNG": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
}
_EXPECTED = {
    ".pdf": "PDF",
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".gif": "GIF",
}


def _sniff(head: bytes) -> str | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _MAGIC.items() if head.startswith(magic)), None)


def _check_content(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(1024)
    expected = _EXPECTED[path.suffix.lower()]
    found = _sniff(head)
    if found is None and expected == "PDF" and b"%PDF" in head:
        return  # PDF readers accept junk before the header
    if found != expected:
        what = f"a {found} file" if found else f"not a {expected} file"
        raise InputError(f"content does not match the name: {what}, named {path.suffix!r}")


def _check_pixels(size: tuple[int, int], limits: Limits, number: int) -> None:
    w, h = size
    if w * h > limits.max_pixels:
        raise InputError(
            f"page {number} is too large ({w} x {h} px > {limits.max_pixels} px, TOKENDIRECT_MAX_IMAGE_PIXELS)"
        )


def open_image(path: str | Path, limits: Limits = DEFAULT_LIMITS) -> Image.Image:
    """One image file (a query image) as RGB, its size checked against the limits before it is decoded."""
    try:
        with Image.open(path) as im:
            _check_pixels(im.size, limits, 1)
            return to_rgb(im)
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read image {display_path(path)}: {first_line(exc)}") from None


def _os_reason(exc: OSError) -> str:
    return f"{type(exc).__name__}: {exc.strerror or exc}"


def to_rgb(image: Image.Image) -> Image.Image:
    """Transparent areas become white paper, not black."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGB", rgba.size, "white")
        paper.paste(rgba, mask=rgba.getchannel("A"))
        return paper
    return image.convert("RGB")


def _pdf_page_count(path: Path, limits: Limits = DEFAULT_LIMITS, dpi: int = 0) -> int:
    from pdf2image import pdfinfo_from_path
    from pdf2image.exceptions import (
        PDFInfoNotInstalledError,
        PDFPageCountError,
        PDFPopplerTimeoutError,
        PDFSyntaxError,
    )

    try:
        info = pdfinfo_from_path(str(path), timeout=limits.raster_timeout)
    except PDFInfoNotInstalledError:
        raise InputError("poppler is not installed (pdfinfo not found); install poppler-utils") from None
    except (PDFPageCountError, PDFSyntaxError) as exc:
        text = str(exc).lower()
        if "incorrect password" in text or "encrypt" in text:
            raise InputError("encrypted PDF (password required)") from None
        if "invalid page count 0" in text:
            raise InputError("PDF has no pages") from None
        raise InputError("not a readable PDF (corrupt or truncated)") from None
    except PDFPopplerTimeoutError:
        raise InputError(
            f"reading the PDF timed out after {limits.raster_timeout:g} s (TOKENDIRECT_RASTER_TIMEOUT)"
        ) from None
    except Exception as exc:  # odd failures: one clear line, never a traceback
        raise InputError(f"not a readable PDF ({type(exc).__name__})") from None
    pages = int(info.get("Pages", 0) or 0)
    if pages < 1:
        raise InputError("PDF has no pages")
    if dpi:  # at the default size a page is at most 1024 px long; at a set resolution its size decides
        try:
            w, h = (float(v) for v in str(info.get("Page size", "")).split()[0:3:2])
        except ValueError:
            w = h = 0.0
        _check_pixels((int(w / 72 * dpi), int(h / 72 * dpi)), limits, 1)
    return pages


def _pdf_pages(path: Path, first: int, last: int, dpi: int, limits: Limits) -> list[Image.Image]:
    from pdf2image import convert_from_path
    from pdf2image.exceptions import PDFPopplerTimeoutError

    kwargs = {"dpi": dpi} if dpi else {"size": TARGET_LONG_SIDE}
    where = f"page {first}" if first == last else f"pages {first}-{last}"
    try:
        images = convert_from_path(str(path), first_page=first, last_page=last, timeout=limits.raster_timeout, **kwargs)
    except PDFPopplerTimeoutError:
        raise InputError(
            f"rasterizing {where} timed out after {limits.raster_timeout:g} s (TOKENDIRECT_RASTER_TIMEOUT)"
        ) from None
    except Exception as exc:
        raise InputError(f"{where} could not be rasterized ({type(exc).__name__})") from None
    if len(images) != last - first + 1:
        raise InputError(f"{where} could not be rasterized")
    out = []
    for number, im in zip(range(first, last + 1), images, strict=True):
        _check_pixels(im.size, limits, number)
        out.append(im.convert("RGB"))
    return out


def _image_frame_count(path: Path, limits: Limits = DEFAULT_LIMITS) -> int:
    try:
        with Image.open(path) as im:
            _check_pixels(im.size, limits, 1)  # from the header, before anything is decoded
            im.verify()
        with Image.open(path) as im:
            frames = getattr(im, "n_frames", 1) if im.format in MULTI_PAGE_FORMATS else 1
            im.load()
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"not a readable image ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
    return int(frames)
