"""Time as people and commands give it and as the registry prints it: always UTC.

A time given without a zone (a form field, `--expires-at 2026-12-09T10:00:00`) is read as
UTC, never in the server's TIME_ZONE; every time printed with "UTC" is converted to UTC
first, whatever zone the value carried.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.utils.dateparse import parse_datetime


def as_utc(value: datetime) -> datetime:
    """`value` in UTC; a naive value is taken to be UTC already."""
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_utc(text: str) -> datetime | None:
    """An ISO 8601 date and time, read as UTC when it has no offset; None when `text` is
    not one (or names an impossible date)."""
    try:
        value = parse_datetime(text.strip())
    except ValueError:
        return None
    return as_utc(value) if value is not None else None


def utc_text(value: datetime) -> str:
    """`2027-01-20 10:00 UTC`: minutes, in UTC, labelled."""
    return f"{as_utc(value):%Y-%m-%d %H:%M} UTC"
