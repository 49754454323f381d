"""The fonts text queries are drawn with: found on this machine, chosen for each run of text by their cmap tables.

DejaVu Sans draws every run it covers: Latin with accents, Greek, Cyrillic and most Arabic and Hebrew. A run it
lacks falls back to the Noto font of the run's script (Noto Sans CJK for Chinese, Japanese and Korean; Noto Sans
Arabic, Noto Sans Devanagari and so on), then to Noto Sans, then to any other Noto font that has the character. A
run is one script's characters with the spaces, digits and punctuation among them, so a word is drawn in one font
and its letters can join; a run that no single font covers falls back character by character.

The fonts come from Debian packages (fonts-dejavu-core, fonts-noto-core, fonts-noto-cjk), which `make install` and
the Dockerfile install; nothing is downloaded. Each font is looked for at its Debian path, then through fontconfig
(fc-match), so other systems work when the same fonts are installed. A font that a query needs and the machine
lacks is a MissingFontError naming the package to install.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from fontTools import unicodedata as scripts
from fontTools.ttLib import TTCollection, TTFont
from PIL import ImageFont, features

from core.errors import ConfigError

PRIMARY = "DejaVu Sans"
NOTO = "Noto Sans"
CJK = "Noto Sans CJK"  # one collection file with a face per region: Noto Sans CJK JP, KR, SC, TC, HK
CJK_SCRIPTS = frozenset({"Hani", "Hira", "Kana", "Hang", "Bopo"})
NEUTRAL_SCRIPTS = frozenset({"Zyyy", "Zinh", "Zzzz"})  # common, inherited, unknown: they join the text around them
DEBIAN_FILES = {
    PRIMARY: Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    CJK: Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    NOTO: Path("/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf"),  # its folder holds Noto Sans <Script> too
}
PACKAGES = {PRIMARY: "fonts-dejavu-core", CJK: "fonts-noto-cjk", NOTO: "fonts-noto-core"}


class MissingFontError(ConfigError):
    """A font the query needs is not installed (the message names the Debian package that has it)."""


@dataclass(frozen=True)
class Face:
    """One face of a font file (a collection file holds several)."""

    family: str
    path: str
    index: int = 0

    @functools.cached_property
    def cmap(self) -> frozenset[int]:
        if self.path.lower().endswith((".ttc", ".otc")):
            font = TTCollection(self.path, lazy=True).fonts[self.index]
        else:
            font = TTFont(self.path, lazy=True)
        return frozenset(font.getBestCmap())

    def covers(self, ch: str) -> bool:
        return ord(ch) in self.cmap or ignorable(ch)

    def font(self, px: int) -> ImageFont.FreeTypeFont:
        return _font(self, px)


@functools.lru_cache(maxsize=64)
def _font(face: Face, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(face.path, px, index=face.index, layout_engine=layout_engine())


def layout_engine() -> ImageFont.Layout:
    """raqm (HarfBuzz shaping, FriBiDi) where Pillow has it; its basic layout otherwise."""
    return ImageFont.Layout.RAQM if features.check("raqm") else ImageFont.Layout.BASIC


def ignorable(ch: str) -> bool:
    """Invisible format characters and variation selectors (ZWJ, ZWNJ, U+FE0F...): no font needs a glyph for them."""
    return unicodedata.category(ch) == "Cf" or 0xFE00 <= ord(ch) <= 0xFE0F or 0xE0100 <= ord(ch) <= 0xE01EF


def package(family: str) -> str:
    return PACKAGES[PRIMARY if family == PRIMARY else CJK if family.startswith(CJK) else NOTO]


def _debian_file(family: str) -> Path:
    if family in (PRIMARY, NOTO):
        return DEBIAN_FILES[family]
    if family.startswith(CJK):
        return DEBIAN_FILES[CJK]
    return DEBIAN_FILES[NOTO].parent / f"{family.replace(' ', '')}-Regular.ttf"  # Noto Sans Arabic: NotoSansArabic-...


@functools.lru_cache(maxsize=None)
def find(family: str) -> Face | None:
    """The regular face of `family` on this machine: at its Debian path, else where fontconfig has it; or None."""
    path = _debian_file(family)
    if path.is_file():
        if path.suffix.lower() not in (".ttc", ".otc"):
            return Face(family, str(path))
        names = [f["name"].getDebugName(1) for f in TTCollection(str(path), lazy=True).fonts]
        if family in names:
            return Face(family, str(path), names.index(family))
    return _fontconfig(family)


def _fontconfig(family: str) -> Face | None:
    if shutil.which("fc-match") is None:
        return None
    try:
        out = subprocess.run(
            ["fc-match", "--format", "%{family}\n%{file}\n%{index}", family],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names, file, index = (out.split("\n") + ["", "", ""])[:3]
    # fc-match always answers, with a stand-in font when the family is missing: accept only the family itself
    if family not in (n.strip() for n in names.split(",")) or not os.path.isfile(file):
        return None
    return Face(family, file, int(index or 0))


def require(family: str, needed_for: str) -> Face:
    face = find(family)
    if face is None:
        raise MissingFontError(
            f"query rendering needs the font {family} for {needed_for}, and it is not installed: install the "
            f"Debian package {package(family)} (`make install` does, as root)"
        )
    return face


@functools.lru_cache(maxsize=None)
def other_noto() -> tuple[Face, ...]:
    """Every other regular Noto font beside Noto Sans (Noto Sans faces first): the last resort for a character."""
    base = find(NOTO)
    if base is None:
        return ()
    files = sorted(
        Path(base.path).parent.glob("Noto*-Regular.[ot]tf"), key=lambda p: (not p.name.startswith("NotoSans"), p.name)
    )
    return tuple(Face(p.name.removesuffix("-Regular" + p.suffix), str(p)) for p in files if str(p) != base.path)


def cjk_region(text: str) -> str:
    """Which regional face of Noto Sans CJK draws Han characters: Japanese with kana, Korean with Hangul, else
    Simplified Chinese."""
    found = {scripts.script(ch) for ch in text if ord(ch) >= 0x1100}
    return "JP" if found & {"Hira", "Kana"} else "KR" if "Hang" in found else "SC"


def script_runs(text: str) -> list[tuple[int, int, str]]:
    """(start, end, script) runs of `text`; spaces, digits, punctuation and marks join the run before them (the run
    after them at the start)."""
    runs: list[tuple[int, int, str]] = []
    start, current = 0, None
    for i, ch in enumerate(text):
        script = scripts.script(ch)
        if script in NEUTRAL_SCRIPTS or script == current:
            continue
        if current is not None:
            runs.append((start, i, current))
            start = i
        current = script
    runs.append((start, len(text), current or "Zyyy"))
    return runs


def _fallbacks(script: str, region: str, run: str) -> list[Face]:
    if script in CJK_SCRIPTS:
        return [require(f"{CJK} {region}", f"{run!r}"), *filter(None, [find(NOTO)])]
    specific = find(f"{NOTO} {scripts.script_name(script, 'Unknown')}")
    return [*filter(None, [specific]), require(NOTO, f"{run!r}")]


def assign(text: str) -> list[Face | None]:
    """The face each character of `text` is drawn with; None where no installed font has it."""
    primary = require(PRIMARY, "all text")
    region = cjk_region(text)
    faces: list[Face | None] = [None] * len(text)
    for start, end, script in script_runs(text):
        run = text[start:end]
        chain = [primary]
        if not all(map(primary.covers, run)):
            chain += _fallbacks(script, region, run)
        face = next((f for f in chain if all(map(f.covers, run))), None)
        if face is not None:
            faces[start:end] = [face] * (end - start)
            continue
        for i in range(start, end):  # no font has the whole run: character by character
            faces[i] = next((f for f in (*chain, *other_noto()) if f.covers(text[i])), None)
    return faces
