"""What commands print reaches an operator's terminal: no control characters from data."""

from __future__ import annotations


def terminal_safe(text: object) -> str:
    """`text` with every non-printable character (escape sequences, newlines, NUL, ...)
    shown as its Python escape, e.g. "\\x1b", so data can never drive the terminal."""
    value = str(text)
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)
