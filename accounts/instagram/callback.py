"""What comes back through the browser: Instagram's redirect, or a URL staff pasted."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

# A code or state longer than this is not Instagram's (codes are a few hundred characters).
MAX_PARAM_CHARS = 2048


@dataclass(frozen=True)
class CallbackParams:
    """What Instagram's redirect carried: a code, or an error, and the state."""

    code: str | None
    state: str | None
    error: str | None
    error_description: str | None


def clean_code(code: str) -> str:
    """Strip what a pasted code carries that is not part of it: blanks and the `#_` suffix."""
    code = code.strip()
    code = code.split("#", 1)[0]
    return code.strip()


def _is_control(char: str) -> bool:
    # C0, DEL and C1 (U+0085 is a line break to str.splitlines and to many terminals).
    return ord(char) < 32 or 127 <= ord(char) < 160


def _bounded(value: str | None) -> str | None:
    if not value:
        return None
    # Control characters and oversize values are never Instagram's: drop them here, so a
    # tampered redirect is simply "no code" or "unknown state" further on.
    if len(value) > MAX_PARAM_CHARS or any(_is_control(c) for c in value):
        return None
    return value


def _printable(value: str | None, limit: int) -> str | None:
    """Instagram's words for a denial, shown and logged: control characters (NUL, newlines,
    escape sequences) left out (PostgreSQL refuses NUL, a log line must stay one line);
    at most `limit` characters."""
    text = "".join(c for c in (value or "") if c.isprintable())[:limit].strip()
    return text or None


def parse_callback(params: Mapping[str, str]) -> CallbackParams:
    """Read the redirect's query parameters (code or error, and state). Never raises."""
    code = _bounded(params.get("code"))
    state = _bounded((params.get("state") or "").split("#", 1)[0])
    description = params.get("error_description") or params.get("error_reason") or None
    return CallbackParams(
        code=clean_code(code) or None if code else None,
        state=state,
        error=_printable(params.get("error"), 200),
        error_description=_printable(description, 500),
    )


def parse_pasted(text: str) -> CallbackParams:
    """Read what staff pasted: the whole redirected URL (with or without `#_`) or a bare
    code. Never raises."""
    text = text.strip()
    if "?" in text or text.startswith(("http://", "https://")):
        try:
            query = urlsplit(text).query
        except ValueError:  # e.g. an unbalanced "[" in the host part
            query = ""
        params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        return parse_callback(params)
    return CallbackParams(code=_bounded(clean_code(text)), state=None, error=None,
                          error_description=None)
