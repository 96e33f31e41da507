"""Instagram's refusals as typed exceptions: everything above the client speaks in these.

Messages are safe to show and log: they never hold a token, code or secret.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .redaction import redact_secrets
from .usage import Usage, as_int

# Graph error codes (shared/instagram-api.md, section 6).
REAUTH_CODES = frozenset({190, 10}) | frozenset(range(200, 300))
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 80002})
TRANSIENT_CODES = frozenset({1, 2})
# Graph error codes and subcodes are 32-bit; anything else is not a code (and an int of over
# 4,300 digits could not even be printed in the message).
MAX_CODE = 2**31 - 1
MESSAGE_CHARS = 300


class InstagramError(Exception):
    """Instagram refused the request or answered something unusable. `ours` is True on
    the subclasses the registry raises for its own failures on the same path (a stored
    token no key decrypts): they are worded "the registry failed", not as a refusal."""

    ours = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        subcode: int | None = None,
        usage: Usage | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.subcode = subcode
        self.usage = usage

    def __str__(self) -> str:
        parts = [self.message]
        if self.code is not None:
            parts.append(f"(code {self.code}" + (f"/{self.subcode})" if self.subcode else ")"))
        if self.status is not None:
            parts.append(f"[HTTP {self.status}]")
        return " ".join(parts)


class TokenInvalid(InstagramError):
    """The token is expired, revoked or lacks permissions: the owner must authorize again."""


class RateLimited(InstagramError):
    """Instagram throttled us; `retry_after` (seconds) when it said how long."""

    @property
    def retry_after(self) -> int | None:
        return self.usage.regain_seconds if self.usage else None


class Transient(InstagramError):
    """A temporary failure (network, timeout, deadline, 5xx): worth retrying."""


class Unreachable(Transient):
    """No answer came: the connection failed, timed out or outlasted the deadline. Said to
    staff as "could not reach Instagram", not as a refusal."""


class MalformedAnswer(Transient):
    """Instagram answered something that breaks the rules of its own answers (a token with
    a newline, a username Instagram would never issue, a body nested 10,000 deep, ...).
    Nothing of it is used. Retried with back-off like any temporary failure, and recorded."""


def error_from(
    status: int, body: Any, usage: Usage | None, endpoint: str, secrets: Iterable[str]
) -> InstagramError:
    """The exception for a non-success answer (`body`: parsed JSON or None)."""

    def text(value: Any) -> str | None:
        # Only text is Instagram's message: str() of anything else can raise (RecursionError
        # on deep nesting, ValueError on an int of over 4,300 digits) or say nothing useful.
        return value if isinstance(value, str) and value else None

    def clean(message: str) -> str:
        # Mask before cutting: a cut could leave part of a secret unrecognisable. Control
        # characters go too: this text reaches terminals and e-mails.
        text = redact_secrets(message)
        for secret in secrets:
            if secret and len(secret) >= 6:
                text = text.replace(secret, "[redacted]")
        text = "".join(c if c.isprintable() else " " for c in text)
        return text[:MESSAGE_CHARS]

    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = as_int(err.get("code"), low=0, high=MAX_CODE)
        subcode = as_int(err.get("error_subcode"), low=0, high=MAX_CODE)
        message = clean(text(err.get("message")) or "Instagram returned an error.")
        kwargs = {"status": status, "code": code, "subcode": subcode, "usage": usage}
        if code in REAUTH_CODES:
            return TokenInvalid(message, **kwargs)
        if code in RATE_LIMIT_CODES or status == 429:
            return RateLimited(message, **kwargs)
        if code in TRANSIENT_CODES or status >= 500:
            return Transient(message, **kwargs)
        return InstagramError(message, **kwargs)
    if isinstance(body, dict) and ("error_message" in body or "error_type" in body):
        # The api host's flat shape (code exchange).
        message = clean(text(body.get("error_message")) or text(body.get("error_type"))
                        or "error")
        code = as_int(body.get("code"), low=0, high=MAX_CODE)
        if status == 429:
            return RateLimited(message, status=status, code=code, usage=usage)
        if status >= 500:
            return Transient(message, status=status, code=code, usage=usage)
        return InstagramError(message, status=status, code=code, usage=usage)
    if status == 429:
        return RateLimited(f"Instagram rate-limited {endpoint}.", status=status, usage=usage)
    if status >= 500:
        return Transient(f"no usable answer from {endpoint}", status=status, usage=usage)
    if 200 <= status < 300:
        return MalformedAnswer(f"Instagram's answer to {endpoint} was unreadable.",
                               status=status, usage=usage)
    return InstagramError(f"Instagram refused {endpoint}.", status=status, usage=usage)
