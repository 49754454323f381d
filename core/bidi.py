"""Bidirectional text: which way each character of a query runs, and the order runs of text are drawn in.

The levels come from FriBiDi, the library Pillow's raqm layout itself uses, so text drawn in runs (one font each)
is ordered exactly as raqm orders a line drawn whole: the Unicode bidirectional algorithm with bracket pairs, the
paragraph's direction set by its first strong character. Text with no right-to-left character needs no library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import unicodedata

from core.errors import ConfigError

RTL_TYPES = frozenset({"R", "AL", "AN", "RLE", "RLO", "RLI"})  # bidi classes that can make text run right to left
LIBRARY_NAMES = ("libfribidi.so.0", "libfribidi.0.dylib", "fribidi-0.dll")  # the names Pillow loads it by
_PAR_AUTO = 0x40  # FRIBIDI_PAR_ON: the first strong character decides


class BidiUnavailableError(ConfigError):
    """FriBiDi, needed for right-to-left text, cannot be loaded."""


@functools.lru_cache(maxsize=1)
def _fribidi() -> ctypes.CDLL | None:
    for name in (*LIBRARY_NAMES, ctypes.util.find_library("fribidi")):
        try:
            lib = ctypes.CDLL(name) if name else None
        except OSError:
            continue
        if lib is not None:
            lib.fribidi_get_par_embedding_levels_ex.restype = ctypes.c_int8
            return lib
    return None


def needs_bidi(text: str) -> bool:
    return any(unicodedata.bidirectional(ch) in RTL_TYPES for ch in text)


def levels(text: str) -> tuple[int, list[int]]:
    """The paragraph's level (0 left to right, 1 right to left) and each character's level; odd levels run right
    to left."""
    if not needs_bidi(text):
        return 0, [0] * len(text)
    lib = _fribidi()
    if lib is None:
        raise BidiUnavailableError(
            "right-to-left text needs the FriBiDi library: install the Debian package libfribidi0 "
            "(`make install` does, as root)"
        )
    n = len(text)
    chars = (ctypes.c_uint32 * n)(*map(ord, text))
    types, brackets, out = (ctypes.c_uint32 * n)(), (ctypes.c_uint32 * n)(), (ctypes.c_int8 * n)()
    base = ctypes.c_uint32(_PAR_AUTO)
    lib.fribidi_get_bidi_types(chars, n, types)
    lib.fribidi_get_bracket_types(chars, n, types, brackets)
    if lib.fribidi_get_par_embedding_levels_ex(types, brackets, n, ctypes.byref(base), out) <= 0:
        raise BidiUnavailableError("FriBiDi could not resolve the query's text direction")
    return base.value & 1, list(out)


def visual_order(run_levels: list[int]) -> list[int]:
    """Indices of runs with these levels in the order they are drawn, left to right (rule L2: from the highest
    level down to the lowest odd one, reverse every stretch of runs at that level or above)."""
    order = list(range(len(run_levels)))
    lowest_odd = min((level for level in run_levels if level % 2), default=max(run_levels) + 1)
    for level in range(max(run_levels), lowest_odd - 1, -1):
        i = 0
        while i < len(order):
            if run_levels[order[i]] < level:
                i += 1
                continue
            j = i
            while j < len(order) and run_levels[order[j]] >= level:
                j += 1
            order[i:j] = order[i:j][::-1]
            i = j
    return order
