"""Every failure a user can cause or meet derives from `TokenDirectError`: the command line prints its message on
one line and exits with its `exit_code`. Anything else that escapes is a bug, and is reported as one."""

from __future__ import annotations


class TokenDirectError(Exception):
    """An expected failure, with a one-line message that says what to do."""

    exit_code = 2  # usage or configuration error (the command line's contract)


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


class PointNotFoundError(TokenDirectError, LookupError):
    """No page with that point id."""


class BusyError(TokenDirectError):
    """Another process holds what this one needs (a lock), and did not let go within the wait."""

    def __init__(self, message: str, holder=None):
        super().__init__(message)
        self.holder = holder


def first_line(text: object, limit: int = 300) -> str:
    """The first line of a message (an exception's, a server's), for one-line errors."""
    if isinstance(text, BaseException):
        text = str(text).strip() or type(text).__name__
    lines = str(text or "").strip().splitlines()
    return lines[0][:limit] if lines else "no details"
