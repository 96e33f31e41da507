"""The one module that speaks HTTP to Instagram.

It builds Instagram's URLs, sends the requests (one `requests.Session`, explicit timeouts)
and turns Instagram's error payloads into typed exceptions. It imports nothing from
Django, so everything above it deals in `ShortLivedToken`, `LongLivedToken`, `Profile`
and the exceptions below, never in HTTP.

Secrets (app secret, access tokens, authorization codes) never appear in an exception
message, a repr, or a URL that gets logged: urllib3 logs request URLs at DEBUG level, so
this module masks them there too.

Endpoint facts: shared/instagram-api.md.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

logger = logging.getLogger(__name__)


class Flavour(StrEnum):
    """The two Instagram API flavours; the token lifecycle is the same for both."""

    BASIC_DISPLAY = "basic_display"
    INSTAGRAM_LOGIN = "instagram_login"


DEFAULT_SCOPES: dict[Flavour, tuple[str, ...]] = {
    Flavour.BASIC_DISPLAY: ("user_profile", "user_media"),
    Flavour.INSTAGRAM_LOGIN: ("instagram_business_basic",),
}
ALLOWED_SCOPES: dict[Flavour, frozenset[str]] = {
    Flavour.BASIC_DISPLAY: frozenset({"user_profile", "user_media"}),
    Flavour.INSTAGRAM_LOGIN: frozenset(
        {
            "instagram_business_basic",
            "instagram_business_manage_messages",
            "instagram_business_manage_comments",
            "instagram_business_content_publish",
        }
    ),
}
# Graph error codes (shared/instagram-api.md, section 6).
_REAUTH_CODES = frozenset({190, 10}) | frozenset(range(200, 300))
_RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 80002})
_TRANSIENT_CODES = frozenset({1, 2})

# --- secrets in text ----------------------------------------------------------------

_SECRET_PARAMS = re.compile(
    r"(?P<key>\b(?:access_token|client_secret|code|signed_request|state)=)(?P<value>[^&\s\"'#]+)",
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
    """Rewrite a log record's message so no secret parameter survives formatting."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the caller's bug, not ours to hide
            return True
        cleaned = redact_secrets(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


# urllib3 logs "GET /refresh_access_token?...&access_token=... HTTP/1.1" at DEBUG, whatever
# handlers the host application configured.
logging.getLogger("urllib3.connectionpool").addFilter(RedactSecretsFilter())


# --- errors -------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """What Instagram's usage headers said: the highest percentage of any quota used,
    and how long until access is regained when throttled."""

    percent: int = 0
    regain_seconds: int | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Usage | None:
        """Parse X-App-Usage and X-Business-Use-Case-Usage; None when neither is there."""
        values: list[int] = []
        regain: list[int] = []
        app = _loads_or_none(headers.get("X-App-Usage"))
        if isinstance(app, dict):
            values += [_int(app.get(k)) for k in ("call_count", "total_cputime", "total_time")]
        business = _loads_or_none(headers.get("X-Business-Use-Case-Usage"))
        if isinstance(business, dict):
            for entries in business.values():
                for entry in entries if isinstance(entries, list) else []:
                    if not isinstance(entry, dict):
                        continue
                    values += [
                        _int(entry.get(k)) for k in ("call_count", "total_cputime", "total_time")
                    ]
                    if entry.get("estimated_time_to_regain_access"):
                        regain.append(_int(entry["estimated_time_to_regain_access"]) * 60)
        if app is None and business is None:
            return None
        return cls(percent=max(values, default=0), regain_seconds=max(regain, default=None))


class InstagramError(Exception):
    """Instagram refused the request or answered something unusable.

    The message is safe to show and log: it never holds a token, code or secret.
    """

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
    """A temporary failure (network, timeout, 5xx, unreadable body): worth retrying."""


# --- results ------------------------------------------------------------------------


@dataclass(frozen=True)
class ShortLivedToken:
    """The result of exchanging an authorization code (lives 1 hour)."""

    access_token: str = field(repr=False)
    user_id: str
    permissions: tuple[str, ...] = ()


@dataclass(frozen=True)
class LongLivedToken:
    """A long-lived token (about 60 days) from the swap or a refresh."""

    access_token: str = field(repr=False)
    expires_in: int
    usage: Usage | None = None


@dataclass(frozen=True)
class Profile:
    """The account behind a token, from /me. `id` is the id the registry keys on."""

    id: str
    username: str
    user_id: str | None = None
    account_type: str | None = None
    usage: Usage | None = None


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


def parse_callback(params: Mapping[str, str]) -> CallbackParams:
    """Read the redirect's query parameters (code or error, and state)."""
    code = params.get("code")
    return CallbackParams(
        code=clean_code(code) if code else None,
        state=(params.get("state") or "").split("#", 1)[0] or None,
        error=params.get("error") or None,
        error_description=params.get("error_description") or params.get("error_reason") or None,
    )


def parse_pasted(text: str) -> CallbackParams:
    """Read what staff pasted: the whole redirected URL (with or without `#_`) or a bare code."""
    text = text.strip()
    if "?" in text or text.startswith(("http://", "https://")):
        query = urlsplit(text).query
        params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        return parse_callback(params)
    return CallbackParams(code=clean_code(text) or None, state=None, error=None,
                          error_description=None)


# --- the client ---------------------------------------------------------------------


class InstagramClient:
    """Talks to Instagram's three hosts. Thread-safe enough for one worker process:
    requests' Session is shared, each call is independent."""

    def __init__(
        self,
        *,
        api_url: str = "https://api.instagram.com",
        www_url: str = "https://www.instagram.com",
        graph_url: str = "https://graph.instagram.com",
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        session: requests.Session | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.www_url = www_url.rstrip("/")
        self.graph_url = graph_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.session = session or requests.Session()
        self.session.headers.setdefault("User-Agent", "igregistry/1")

    # 1. Authorize
    def authorize_url(
        self,
        *,
        flavour: Flavour,
        client_id: str,
        redirect_uri: str,
        scopes: Iterable[str],
        state: str,
        force_authentication: bool = False,
    ) -> str:
        """The URL to send the account owner's browser to."""
        params = {
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": ",".join(scopes),
            "response_type": "code",
            "state": state,
        }
        if flavour == Flavour.INSTAGRAM_LOGIN:
            base = self.www_url
            params["enable_fb_login"] = "0"
            params["force_authentication"] = "1" if force_authentication else "0"
        else:
            base = self.api_url
        return f"{base}/oauth/authorize?{urlencode(params)}"

    # 2. Code -> short-lived token
    def exchange_code(
        self, *, client_id: str, client_secret: str, redirect_uri: str, code: str
    ) -> ShortLivedToken:
        """Exchange an authorization code for a short-lived token (any of the three shapes)."""
        data = {
            "client_id": client_id,
            "client_secret": client_secret,
            "grant_type": "authorization_code",
            "redirect_uri": redirect_uri,
            "code": clean_code(code),
        }
        body, _ = self._request(
            "POST", f"{self.api_url}/oauth/access_token", data=data,
            secrets=(client_secret, data["code"]),
        )
        entry = body
        if isinstance(body.get("data"), list) and body["data"]:
            entry = body["data"][0]
        token = entry.get("access_token") if isinstance(entry, dict) else None
        user_id = entry.get("user_id") if isinstance(entry, dict) else None
        if not isinstance(token, str) or not token or user_id in (None, ""):
            raise InstagramError("Instagram's code exchange answer had no token or user id.")
        permissions = entry.get("permissions") or ()
        if isinstance(permissions, str):
            permissions = [p for p in re.split(r"[,\s]+", permissions) if p]
        return ShortLivedToken(
            access_token=token,
            user_id=_id_str(user_id),
            permissions=tuple(str(p) for p in permissions),
        )

    # 3. Short-lived -> long-lived
    def exchange_for_long_lived(self, *, client_secret: str, access_token: str) -> LongLivedToken:
        """Swap an unexpired short-lived token for a long-lived one (about 60 days)."""
        params = {
            "grant_type": "ig_exchange_token",
            "client_secret": client_secret,
            "access_token": access_token,
        }
        body, usage = self._request(
            "GET", f"{self.graph_url}/access_token", params=params,
            secrets=(client_secret, access_token),
        )
        return _long_lived(body, usage)

    # 4. Refresh
    def refresh(self, *, access_token: str) -> LongLivedToken:
        """Refresh a long-lived token that is at least 24 hours old and unexpired.

        The answer may carry the same string or a new one: store what comes back.
        """
        params = {"grant_type": "ig_refresh_token", "access_token": access_token}
        body, usage = self._request(
            "GET", f"{self.graph_url}/refresh_access_token", params=params,
            secrets=(access_token,),
        )
        return _long_lived(body, usage)

    # 5. Profile
    def me(
        self,
        *,
        access_token: str,
        fields: Iterable[str] = ("id", "username"),
        api_version: str | None = None,
    ) -> Profile:
        """The account behind a token; accepts the flat and the `data` envelope shapes."""
        path = f"/{api_version}/me" if api_version else "/me"
        params = {"fields": ",".join(fields), "access_token": access_token}
        body, usage = self._request(
            "GET", f"{self.graph_url}{path}", params=params, secrets=(access_token,)
        )
        entry = body
        if isinstance(body.get("data"), list):
            entry = body["data"][0] if body["data"] and isinstance(body["data"][0], dict) else {}
        ident = entry.get("id", entry.get("user_id"))
        username = entry.get("username")
        if ident in (None, "") or not isinstance(username, str) or not username:
            raise InstagramError("Instagram's profile answer had no id or username.")
        user_id = entry.get("user_id")
        return Profile(
            id=_id_str(ident),
            username=username,
            user_id=_id_str(user_id) if user_id not in (None, "") else None,
            account_type=entry.get("account_type"),
            usage=usage,
        )

    # --- plumbing ---
    def _request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
    ) -> tuple[dict[str, Any], Usage | None]:
        endpoint = urlsplit(url).path
        failure: Transient | None = None
        try:
            response = self.session.request(
                method, url, params=params, data=data, timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.Timeout:
            failure = Transient(f"Instagram did not answer {endpoint} in time.")
        except requests.RequestException as exc:
            failure = Transient(f"Could not reach Instagram for {endpoint} ({type(exc).__name__}).")
        if failure is not None:
            # Raised outside the except block so that neither __cause__ nor __context__
            # keeps requests' exception: its text holds the full URL, token included.
            raise failure
        usage = Usage.from_headers(response.headers)
        body = _loads_or_none(response.text)
        status = response.status_code
        if 200 <= status < 300 and isinstance(body, dict) and "error" not in body:
            return body, usage
        raise _error_from(status, body, usage, endpoint, secrets)


def _error_from(
    status: int, body: Any, usage: Usage | None, endpoint: str, secrets: Iterable[str]
) -> InstagramError:
    def clean(message: Any) -> str:
        # Mask before cutting: a cut could leave part of a secret unrecognisable.
        text = redact_secrets(str(message))
        for secret in secrets:
            if secret and len(secret) >= 6:
                text = text.replace(secret, "[redacted]")
        return text[:300]

    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code, subcode = _int_or_none(err.get("code")), _int_or_none(err.get("error_subcode"))
        message = clean(err.get("message") or "Instagram returned an error.")
        kwargs = {"status": status, "code": code, "subcode": subcode, "usage": usage}
        if code in _REAUTH_CODES:
            return TokenInvalid(message, **kwargs)
        if code in _RATE_LIMIT_CODES or status == 429:
            return RateLimited(message, **kwargs)
        if code in _TRANSIENT_CODES or status >= 500:
            return Transient(message, **kwargs)
        return InstagramError(message, **kwargs)
    if isinstance(body, dict) and ("error_message" in body or "error_type" in body):
        # The api host's flat shape (code exchange).
        message = clean(body.get("error_message") or body.get("error_type") or "error")
        code = _int_or_none(body.get("code"))
        if status == 429:
            return RateLimited(message, status=status, code=code, usage=usage)
        if status >= 500:
            return Transient(message, status=status, code=code, usage=usage)
        return InstagramError(message, status=status, code=code, usage=usage)
    if status == 429:
        return RateLimited(f"Instagram rate-limited {endpoint}.", status=status, usage=usage)
    if status >= 500:
        return Transient(f"Instagram failed on {endpoint}.", status=status, usage=usage)
    if 200 <= status < 300:
        return Transient(f"Instagram's answer to {endpoint} was unreadable.", status=status)
    return InstagramError(f"Instagram refused {endpoint}.", status=status, usage=usage)


def _long_lived(body: dict[str, Any], usage: Usage | None) -> LongLivedToken:
    token, expires_in = body.get("access_token"), _int_or_none(body.get("expires_in"))
    if not isinstance(token, str) or not token or not expires_in or expires_in <= 0:
        raise Transient("Instagram's token answer had no token or expiry.")
    return LongLivedToken(access_token=token, expires_in=expires_in, usage=usage)


def _id_str(value: Any) -> str:
    # JSON numbers above 2**53 arrive as Python ints (exact); a float would have lost digits.
    if isinstance(value, bool | float):
        raise InstagramError("Instagram sent a user id that is not an exact integer.")
    text = str(value).strip()
    if not text.isdigit():
        raise InstagramError("Instagram sent a user id that is not numeric.")
    return text


def _loads_or_none(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _int(value: Any) -> int:
    return _int_or_none(value) or 0


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
