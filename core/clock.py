"""Timestamps as the store and the run log record them."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> str:
    """Now, in UTC, to the second (ISO 8601): what payloads, records and the run log hold."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
