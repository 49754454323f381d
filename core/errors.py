"""Every failure a user can cause or meet derives from `TokenDirectError`: the command line prints its message on
one line and exits with its `exit_code`. Anything else that escapes is a bug, and is reported as one."""

from __future__ import annotations

import re

EXIT_BUG = 3  # anything that is not a TokenDirectError: a bug
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), as shells report a process killed by it


class TokenDirectError(Exception):
    """An expected failure, with a one-line message that says what to do. `details` are extra fields for the
    JSON error document (`--json`), such as what a stopped run had already done."""

    exit_code = 2  # usage or configuration error (the command line's contract)
    details: dict | None = None


class UsageError(TokenDirectError, ValueError):
    """An argument or a combination of arguments that cannot work (an unknown mode, an empty query)."""


class ConfigError(TokenDirectError, ValueError):
    """A setting that cannot work."""


class ModelLoadError(TokenDirectError):
    """The configured checkpoint could not be loaded (missing, offline, or not a DeepSeek-OCR-2 model)."""


class InputError(TokenDirectError, ValueError):
    """A file that cannot be turned into pages; ingest fails that file alone, with this message as its reason."""


class StoreError(TokenDirectError):
    """The store cannot be used as asked (unreachable, locked, or built for another model)."""


class CollectionExists(StoreError):
    """A collection this process was about to create appeared meanwhile (another writer made it)."""


class ModelMismatchError(StoreError):
    """The collection was built with other weights than the configured model."""


class TransferError(StoreError):
    """An export file cannot be written or read, or a move could not be completed."""


class DiskSpaceError(StoreError):
    """Too little free space for what the embedded engine is about to write: stopped before it could crash."""


class PointNotFoundError(TokenDirectError, LookupError):
    """No page with that point id."""


class BusyError(TokenDirectError):
    """Another process holds what this one needs (a lock), and did not let go within the wait."""

    def __init__(self, message: str, holder=None):
        super().__init__(message)
        self.holder = holder


def exit_code_for(exc: BaseException | None) -> int:
    """The exit code the command line gives for a run that ended with `exc` (None: it ended normally, 0)."""
    if exc is None:
        return 0
    if isinstance(exc, TokenDirectError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return EXIT_BUG


def first_line(text: object, limit: int = 300) -> str:
    """The first line of a message (an exception's, a server's), for one-line errors."""
    if isinstance(text, BaseException):
        text = str(text).strip() or type(text).__name__
    lines = str(text or "").strip().splitlines()
    return lines[0][:limit] if lines else "no details"


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Characters that would break or reorder a line of text output: control characters, line and paragraph separators,
# and the bidirectional overrides and isolates.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """Text for one line of human-readable output: a newline, tab or other control character in a file name is
    written as an escape (`\\n`, `\\x07`, `\\u202e`), so one name never splits or reorders the output."""
    return _UNPRINTABLE.sub(lambda m: _ESCAPES.get(m.group()) or _escape(m.group()), text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
