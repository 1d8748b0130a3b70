"""Small helpers the pages share: reading a read model that may be away, and formatting."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TypeVar

from fastapi import HTTPException

T = TypeVar("T")


def optional(read: Callable[[], T]) -> tuple[T | None, str | None]:
    """A read model's answer, or the reason it has none (a page still shows its other parts
    when, say, the audit service does not answer)."""
    try:
        return read(), None
    except HTTPException as exc:
        if exc.status_code in (400, 404, 503):
            return None, str(exc.detail)
        raise


def parse_time(value: str | float | dt.datetime | None) -> dt.datetime | None:
    """A read model's time: ISO 8601 text, a datetime or epoch seconds; None if none of these."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, dt.datetime):
            when = value
        elif isinstance(value, int | float):
            when = dt.datetime.fromtimestamp(value, dt.UTC)
        else:
            when = dt.datetime.fromisoformat(value)
    except (ValueError, TypeError, OverflowError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def duration(start: str | float | dt.datetime | None, end: str | float | dt.datetime | None) -> str:
    """ "1h 02m", "3m 07s", "12s" from start to end (or to now while it runs)."""
    begun = parse_time(start)
    if begun is None:
        return ""
    seconds = int(((parse_time(end) or dt.datetime.now(dt.UTC)) - begun).total_seconds())
    seconds = max(seconds, 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def short_time(value: str | float | dt.datetime | None) -> str:
    when = parse_time(value)
    if when is None:
        return "" if value is None else str(value)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
