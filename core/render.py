"""Text queries become images, so the vision encoder puts them in the same space as pages.

A query is drawn black on white in DejaVu Sans, with Noto fonts for what DejaVu Sans lacks (core.fonts), and shaped
by Pillow's raqm layout (HarfBuzz): Arabic letters join, right-to-left text runs right to left, and an Arabic word
inside an English sentence keeps its place there (core.bidi). Lines are wrapped to the canvas width; a query longer
than one canvas goes on over further canvases, the views, each encoded like a page, up to MAX_VIEWS. Characters
that no installed font has are left out of the drawing and reported (a warning on the log and
`RenderedQuery.missing`), never drawn as empty boxes.
"""

from __future__ import annotations

import functools
import logging
import unicodedata
from dataclasses import dataclass, field

from fontTools import unicodedata as scripts
from PIL import Image, ImageDraw, ImageFont

from core import bidi, fonts
from core.errors import ConfigError, UsageError
from core.fonts import Face

# Pages are rasterized to a 1024 px long side, so body text (10-12 pt on A4/Letter) is 13-16 px tall in the
# encoder's global view. The query canvas stays at or under the 768 px tile size, so the processor makes no
# tiles and scales the global view by 1024/768; glyphs drawn at 11 px arrive at about 15 px, like body text.
CANVAS_WIDTH = 768
DEFAULT_FONT_PX = 11
MARGIN = 8
# A longer query is drawn over more canvases, each one encoder call giving 257 query tokens (the 1024 px global view
# and its separator: a canvas of at most 768 px makes no tiles). Three views give at most 771 tokens, which stays
# under the 819 rows of 1280 values that a Qdrant server accepts in one multivector (1,048,576 values, checked on
# query vectors too); a fourth view would pass it. Three views hold about 130 lines, some 17,000 characters of
# English text at the default size: far more than a query needs, at three times the encoding time of a short one.
MAX_VIEWS = 3
SIMPLE_SCRIPTS = frozenset({"Latn", "Grek", "Cyrl", "Zyyy", "Zinh", "Zzzz", *fonts.CJK_SCRIPTS})  # need no shaping
MISSING_LISTED = 5  # missing characters named in the warning; the rest are counted

log = logging.getLogger("tokendirect.render")


class QueryTooLongError(UsageError):
    """The query needs more than MAX_VIEWS canvases."""


class ShapingUnavailableError(ConfigError):
    """This Pillow cannot shape right-to-left or complex text (its raqm layout needs FriBiDi)."""


@dataclass
class PlacedRun:
    """A run of text in one font and one direction, where it was drawn."""

    view: int
    x: float  # left end of the run
    baseline: int
    width: float
    text: str  # in logical (reading) order
    face: Face
    rtl: bool


@dataclass
class RenderedQuery:
    """A query drawn over one or more views, and what could not be drawn."""

    views: list[Image.Image]
    missing: list[str] = field(default_factory=list)  # characters no installed font has, each once: left out
    runs: list[PlacedRun] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    max_views: int = MAX_VIEWS

    @property
    def fonts(self) -> list[str]:
        return list(dict.fromkeys(run.face.family for run in self.runs))

    def to_dict(self) -> dict:
        return {
            "views": len(self.views),
            "max_views": self.max_views,
            "fonts": self.fonts,
            "missing": [
                {"char": ch, "codepoint": f"U+{ord(ch):04X}", "name": unicodedata.name(ch, "")} for ch in self.missing
            ],
            "warnings": self.warnings,
        }


def render_query(text: str, font_px: int = 0) -> Image.Image:
    """The first view of `text` (see render_views; a query that needs more than one view has more)."""
    return render_views(text, font_px).views[0]


def render_views(text: str, font_px: int = 0, max_views: int = MAX_VIEWS) -> RenderedQuery:
    """Render `text` black on white, wrapped to the canvas width, over as many views (canvases) as it needs, each
    cropped to its lines so blank canvas stays small. Characters no installed font has are left out and reported
    with a warning; a query that needs more than `max_views` views is a QueryTooLongError."""
    text = " ".join(unicodedata.normalize("NFC", text).split())
    if not text:
        raise UsageError("the query is empty")
    faces = fonts.assign(text)
    missing = list(dict.fromkeys(ch for ch, face in zip(text, faces, strict=True) if face is None))
    if missing:
        text = " ".join("".join(ch for ch, face in zip(text, faces, strict=True) if face is not None).split())
        if not text:
            raise UsageError(f"no installed font can draw any character of the query ({_describe(missing)})")
        faces = fonts.assign(text)
    _check_shaping(text)
    layout = _Layout(text, faces, font_px or DEFAULT_FONT_PX)
    result = RenderedQuery(views=[], missing=missing, max_views=max_views)
    for number, lines in enumerate(layout.views()):
        if number == max_views:
            end = layout.drawn_to
            raise QueryTooLongError(
                f"the query is too long to render: the limit is {max_views} views of {CANVAS_WIDTH} x {CANVAS_WIDTH} "
                f"px (one encoder call each), which hold its first {end:,} of {len(text):,} characters; shorten it"
            )
        result.views.append(layout.draw(number, lines, result.runs))
    if missing:
        result.warnings.append(f"left out of the rendered query, as no installed font has them: {_describe(missing)}")
    for warning in result.warnings:
        log.warning("warning: %s", warning)
    if len(result.views) > 1:
        log.info("the query is drawn over %d views", len(result.views))
    return result


def _describe(chars: list[str]) -> str:
    named = ", ".join(f"U+{ord(ch):04X} {unicodedata.name(ch, '?')} ({ch})" for ch in chars[:MISSING_LISTED])
    return named + (f" and {len(chars) - MISSING_LISTED} more" if len(chars) > MISSING_LISTED else "")


def _check_shaping(text: str) -> None:
    if fonts.layout_engine() == ImageFont.Layout.RAQM:
        return
    needs = next((ch for ch in text if bidi.needs_bidi(ch) or scripts.script(ch) not in SIMPLE_SCRIPTS), None)
    if needs is not None:
        raise ShapingUnavailableError(
            f"the query has {scripts.script_name(scripts.script(needs))} text ({needs!r}), which needs Pillow's raqm "
            "layout, and this Pillow has none: install the Debian package libfribidi0 (`make install` does, as root)"
        )


# ---------------------------------------------------------------------------------------------------------------
# Lines and views


@functools.lru_cache(maxsize=4096)
def _advance(face: Face, px: int, text: str, rtl: bool) -> float:
    return face.font(px).getlength(text, **_direction(rtl))


def _direction(rtl: bool) -> dict:
    return {"direction": "rtl"} if rtl else {}


def _breakable(ch: str) -> bool:
    """A line may break between two of these characters without a space (Chinese and Japanese text)."""
    return scripts.script(ch) in ("Hani", "Hira", "Kana", "Bopo")


class _Layout:
    """Lines (logical slices of the text) broken to the canvas width, placed on views one under another."""

    def __init__(self, text: str, faces: list[Face], px: int):
        self.text, self.faces, self.px = text, faces, px
        self.base, self.levels = bidi.levels(text)
        primary = fonts.require(fonts.PRIMARY, "all text").font(px)
        self.ascent, self.descent = primary.getmetrics()
        self.gap = max(2, (self.ascent + self.descent) // 4)
        self.width = CANVAS_WIDTH - 2 * MARGIN
        self.drawn_to = 0  # characters placed on the views made so far

    def runs(self, start: int, end: int) -> list[tuple[int, int]]:
        """(start, end) of the runs of one face and one level in text[start:end]."""
        out = []
        for i in range(start, end):
            if i == start or (self.faces[i], self.levels[i]) != (self.faces[i - 1], self.levels[i - 1]):
                out.append([i, i + 1])
            else:
                out[-1][1] = i + 1
        return [tuple(r) for r in out]

    def measure(self, start: int, end: int) -> float:
        return sum(
            _advance(self.faces[s], self.px, self.text[s:e], self.levels[s] % 2 == 1) for s, e in self.runs(start, end)
        )

    def units(self):
        """(start, end, after_space) of the pieces a line may break between: words, and single Chinese or Japanese
        characters."""
        text, i = self.text, 0
        while i < len(text):
            after_space = i > 0 and text[i - 1] == " "
            j = i + 1
            while j < len(text) and text[j] != " " and not (_breakable(text[j - 1]) and _breakable(text[j])):
                j += 1
            yield i, j, after_space
            i = j + 1 if j < len(text) and text[j] == " " else j

    def lines(self):
        """(start, end) of each line, in reading order: greedy, breaking a word only when it is wider than a line."""
        start = end = None
        used = 0.0
        for s, e, after_space in self.units():
            width = self.measure(s, e)
            space = self.measure(s - 1, s) if after_space else 0.0
            if start is not None and used + space + width <= self.width:
                end, used = e, used + space + width
                continue
            if start is not None:
                yield start, end
            while width > self.width:  # a word wider than a line: as much of it as fits, then the rest
                cut = self._fit(s, e)
                yield s, cut
                s, width = cut, self.measure(cut, e)
            start, end, used = s, e, width
        if start is not None:
            yield start, end

    def _fit(self, start: int, end: int) -> int:
        lo, hi = start + 1, end  # the longest prefix that fits; at least one character
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if self.measure(start, mid) <= self.width else (lo, mid - 1)
        return lo

    def extent(self, start: int, end: int) -> tuple[int, int]:
        """Ink above and below the baseline on a line, at least the primary font's ascent and descent."""
        ascent, descent = self.ascent, self.descent
        for s, e in self.runs(start, end):
            box = self.faces[s].font(self.px).getbbox(self.text[s:e], anchor="ls", **_direction(self.levels[s] % 2))
            ascent, descent = max(ascent, -box[1]), max(descent, box[3])
        return ascent, descent

    def views(self):
        """The lines of each view, as (start, end, baseline), as long as the caller asks for more."""
        view: list[tuple[int, int, int]] = []
        bottom = MARGIN - self.gap  # the last line's lowest ink
        for start, end in self.lines():
            ascent, descent = self.extent(start, end)
            baseline = bottom + self.gap + ascent
            if view and baseline + descent + MARGIN > CANVAS_WIDTH:
                yield view
                view, baseline = [], MARGIN + ascent
            view.append((start, end, baseline))
            bottom = baseline + descent
        if view:
            yield view

    def draw(self, number: int, lines: list[tuple[int, int, int]], placed: list[PlacedRun]) -> Image.Image:
        _, descent = self.extent(*lines[-1][:2])
        image = Image.new("RGB", (CANVAS_WIDTH, lines[-1][2] + descent + MARGIN), "white")
        pen = ImageDraw.Draw(image)
        for start, end, baseline in lines:
            runs = self.runs(start, end)
            order = bidi.visual_order([self.levels[s] for s, _ in runs])
            widths = [self.measure(s, e) for s, e in runs]
            x = MARGIN if self.base == 0 else round(CANVAS_WIDTH - MARGIN - sum(widths))  # right to left: right-aligned
            for k in order:
                s, e = runs[k]
                rtl = self.levels[s] % 2 == 1
                face = self.faces[s]
                pen.text(
                    (x, baseline), self.text[s:e], fill="black", font=face.font(self.px), anchor="ls", **_direction(rtl)
                )
                placed.append(PlacedRun(number, x, baseline, widths[k], self.text[s:e], face, rtl))
                x += widths[k]
            self.drawn_to = end
        return image
