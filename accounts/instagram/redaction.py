"""Secrets in text: masked in messages and in every log line that passes the filter."""

from __future__ import annotations

import logging
import re

# `link`: the secret of an owner authorization link (/owner/authorize/?link=...).
_SECRET_PARAMS = re.compile(
    r"(?P<key>\b(?:access_token|client_secret|code|signed_request|state|link)=)"
    r"(?P<value>[^&\s\"'#]+)",
    re.IGNORECASE,
)


def redact_secrets(text: str) -> str:
    """Return `text` with the value of every secret-bearing URL/form parameter masked."""
    return _SECRET_PARAMS.sub(lambda m: f"{m['key']}[redacted]", text)


def mask(secret: str | None) -> str:
    """Return a display form of a secret that shows only its last 4 characters."""
    if not secret:
        return ""
    return "…" + secret[-4:] if len(secret) > 8 else "…"


class RedactSecretsFilter(logging.Filter):
    """Rewrite a log record's message, and the traceback it carries, so no secret
    parameter survives formatting (an exception's text may quote a URL with a token)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and not record.exc_text:
            # Formatted once here and cleaned: logging's formatters print a record's
            # exc_text when it has one instead of formatting exc_info again.
            record.exc_text = redact_secrets(_TRACEBACKS.formatException(record.exc_info))
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the caller's bug, not ours to hide
            return True
        cleaned = redact_secrets(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_TRACEBACKS = logging.Formatter()


# urllib3 logs "GET /refresh_access_token?...&access_token=... HTTP/1.1" at DEBUG, whatever
# handlers the host application configured.
logging.getLogger("urllib3.connectionpool").addFilter(RedactSecretsFilter())
