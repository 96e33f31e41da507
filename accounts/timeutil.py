"""Time as people and commands give it and as the registry prints it.

A time given without a zone (a form field, `--expires-at 2026-12-09T10:00:00`) is read as
UTC, never in the server's TIME_ZONE; every time printed with "UTC" is converted to UTC
first, whatever zone the value carried. Pages show times with `local_text` (the
configured TIME_ZONE, labelled) and deadlines with `days_text` ("58 days left").
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.utils import timezone
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


# --- the one way pages show a time ------------------------------------------------------

_MINUTE, _HOUR, _DAY = 60, 3600, 86400


def local_text(value: datetime | None) -> str:
    """`2027-01-27 20:25 UTC`: the minute in the current time zone (settings.TIME_ZONE
    unless a request activated another), labelled with that zone's abbreviation (`CET`,
    `PDT`; a zone without one, its offset such as `-03`). '' for None.

    Every admin page, the dashboard and the event list show times this way (Django's own
    columns too: igregistry/formats). Machine output (JSON, token_status, the API) stays
    ISO 8601 UTC; stored messages and logs use `utc_text`."""
    if value is None:
        return ""
    local = timezone.localtime(as_utc(value))
    return f"{local:%Y-%m-%d %H:%M} {local.tzname() or local.strftime('%z')}"


def plural(count: int, noun: str) -> str:
    """`1 account`, `0 accounts`, `2 accounts`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def days_text(value: datetime, *, now: datetime) -> str:
    """How far a deadline is from `now`, as staff count it: whole days, rounded down
    (`1 day left` until a full two days are left), hours within the last day, the same
    words for the past (`2 days ago`). Within a minute either way: `now`."""
    seconds = (as_utc(value) - as_utc(now)).total_seconds()
    if abs(seconds) < _MINUTE:
        return "now"
    amount = abs(seconds)
    if amount >= _DAY:
        span = plural(int(amount // _DAY), "day")
    elif amount >= _HOUR:
        span = plural(int(amount // _HOUR), "hour")
    else:
        span = "under an hour"
    return f"{span} left" if seconds > 0 else f"{span} ago"


def deadline_text(value: datetime | None, *, now: datetime) -> str:
    """`2027-01-27 20:25 UTC (58 days left)`: `local_text` and `days_text` together, for
    a time that is a deadline (an expiry, the next refresh). '' for None."""
    if value is None:
        return ""
    return f"{local_text(value)} ({days_text(value, now=now)})"
