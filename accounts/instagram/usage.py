"""Reading what Instagram sends before anything is trusted: JSON of bounded size and depth,
integers that are really integers, and the usage headers.

Observed: a body or usage header nested thousands deep makes `json.loads` raise
RecursionError; these readers answer None instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Instagram's token and profile answers are a few hundred bytes; usage headers smaller.
MAX_BODY_BYTES = 64 * 1024
MAX_HEADER_CHARS = 4096
MAX_JSON_DEPTH = 20
# Percentages are 0-100 (more when over quota); minutes to regain access a day at most.
MAX_PERCENT = 10_000
MAX_REGAIN_MINUTES = 24 * 60


def json_depth_ok(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `text`'s brackets nest at most `limit` deep (strings are skipped)."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return False
        elif char in "]}":
            depth -= 1
    return True


def loads_bounded(text: str | None, *, max_chars: int = MAX_BODY_BYTES) -> Any:
    """Parse JSON of bounded size and depth; None when absent, too big, too deep or
    not JSON. Never raises."""
    if not text or len(text) > max_chars or not json_depth_ok(text):
        return None
    try:
        # An integer too long for int() (over 4,300 digits) stays text: the rules refuse
        # it where it stands, rather than the whole answer being unreadable.
        return json.loads(text, parse_int=lambda digits: int(digits) if len(digits) <= 64
                          else digits)
    except (ValueError, RecursionError):
        return None


def as_int(value: Any, *, low: int | None = None, high: int | None = None) -> int | None:
    """`value` as an int when it is one (an int, or a string of ASCII digits, optionally
    signed) and inside [low, high]; else None. Never a bool or a float."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = int(value)  # a plain int, whatever subclass came in
    elif isinstance(value, str) and 0 < len(value) <= 20:
        text = value.strip()
        digits = text[1:] if text[:1] in "+-" else text
        if not (digits.isascii() and digits.isdigit()):
            return None
        number = int(text)
    else:
        return None
    if (low is not None and number < low) or (high is not None and number > high):
        return None
    return number


def _percent(value: Any) -> int:
    return min(as_int(value, low=0) or 0, MAX_PERCENT)


@dataclass(frozen=True)
class Usage:
    """What Instagram's usage headers said: the highest percentage of any quota used, and
    how long until access is regained when throttled (seconds)."""

    percent: int = 0
    regain_seconds: int | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Usage | None:
        """Parse X-App-Usage and X-Business-Use-Case-Usage (shared/instagram-api.md, 6);
        None when neither is there or readable. Never raises."""
        values: list[int] = []
        regain: list[int] = []
        app = loads_bounded(headers.get("X-App-Usage"), max_chars=MAX_HEADER_CHARS)
        if isinstance(app, dict):
            values += [_percent(app.get(k)) for k in ("call_count", "total_cputime", "total_time")]
        business = loads_bounded(headers.get("X-Business-Use-Case-Usage"),
                                 max_chars=MAX_HEADER_CHARS)
        if isinstance(business, dict):
            for entries in business.values():
                for entry in entries if isinstance(entries, list) else []:
                    if not isinstance(entry, dict):
                        continue
                    values += [_percent(entry.get(k))
                               for k in ("call_count", "total_cputime", "total_time")]
                    minutes = as_int(entry.get("estimated_time_to_regain_access"), low=0)
                    if minutes:
                        regain.append(min(minutes, MAX_REGAIN_MINUTES) * 60)
        if not isinstance(app, dict) and not isinstance(business, dict):
            return None
        return cls(percent=max(values, default=0), regain_seconds=max(regain, default=None))
