"""In-memory state and endpoint logic of the fake Instagram.

Everything here is guarded by ``FakeState.lock``; the HTTP layer (``server.py``) only
parses requests and writes the ``Reply`` objects produced here. The behaviour follows
``/work/shared/instagram-api.md`` (sections 1 to 6).
"""

from __future__ import annotations

import json
import random
import re
import secrets
import string
import threading
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

CODE_LIFETIME = timedelta(hours=1)
SHORT_LIFETIME = timedelta(hours=1)
LONG_LIFETIME = timedelta(days=60)
REFRESH_MIN_AGE = timedelta(hours=24)

FLAVOURS = ("basic_display", "instagram_login")
BASIC_DISPLAY_SCOPES = frozenset({"user_profile", "user_media"})
INSTAGRAM_LOGIN_SCOPES = frozenset(
    {
        "instagram_business_basic",
        "instagram_business_manage_messages",
        "instagram_business_manage_comments",
        "instagram_business_content_publish",
        "instagram_business_manage_insights",
    }
)
EXCHANGE_SHAPES = ("flat", "permissions", "data")
ME_SHAPES = ("flat", "data")
ME_FIELDS = (
    "id",
    "username",
    "account_type",
    "media_count",
    "user_id",
    "name",
    "profile_picture_url",
    "followers_count",
)
# Basic Display's user node had only these (section 5's table: the others, `user_id`
# among them, are the Instagram Login flavour's).
BASIC_DISPLAY_ME_FIELDS = ("id", "username", "account_type", "media_count")
TOKEN_KINDS = ("short", "long")

# Flat-shape error messages of the code exchange (section 2).
CODE_USED = "This authorization code has been used"
CODE_NOT_FOUND = "Matching code was not found or was already used"
REDIRECT_MISMATCH = (
    "Error validating verification code. Please make sure your redirect_uri is "
    "identical to the one you used in the OAuth dialog request."
)
INVALID_APP = "Invalid platform app"
INVALID_SECRET = "Invalid Client Secret"

# Graph error messages (section 6).
CANNOT_PARSE = "Invalid OAuth access token - Cannot parse access token"
TOO_YOUNG = "Cannot refresh a token less than 24 hours old"
REVOKED_MESSAGES: dict[int | None, str] = {
    None: "Error validating access token: The session is invalid.",
    458: "Error validating access token: The user has not authorized application.",
    460: (
        "Error validating access token: The session has been invalidated because the "
        "user changed their password or Facebook has changed the session for security reasons."
    ),
    467: "Error validating access token: The user is not logged in.",
}

_ALNUM = string.ascii_letters + string.digits
_VERSION_PREFIX = re.compile(r"^/v\d+\.\d+(?=/)")


def normalize_path(path: str) -> str:
    """Strip a Graph version prefix: ``/v21.0/me`` -> ``/me``."""
    return _VERSION_PREFIX.sub("", path, count=1) or "/"


def random_id() -> str:
    """A random 17-digit id, always greater than 2**53."""
    return str(10**16 + secrets.randbelow(9 * 10**16))


def fbtrace_id() -> str:
    """A random Graph ``fbtrace_id``."""
    return "".join(secrets.choice(_ALNUM) for _ in range(11))


def split_scopes(raw: str) -> list[str]:
    """Split a comma- or space-separated scope string, keeping order, dropping empties."""
    return [s for s in re.split(r"[\s,]+", raw or "") if s]


@dataclass
class Reply:
    """One HTTP answer: status, body, content type and extra headers."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    # The token a refresh issued in this answer (for the refresh ledger), else None.
    issued: str | None = None


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    """A JSON reply (Python ints are serialised exactly, never as floats)."""
    return Reply(status, json.dumps(payload).encode(), "application/json", dict(headers or {}))


def graph_error_reply(
    code: int,
    message: str,
    subcode: int | None = None,
    http_status: int = 400,
    type: str = "OAuthException",
    headers: dict[str, str] | None = None,
) -> Reply:
    """A Graph error object (section 6) with a fresh fbtrace_id."""
    error: dict[str, Any] = {"message": message, "type": type, "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    error["fbtrace_id"] = fbtrace_id()
    return json_reply(http_status, {"error": error}, headers)


def flat_error_reply(message: str, http_status: int = 400) -> Reply:
    """The flat error shape of the code exchange (section 2)."""
    return json_reply(
        http_status, {"error_type": "OAuthException", "code": 400, "error_message": message}
    )


# --------------------------------------------------------------------------- faults

_DEFAULT_GRAPH_MESSAGES = {
    1: "An unknown error occurred",
    2: "An unexpected error has occurred. Please retry your request later.",
    4: "Application request limit reached",
    10: "Application does not have permission for this action",
    17: "User request limit reached",
    32: "Page request limit reached",
    100: "Invalid parameter",
    190: "Invalid OAuth access token.",
    613: "Calls to this api have exceeded the rate limit.",
    80002: "There have been too many calls to this Instagram account. Wait a bit and try again.",
}


@dataclass(frozen=True)
class Fault:
    """A queued misbehaviour; build it with the module-level constructors."""

    kind: str
    http_status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    error: tuple[tuple[str, Any], ...] = ()
    how: str = ""  # mangled: what is done to the answer
    chunks: int = 0  # trickle: pieces the body is sent in

    def reply(self) -> Reply:
        """The HTTP answer of a status, graph_error, rate_limited or garbage fault."""
        headers = dict(self.headers)
        if self.error:
            err = dict(self.error)
            return graph_error_reply(
                err["code"],
                err["message"],
                err.get("subcode"),
                self.http_status,
                err["type"],
                headers,
            )
        return Reply(self.http_status, self.body, self.content_type, headers)


def status(
    http_status: int, body: str | None = None, content_type: str = "text/html; charset=utf-8"
) -> Fault:
    """Answer ``http_status`` with ``body`` (default: a small HTML page; pass "" for empty)."""
    if body is None:
        try:
            phrase = HTTPStatus(http_status).phrase
        except ValueError:
            phrase = "Error"
        body = f"<html><body><h1>{http_status} {phrase}</h1></body></html>"
    return Fault("status", http_status, body.encode(), content_type)


def graph_error(
    code: int,
    subcode: int | None = None,
    http_status: int = 400,
    type: str = "OAuthException",
    message: str | None = None,
) -> Fault:
    """Answer a Graph error object (section 6); each answer gets a random fbtrace_id."""
    if message is None and code == 190:
        message = (
            "Error validating access token: Session has expired."
            if subcode == 463
            else REVOKED_MESSAGES.get(subcode, REVOKED_MESSAGES[None])
        )
    if message is None:
        message = _DEFAULT_GRAPH_MESSAGES.get(code, f"(#{code}) Fake Graph error")
    error = (("code", code), ("subcode", subcode), ("type", type), ("message", message))
    return Fault("graph_error", http_status, error=error)


def rate_limited(
    http_status: int = 429, code: int = 4, usage: dict[str, Any] | None = None
) -> Fault:
    """Answer Graph error ``code`` plus ``X-App-Usage`` and ``X-Business-Use-Case-Usage``.

    ``usage`` overrides the defaults ``call_count=100, total_cputime=25, total_time=25,
    estimated_time_to_regain_access=5`` (minutes) and ``type="instagram"``.
    """
    values: dict[str, Any] = {
        "type": "instagram",
        "call_count": 100,
        "total_cputime": 25,
        "total_time": 25,
        "estimated_time_to_regain_access": 5,
    }
    values.update(usage or {})
    app_usage = {k: values[k] for k in ("call_count", "total_cputime", "total_time")}
    headers = (
        ("X-App-Usage", json.dumps(app_usage)),
        ("X-Business-Use-Case-Usage", json.dumps({"17841400000000001": [values]})),
    )
    message = _DEFAULT_GRAPH_MESSAGES.get(code, "Rate limit reached")
    error = (("code", code), ("subcode", None), ("type", "OAuthException"), ("message", message))
    return Fault("rate_limited", http_status, headers=headers, error=error)


def delay(seconds: float) -> Fault:
    """Sleep ``seconds`` then answer normally (the request is still processed)."""
    return Fault("delay", seconds=float(seconds))


def garbage(http_status: int = 200, *, truncated: bool = False) -> Fault:
    """Answer a non-JSON body: ``<html>oops</html>``, or truncated JSON if ``truncated``."""
    if truncated:
        return Fault("garbage", http_status, b'{"access_token": "IGAAtrunc', "application/json")
    return Fault("garbage", http_status, b"<html>oops</html>", "text/html; charset=utf-8")


def disconnect() -> Fault:
    """Close the socket without sending any response."""
    return Fault("disconnect")


def trickle(seconds: float, chunks: int = 10) -> Fault:
    """Process the request, then send the answer's body in ``chunks`` pieces spread over
    ``seconds`` (headers at once): each gap is shorter than a read timeout, the whole
    answer may outlast a client's deadline."""
    if chunks < 1:
        raise ValueError("chunks must be at least 1")
    return Fault("trickle", seconds=float(seconds), chunks=int(chunks))


# How a processed answer can be corrupted. The first five destroy the token (no client can
# read it: the refresh happened at Instagram but its answer is unusable); the last two
# only damage the detail beside it.
MANGLES_UNUSABLE = ("truncate", "token_newline", "token_nul", "nested", "huge")
MANGLES_USABLE = ("expires_in_absurd", "expires_in_missing")
MANGLES = MANGLES_UNUSABLE + MANGLES_USABLE


def mangled(how: str) -> Fault:
    """Process the request (a refresh does rotate the token), then corrupt the answer:
    ``truncate`` (half the body), ``token_newline`` / ``token_nul`` (a newline or NUL inside
    the token), ``nested`` (a member nested 5,000 deep), ``huge`` (1 MiB of padding),
    ``expires_in_absurd`` (10**30) or ``expires_in_missing``. Only JSON object answers
    are changed beyond truncation."""
    if how not in MANGLES:
        raise ValueError(f"how must be one of {MANGLES}")
    return Fault("mangled", how=how)


def mangle(reply: Reply, how: str) -> Reply:
    """``reply`` corrupted as ``mangled(how)`` describes (``issued`` is kept)."""
    if how == "truncate":
        return Reply(reply.status, reply.body[: len(reply.body) // 2], reply.content_type,
                     dict(reply.headers), reply.issued)
    try:
        payload = json.loads(reply.body)
    except ValueError:
        return reply
    if not isinstance(payload, dict):
        return reply
    token = payload.get("access_token")
    if how in ("token_newline", "token_nul") and isinstance(token, str):
        middle = len(token) // 2
        bad = "\n" if how == "token_newline" else "\x00"
        payload["access_token"] = token[:middle] + bad + token[middle:]
    elif how == "expires_in_absurd":
        payload["expires_in"] = 10**30
    elif how == "expires_in_missing":
        payload.pop("expires_in", None)
    body = json.dumps(payload)
    if how == "nested":
        body = body[:-1] + ', "extra": ' + "[" * 5000 + "]" * 5000 + "}"
    elif how == "huge":
        body = body[:-1] + ', "padding": "' + "x" * (1 << 20) + '"}'
    return Reply(reply.status, body.encode(), reply.content_type, dict(reply.headers),
                 reply.issued)


FAULT_CONSTRUCTORS = {
    "status": status,
    "graph_error": graph_error,
    "rate_limited": rate_limited,
    "delay": delay,
    "garbage": garbage,
    "disconnect": disconnect,
    "trickle": trickle,
    "mangled": mangled,
}


def fault_from_dict(spec: dict[str, Any]) -> Fault:
    """Build a fault from ``{"kind": ..., **constructor kwargs}`` (control API)."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in FAULT_CONSTRUCTORS:
        raise ValueError(f"unknown fault kind {kind!r}")
    try:
        return FAULT_CONSTRUCTORS[kind](**spec)
    except TypeError as exc:
        raise ValueError(f"bad arguments for fault {kind!r}: {exc}") from None


# --------------------------------------------------------------------------- chaos

CHAOS_KINDS = ("timeout", "disconnect", "5xx", "rate_limit", "malformed", "expires_in", "trickle")


@dataclass
class Chaos:
    """Seeded random faults: each request to one of ``paths`` goes wrong with probability
    ``rate``, as one of ``kinds`` (the variant of the kind drawn at random too).

    The draw for a request depends only on the seed, the path, whose token the request
    carries (its username) and how many requests for that user came before: a seed gives
    every account the same faults in the same order however the requests of many workers
    interleave. ``timeout_seconds``: how long a "timeout" answer is held back (make it
    longer than the client's read timeout); ``trickle_seconds``: how long a slow trickle
    lasts (longer than the client's deadline); ``regain_minutes``: the
    ``estimated_time_to_regain_access`` of a rate limit."""

    rate: float
    kinds: tuple[str, ...] = CHAOS_KINDS
    seed: int = 0
    paths: tuple[str, ...] = ("/refresh_access_token",)
    timeout_seconds: float = 25.0
    trickle_seconds: float = 40.0
    regain_minutes: int = 0
    requests: int = 0
    injected: Counter = field(default_factory=Counter)
    variants: Counter = field(default_factory=Counter)
    _seen: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        self.kinds = tuple(self.kinds)
        unknown = [k for k in self.kinds if k not in CHAOS_KINDS]
        if unknown or not self.kinds:
            raise ValueError(f"kinds must be a non-empty subset of {CHAOS_KINDS}")
        self.paths = tuple(normalize_path(p) for p in self.paths)
        self.seed = int(self.seed)
        self._menus = {kind: self._menu(kind) for kind in self.kinds}

    def _menu(self, kind: str) -> list[tuple[str, Fault]]:
        usage = {"estimated_time_to_regain_access": self.regain_minutes}
        if kind == "timeout":
            return [("late", delay(self.timeout_seconds))]
        if kind == "disconnect":
            return [("reset", disconnect())]
        if kind == "5xx":
            return [("500", status(500)), ("502", status(502)), ("503_empty", status(503, "")),
                    ("graph_1", graph_error(1, http_status=500)),
                    ("graph_2", graph_error(2, http_status=503))]
        if kind == "rate_limit":
            return [("429_code_4", rate_limited(429, 4, usage)),
                    ("400_code_17", rate_limited(400, 17, usage)),
                    ("400_code_613", rate_limited(400, 613, usage))]
        if kind == "malformed":
            return [("html", garbage()), ("cut_json", garbage(truncated=True))] + [
                (how, mangled(how)) for how in MANGLES_UNUSABLE
            ]
        if kind == "expires_in":
            return [(how, mangled(how)) for how in MANGLES_USABLE]
        return [("slow", trickle(self.trickle_seconds)),
                ("gentle", trickle(min(0.5, self.trickle_seconds / 10), chunks=5))]

    def draw(self, path: str, key: str) -> tuple[str, str, Fault] | None:
        """The fault for this request, as (kind, variant, fault), or None."""
        if path not in self.paths:
            return None
        number = self._seen[(path, key)]
        self._seen[(path, key)] += 1
        self.requests += 1
        rng = random.Random(f"{self.seed}|{path}|{key}|{number}")
        if rng.random() >= self.rate:
            return None
        kind = rng.choice(self.kinds)
        variant, fault = rng.choice(self._menus[kind])
        self.injected[kind] += 1
        self.variants[f"{kind}:{variant}"] += 1
        return kind, variant, fault

    def report(self) -> dict[str, Any]:
        """Settings and what was injected so far: by kind and by kind:variant."""
        return {
            "rate": self.rate, "kinds": list(self.kinds), "seed": self.seed,
            "paths": list(self.paths), "timeout_seconds": self.timeout_seconds,
            "trickle_seconds": self.trickle_seconds, "regain_minutes": self.regain_minutes,
            "requests": self.requests, "injected": dict(self.injected),
            "variants": dict(self.variants),
        }


# --------------------------------------------------------------------------- records


@dataclass
class RefreshRecord:
    """One refresh Instagram performed (``old`` refreshed into ``new``) and what became of
    its answer: "pending" (being sent), "delivered" (the whole answer went to a client
    still connected), "undelivered" (the client had gone before the answer was complete),
    "unusable" (a fault corrupted the token in the answer). ``fault``: the fault on the
    answer ("kind:variant" for chaos), "" for none; ``client``: "host:port" it was sent to."""

    username: str
    client_id: str
    old: str = field(repr=False)
    new: str = field(repr=False)
    at: datetime
    fault: str = ""
    outcome: str = "pending"
    client: str = ""


@dataclass
class App:
    """A registered Meta app."""

    client_id: str
    client_secret: str
    redirect_uris: list[str]
    flavour: str = "instagram_login"
    name: str = "Demo app"


@dataclass
class FakeUser:
    """An Instagram account; ``id`` is /me's id, ``user_id`` the professional account id."""

    username: str
    id: str
    user_id: str
    account_type: str = "BUSINESS"
    name: str = ""
    media_count: int = 42
    followers_count: int = 1234
    profile_picture_url: str = ""


@dataclass
class Token:
    """An issued access token."""

    value: str
    client_id: str
    username: str
    kind: str
    scopes: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    revoked: bool = False
    revoke_subcode: int | None = None


@dataclass
class AuthCode:
    """An authorization code, bound to app, redirect_uri, user and granted scopes."""

    value: str
    client_id: str
    redirect_uri: str
    username: str
    scopes: tuple[str, ...]
    issued_at: datetime
    used: bool = False


@dataclass(frozen=True)
class Call:
    """One request received (``path`` without version prefix, ``raw_path`` as sent)."""

    method: str
    path: str
    raw_path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]
    at: datetime


class AuthorizeError(Exception):
    """The authorize dialog cannot be shown: an error page, never a redirect."""


# --------------------------------------------------------------------------- state


class FakeState:
    """All mutable state, under one re-entrant lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Forget everything: apps, users, tokens, codes, calls, faults, clock, settings."""
        with self.lock:
            self.apps: dict[str, App] = {}
            self.users: dict[str, FakeUser] = {}
            self.tokens: dict[str, Token] = {}
            self.codes: dict[str, AuthCode] = {}
            self.calls: list[Call] = []
            self.faults: defaultdict[str, deque[Fault]] = defaultdict(deque)
            self.clock_offset = timedelta(0)
            self.exchange_shape = "flat"
            self.me_shape = "flat"
            self.refresh_returns_same_token = False
            self.usage_headers: dict[str, str] = {}
            self.latency = 0.0  # seconds before answering each call (not the control API)
            self.chaos: Chaos | None = None
            self.refreshes: list[RefreshRecord] = []
            self._unanswered: dict[str, RefreshRecord] = {}

    # ----------------------------------------------------------------- basics

    def now(self) -> datetime:
        """Fake clock: real UTC now plus the offset."""
        return datetime.now(UTC) + self.clock_offset

    def add_user(
        self,
        username: str,
        id: str | None = None,
        user_id: str | None = None,
        account_type: str = "BUSINESS",
    ) -> FakeUser:
        """Register (or replace) a user."""
        user = FakeUser(
            username=username,
            id=id or random_id(),
            user_id=user_id or random_id(),
            account_type=account_type,
            name=username.replace("_", " ").title(),
            profile_picture_url=f"https://scontent.example/{username}.jpg",
        )
        with self.lock:
            self.users[username] = user
        return user

    def rename_user(self, old: str, new: str) -> FakeUser:
        """The user changes their username (Instagram lets people do that, and a freed
        name can go to someone else): same ids, same tokens, /me answers the new name."""
        with self.lock:
            if new in self.users:
                raise ValueError(f"username {new!r} is taken")
            user = self.users.pop(old)
            user.username = new
            self.users[new] = user
            for token in self.tokens.values():
                if token.username == old:
                    token.username = new
            return user

    def ensure_user(self, username: str) -> FakeUser:
        """Return the user, creating it when unknown."""
        with self.lock:
            return self.users.get(username) or self.add_user(username)

    def issue_token(
        self,
        app: App,
        username: str,
        kind: str,
        scopes: tuple[str, ...],
        issued_at: datetime | None = None,
    ) -> Token:
        """Create and store a token of ``kind`` issued at ``issued_at`` (default now)."""
        if kind not in TOKEN_KINDS:
            raise ValueError(f"kind must be one of {TOKEN_KINDS}")
        prefix = "IGAA" if app.flavour == "instagram_login" else "IGQVJ"
        with self.lock:
            self.ensure_user(username)
            issued = issued_at or self.now()
            lifetime = LONG_LIFETIME if kind == "long" else SHORT_LIFETIME
            value = prefix + "".join(secrets.choice(_ALNUM) for _ in range(150))
            token = Token(value, app.client_id, username, kind, scopes, issued, issued + lifetime)
            self.tokens[value] = token
            return token

    def default_scopes(self, app: App) -> tuple[str, ...]:
        """Scopes granted to tokens minted without a dialog."""
        if app.flavour == "basic_display":
            return ("user_profile", "user_media")
        return ("instagram_business_basic",)

    def record(self, call: Call) -> None:
        """Remember a received request."""
        with self.lock:
            self.calls.append(call)

    def pop_fault(self, path: str) -> Fault | None:
        """Consume the next fault queued for ``path``, if any."""
        with self.lock:
            queue = self.faults.get(path)
            return queue.popleft() if queue else None

    def chaos_fault(self, path: str, params: dict[str, str]) -> tuple[str, Fault] | None:
        """The chaos mode's fault for this request as ("kind:variant", fault), or None."""
        with self.lock:
            if self.chaos is None or self.chaos.rate == 0:
                return None
            value = params.get("access_token", "")
            token = self.tokens.get(value)
            key = f"user:{token.username}" if token else f"token:{value}"
            drawn = self.chaos.draw(path, key)
        if drawn is None:
            return None
        kind, variant, fault = drawn
        return f"{kind}:{variant}", fault

    def refresh_answered(self, issued: str, outcome: str, fault: str = "",
                         client: str = "") -> None:
        """Record what became of the answer that carried the token ``issued``."""
        with self.lock:
            record = self._unanswered.pop(issued, None)
            if record is not None:
                record.outcome, record.fault, record.client = outcome, fault, client

    # ----------------------------------------------------------------- authorize

    def validate_authorize(self, params: dict[str, str]) -> tuple[App, list[str]]:
        """Check an authorize request; raise AuthorizeError with the page's message."""
        with self.lock:
            app = self.apps.get(params.get("client_id", ""))
            if app is None:
                raise AuthorizeError("Invalid platform app")
            if params.get("redirect_uri", "") not in app.redirect_uris:
                raise AuthorizeError("Invalid redirect_uri")
        if params.get("response_type") != "code":
            raise AuthorizeError("Invalid response_type: expected code")
        scopes = split_scopes(params.get("scope", ""))
        allowed = BASIC_DISPLAY_SCOPES if app.flavour == "basic_display" else INSTAGRAM_LOGIN_SCOPES
        if not scopes:
            raise AuthorizeError("Invalid scope: no scope requested")
        bad = [s for s in scopes if s not in allowed]
        if bad:
            raise AuthorizeError("Invalid scope: " + ", ".join(bad))
        if app.flavour == "instagram_login" and "instagram_business_basic" not in scopes:
            raise AuthorizeError("Invalid scope: instagram_business_basic is required")
        return app, list(dict.fromkeys(scopes))

    def issue_code(self, app: App, redirect_uri: str, username: str, scopes: list[str]) -> str:
        """Create a single-use code living 1 hour."""
        with self.lock:
            self.ensure_user(username)
            value = "AQ" + secrets.token_urlsafe(96)
            self.codes[value] = AuthCode(
                value, app.client_id, redirect_uri, username, tuple(scopes), self.now()
            )
            return value

    # ----------------------------------------------------------------- token endpoints

    def exchange_code(self, form: dict[str, str]) -> Reply:
        """``POST /oauth/access_token``: code -> short-lived token (section 2)."""
        for name in ("client_id", "client_secret", "grant_type", "redirect_uri", "code"):
            if not form.get(name):
                return flat_error_reply(f"You must provide a {name}")
        with self.lock:
            app = self.apps.get(form["client_id"])
            if app is None:
                return flat_error_reply(INVALID_APP)
            if form["client_secret"] != app.client_secret:
                return flat_error_reply(INVALID_SECRET)
            if form["grant_type"] != "authorization_code":
                return flat_error_reply("Unsupported grant_type")
            code = self.codes.get(form["code"])
            if code is None or code.client_id != app.client_id:
                return flat_error_reply(CODE_NOT_FOUND)
            if code.used:
                return flat_error_reply(CODE_USED)
            if self.now() >= code.issued_at + CODE_LIFETIME:
                return flat_error_reply(CODE_NOT_FOUND)
            if form["redirect_uri"] != code.redirect_uri:
                return flat_error_reply(REDIRECT_MISMATCH)
            code.used = True
            token = self.issue_token(app, code.username, "short", code.scopes)
            # Basic Display has one id per user, which its exchange answers; Instagram
            # Login's exchange answers a user_id that can differ from /me's id (section 2).
            user = self.users[code.username]
            user_id = user.id if app.flavour == "basic_display" else user.user_id
            shape = self.exchange_shape
        number: int | str = int(user_id) if user_id.isdigit() else user_id
        if shape == "data":
            return json_reply(
                200,
                {
                    "data": [
                        {
                            "access_token": token.value,
                            "user_id": user_id,
                            "permissions": ",".join(token.scopes),
                        }
                    ]
                },
            )
        payload: dict[str, Any] = {"access_token": token.value, "user_id": number}
        if shape == "permissions":
            payload["permissions"] = list(token.scopes)
        return json_reply(200, payload)

    def _check_token(self, value: str) -> Token | Reply:
        """The live token, or the Graph 190 error it deserves."""
        token = self.tokens.get(value)
        if token is None:
            return graph_error_reply(190, CANNOT_PARSE)
        if token.revoked:
            return graph_error_reply(
                190,
                REVOKED_MESSAGES.get(token.revoke_subcode, REVOKED_MESSAGES[None]),
                token.revoke_subcode,
            )
        now = self.now()
        if now >= token.expires_at:
            fmt = "%A, %d-%b-%y %H:%M:%S UTC"
            return graph_error_reply(
                190,
                f"Error validating access token: Session has expired on "
                f"{token.expires_at.strftime(fmt)}. The current time is {now.strftime(fmt)}.",
                463,
            )
        return token

    def _long_lived_reply(self, token: Token) -> Reply:
        expires_in = round((token.expires_at - self.now()).total_seconds())
        return json_reply(
            200, {"access_token": token.value, "token_type": "bearer", "expires_in": expires_in}
        )

    def exchange_long(self, params: dict[str, str]) -> Reply:
        """``GET /access_token``: short-lived -> long-lived token (section 3)."""
        if params.get("grant_type") != "ig_exchange_token":
            return graph_error_reply(100, "Unsupported grant_type: expected ig_exchange_token")
        if not params.get("access_token"):
            return graph_error_reply(100, "Missing required parameter: access_token")
        with self.lock:
            token = self.tokens.get(params["access_token"])
            if token is None:
                return graph_error_reply(190, CANNOT_PARSE)
            app = self.apps.get(token.client_id)
            if app is None or params.get("client_secret") != app.client_secret:
                return graph_error_reply(100, "Error validating client secret.")
            checked = self._check_token(token.value)
            if isinstance(checked, Reply):
                return checked
            if token.kind != "short":
                return graph_error_reply(100, "Invalid token type: a short-lived token is required")
            new = self.issue_token(app, token.username, "long", token.scopes)
            return self._long_lived_reply(new)

    def refresh(self, method: str, params: dict[str, str]) -> Reply:
        """``GET /refresh_access_token``: extend a long-lived token (section 4)."""
        if method != "GET":
            return graph_error_reply(
                100,
                "Unsupported post request. Object with ID 'refresh_access_token' does not "
                "exist, cannot be loaded due to missing permissions, or does not support this "
                "operation.",
            )
        if params.get("grant_type") != "ig_refresh_token":
            return graph_error_reply(100, "Unsupported grant_type: expected ig_refresh_token")
        if not params.get("access_token"):
            return graph_error_reply(100, "Missing required parameter: access_token")
        with self.lock:
            checked = self._check_token(params["access_token"])
            if isinstance(checked, Reply):
                return checked
            token = checked
            if token.kind != "long":
                return graph_error_reply(
                    100, "Invalid token type: only long-lived tokens can be refreshed"
                )
            now = self.now()
            if now - token.issued_at < REFRESH_MIN_AGE:
                return graph_error_reply(100, TOO_YOUNG)
            if self.refresh_returns_same_token:
                token.issued_at, token.expires_at = now, now + LONG_LIFETIME
                new = token
            else:
                app = self.apps[token.client_id]
                new = self.issue_token(app, token.username, "long", token.scopes)
            record = RefreshRecord(token.username, token.client_id, token.value, new.value, now)
            self.refreshes.append(record)
            self._unanswered[new.value] = record
            reply = self._long_lived_reply(new)
            reply.issued = new.value
            return reply

    def me(self, method: str, params: dict[str, str]) -> Reply:
        """``GET /me``: the profile in the configured shape (section 5)."""
        if method != "GET":
            return graph_error_reply(100, "Unsupported post request.", type="GraphMethodException")
        if not params.get("access_token"):
            return graph_error_reply(
                2500,
                "An active access token must be used to query information about the current user.",
            )
        fields = [f.strip() for f in params.get("fields", "id").split(",") if f.strip()] or ["id"]
        for name in fields:
            if name not in ME_FIELDS:
                return graph_error_reply(
                    100,
                    f"(#100) Tried accessing nonexisting field ({name}) on node type (User)",
                    type="IGApiException",
                )
        with self.lock:
            checked = self._check_token(params["access_token"])
            if isinstance(checked, Reply):
                return checked
            app = self.apps.get(checked.client_id)
            if app is not None and app.flavour == "basic_display":
                for name in fields:
                    if name not in BASIC_DISPLAY_ME_FIELDS:
                        return graph_error_reply(
                            100, f"(#100) Tried accessing nonexisting field ({name}) on node "
                            f"type (User)", type="IGApiException")
            user = self.users[checked.username]
            values = {name: getattr(user, name) for name in fields}
            shape = self.me_shape
        if shape == "data":
            # The envelope names the account's id `user_id` and carries no `id`: with
            # Basic Display, whose users have one id, that is the same number as /me's id.
            values.pop("id", None)
            basic = app is not None and app.flavour == "basic_display"
            return json_reply(200, {"data": [{"user_id": user.id if basic else user.user_id,
                                              **values}]})
        return json_reply(200, values)
