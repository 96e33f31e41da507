"""Property-based tests: whatever Instagram answers, the client returns only values that
pass the documented rules (accounts/instagram/answers.py) or raises an InstagramError.

First the parsers alone, on arbitrary JSON (deep nesting, huge ints, NaN, non-ASCII
digits, control characters, bools where ints go); then the same through real HTTP, a tiny
local server answering each endpoint with a generated status, body and usage headers.
The rules are restated here rather than imported, so a rule loosened in the code fails.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from accounts.instagram import (
    InstagramClient,
    InstagramError,
    LongLivedToken,
    MalformedAnswer,
    Profile,
    RateLimited,
    ShortLivedToken,
    TokenInvalid,
    Transient,
    Usage,
)
from accounts.instagram.answers import long_lived_from, profile_from, short_lived_from
from accounts.instagram.errors import error_from

# --- the documented rules ------------------------------------------------------------------

TOKEN = re.compile(r"[\x21-\x7e]{16,2048}")  # printable ASCII, no whitespace
ID = re.compile(r"[0-9]{1,32}")  # ASCII digits only
USERNAME = re.compile(r"[A-Za-z0-9._]{1,30}")  # Instagram's own rule
SCOPE = re.compile(r"[a-z][a-z0-9_]{0,63}")
ACCOUNT_TYPE = re.compile(r"[A-Z_]{1,40}")
MAX_EXPIRES_IN = 400 * 24 * 3600
SIXTY_DAYS = 60 * 24 * 3600


def assert_usage(usage: Any) -> None:
    assert usage is None or isinstance(usage, Usage)
    if usage is not None:
        assert type(usage.percent) is int and 0 <= usage.percent <= 10_000
        regain = usage.regain_seconds
        assert regain is None or (type(regain) is int and 60 <= regain <= 24 * 3600)


def assert_short(result: Any) -> None:
    assert isinstance(result, ShortLivedToken)
    assert isinstance(result.access_token, str) and TOKEN.fullmatch(result.access_token)
    assert isinstance(result.user_id, str) and ID.fullmatch(result.user_id)
    assert isinstance(result.permissions, tuple) and len(result.permissions) <= 50
    assert all(isinstance(p, str) and SCOPE.fullmatch(p) for p in result.permissions)


def assert_long(result: Any) -> None:
    assert isinstance(result, LongLivedToken)
    assert isinstance(result.access_token, str) and TOKEN.fullmatch(result.access_token)
    assert type(result.expires_in) is int and 1 <= result.expires_in <= MAX_EXPIRES_IN
    assert type(result.expiry_assumed) is bool
    assert not result.expiry_assumed or result.expires_in == SIXTY_DAYS
    assert_usage(result.usage)


def assert_profile(result: Any) -> None:
    assert isinstance(result, Profile)
    assert isinstance(result.id, str) and ID.fullmatch(result.id)
    assert isinstance(result.username, str) and USERNAME.fullmatch(result.username)
    assert result.user_id is None or (isinstance(result.user_id, str)
                                      and ID.fullmatch(result.user_id))
    assert result.account_type is None or (isinstance(result.account_type, str)
                                           and ACCOUNT_TYPE.fullmatch(result.account_type))
    assert_usage(result.usage)


def strings_in(value: Any, depth: int = 4) -> set[str]:
    """Every string value in `value`, a few levels down: where a result's text may come from."""
    if isinstance(value, str):
        return {value}
    if depth == 0:
        return set()
    if isinstance(value, dict):
        return set().union(*(strings_in(v, depth - 1) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(strings_in(v, depth - 1) for v in value))
    return set()


# --- strategies ----------------------------------------------------------------------------

KEYS = [
    "access_token", "user_id", "id", "username", "permissions", "expires_in", "token_type",
    "account_type", "data", "error", "code", "error_subcode", "message", "error_message",
    "error_type", "type", "call_count", "total_cputime", "total_time",
    "estimated_time_to_regain_access",
]
ASCII_PRINTABLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
tokens = st.text(ASCII_PRINTABLE, min_size=16, max_size=60)
nan_ish = st.sampled_from([
    "NaN", "nan", "Infinity", "-Infinity", "1e309", "1e3", "-0", "+7", " 7 ", "0x1F", "1_000",
    "٣٤", "１２", "²", "5\n", "", "null", "true", "17841405793187218", "-17841405793187218",
])
controls = st.text(st.characters(categories=["Cc"]) | st.sampled_from("\u2028\u2029\u200b\ufeff"),
                   min_size=1, max_size=4)
bent_tokens = st.one_of(  # almost a token: a twist the rules must catch
    tokens.map(lambda t: t + "\n"), tokens.map(lambda t: " " + t), tokens.map(lambda t: t[:15]),
    st.tuples(tokens, controls).map("".join), st.text(min_size=16, max_size=40),
)
usernames = st.text(st.sampled_from("abcXYZ019._"), min_size=1, max_size=30)
scope_names = st.sampled_from(["instagram_business_basic", "user_profile", "user_media",
                               "instagram_business_manage_messages"])
permission_values = st.one_of(
    st.lists(scope_names, max_size=3),
    st.lists(scope_names, max_size=3).map(",".join),
    st.lists(scope_names | st.text(max_size=10), max_size=60),
)
# JSON-serialisable scalars (what can come over the wire)...
wire_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**53, max_value=10**40),
    st.floats(), st.text(max_size=40), nan_ish, controls, tokens, bent_tokens, usernames,
    permission_values, st.integers(min_value=-5, max_value=MAX_EXPIRES_IN + 5),
)


def _json(scalars: st.SearchStrategy) -> st.SearchStrategy:
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=6),
        max_leaves=25,
    )


class _Shown:
    """Reports itself briefly: hypothesis cannot print 5,000 levels or 5,000 digits."""

    shown = ""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.shown)


class DeepList(_Shown, list):
    pass


class DeepDict(_Shown, dict):
    pass


class HugeInt(_Shown, int):
    # str() of an int over 4,300 digits raises ValueError: keep that, as a real int does.
    __str__ = __repr__ = int.__repr__


def deep_list(depth: int) -> list:
    value: Any = []
    for _ in range(depth):
        value = [value]
    deep = DeepList(value)
    deep.shown = f"deep_list({depth})"
    return deep


def deep_dict(depth: int) -> dict:
    value: Any = {}
    for _ in range(depth):
        value = {"data": value, "message": value}
    deep = DeepDict(value)
    deep.shown = f"deep_dict({depth})"
    return deep


def huge_int(sign: int) -> int:
    number = HugeInt(sign * 10**5000)
    number.shown = f"{sign} * 10**5000"
    return number


wire_json = _json(wire_scalars)
# ... and Python values only a direct caller can hand over: ints too big to print (over
# 4,300 digits) and nesting deeper than the interpreter's recursion limit.
# Built once: around the recursion limit (1,000) and well past it.
DEEP = [make(depth) for make in (deep_list, deep_dict) for depth in (30, 999, 1001, 5000)]
python_json = _json(wire_scalars | st.just(huge_int(1)) | st.just(huge_int(-1))) | st.sampled_from(
    DEEP)


def bodies(values: st.SearchStrategy) -> st.SearchStrategy:
    """Answer bodies: dicts with Instagram's keys (flat, or a `data` envelope) holding
    anything."""
    flat = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), values, max_size=7)
    return st.one_of(
        flat,
        st.lists(flat, max_size=2).map(lambda entries: {"data": entries}),
        st.builds(lambda entry, error: {"error": entry, **error}, flat,
                  st.dictionaries(st.sampled_from(KEYS), values, max_size=2)),
    )


good_bodies = st.fixed_dictionaries({
    "access_token": tokens,
    "user_id": st.integers(0, 10**20) | st.from_regex(r"[0-9]{1,32}", fullmatch=True),
    "expires_in": st.integers(1, MAX_EXPIRES_IN),
    "id": st.from_regex(r"[0-9]{1,32}", fullmatch=True),
    "username": usernames,
})
secret_values = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=12,
                        max_size=40)


# --- the parsers alone ---------------------------------------------------------------------

PARSERS = {
    "short": (lambda body, usage: short_lived_from(body), assert_short),
    "long": (long_lived_from, assert_long),
    "profile": (profile_from, assert_profile),
}


@pytest.mark.parametrize("parser", PARSERS)
@settings(max_examples=150, deadline=1000)
@given(body=bodies(python_json), usage=st.none() | st.builds(Usage, percent=st.integers(0, 100)))
@example(body={"access_token": "A" * 20, "user_id": huge_int(1), "id": huge_int(1),
               "username": "x"}, usage=None)
@example(body={"data": deep_list(5000)}, usage=None)
@example(body={"access_token": "A" * 20, "user_id": True, "id": True, "expires_in": True,
               "username": "ok"}, usage=None)
@example(body={"access_token": "A" * 20, "user_id": "٣٤", "id": "١", "expires_in": "1e3",
               "username": "ok"}, usage=None)
@example(body={"access_token": "A" * 20, "user_id": 1.0, "id": float("nan"),
               "expires_in": float("inf"), "username": "ok"}, usage=None)
def test_answer_parsers_return_valid_results_or_raise_instagram_errors(
    parser: str, body: dict[str, Any], usage: Usage | None,
) -> None:
    parse, assert_valid = PARSERS[parser]
    try:
        result = parse(body, usage)
    except InstagramError as exc:
        assert isinstance(exc, MalformedAnswer)
        return
    assert_valid(result)
    # Nothing invented: the token (and the profile's id and name) are what Instagram sent.
    if parser == "profile":
        assert result.username in strings_in(body)
    else:
        assert result.access_token in strings_in(body)
    assert getattr(result, "usage", usage) is usage


@pytest.mark.parametrize("parser", PARSERS)
@settings(max_examples=60, deadline=1000)
@given(body=good_bodies)
def test_answer_parsers_keep_a_good_answer_exactly(parser: str, body: dict[str, Any]) -> None:
    usage = Usage(percent=5)
    result = PARSERS[parser][0](body, usage)
    if parser == "short":
        assert (result.access_token, result.user_id) == (body["access_token"],
                                                         str(body["user_id"]))
    elif parser == "long":
        assert (result.access_token, result.expires_in, result.expiry_assumed) == (
            body["access_token"], body["expires_in"], False)
    else:
        assert (result.id, result.username, result.user_id) == (
            body["id"], body["username"], str(body["user_id"]))


header_values = st.one_of(
    wire_json.map(json.dumps), st.text(max_size=60),
    st.sampled_from([10, 21, 1001, 5000]).map(lambda n: "[" * n + "]" * n),
    st.sampled_from([10, 21, 1001]).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.just('{"call_count": ' + "9" * 5000 + "}"),
)


@settings(max_examples=200, deadline=1000)
@given(headers=st.dictionaries(st.sampled_from(["X-App-Usage", "X-Business-Use-Case-Usage"]),
                               header_values),
       app=st.fixed_dictionaries({"call_count": st.integers(0, 100),
                                  "total_time": st.integers(0, 100)}) | st.none())
def test_usage_headers_give_bounded_readings(headers: dict[str, str],
                                             app: dict[str, int] | None) -> None:
    if app is not None:
        headers = {**headers, "X-App-Usage": json.dumps(app)}
    usage = Usage.from_headers(headers)
    assert_usage(usage)
    if app is not None:  # a readable header is never lost among unreadable ones
        assert usage is not None and usage.percent >= max(app.values())


@st.composite
def error_cases(draw: st.DrawFn) -> tuple[int, Any, list[str]]:
    """A status, an error body that may quote the call's secrets, and those secrets."""
    secrets = draw(st.lists(secret_values, min_size=1, max_size=3))
    quoted = draw(st.lists(st.sampled_from(secrets), max_size=3))
    message = draw(st.text(max_size=30)).join(quoted + [draw(st.text(max_size=20))])
    body = draw(st.one_of(
        bodies(python_json),
        python_json,
        st.fixed_dictionaries({"error": st.fixed_dictionaries(
            {"message": st.just(message) | python_json},
            optional={"code": python_json, "error_subcode": python_json})}),
        st.fixed_dictionaries({"error_message": st.just(message) | python_json},
                              optional={"code": python_json, "error_type": python_json}),
    ))
    status = draw(st.sampled_from([200, 400, 401, 403, 404, 429, 500, 503]) | st.integers(100, 599))
    return status, body, secrets


@settings(max_examples=200, deadline=1000)
@given(case=error_cases(), usage=st.none() | st.builds(Usage, percent=st.integers(0, 100)))
@example(case=(400, {"error": {"message": deep_list(5000), "code": 190}}, ["s" * 12]), usage=None)
@example(case=(400, {"error": {"message": huge_int(1), "code": huge_int(-1)}}, ["s" * 12]),
         usage=None)
@example(case=(500, {"error_message": deep_dict(3000)}, ["s" * 12]), usage=None)
def test_error_payloads_become_safe_instagram_errors(case: tuple[int, Any, list[str]],
                                                     usage: Usage | None) -> None:
    status, body, secrets = case
    exc = error_from(status, body, usage, "/refresh_access_token", secrets)
    assert isinstance(exc, InstagramError)
    text = str(exc)
    assert isinstance(exc.message, str) and len(exc.message) <= 300
    assert all(c.isprintable() for c in exc.message)
    for secret in secrets:
        assert secret not in text
    for number in (exc.code, exc.subcode):
        assert number is None or type(number) is int
    assert exc.status == status and exc.usage is usage
    # The reaction follows the status when Instagram did not say the token is dead:
    # a 5xx is always worth retrying, a 429 always a rate limit.
    if not isinstance(exc, TokenInvalid):
        if status >= 500:
            assert isinstance(exc, Transient | RateLimited)
        if status == 429:
            assert isinstance(exc, RateLimited)


# --- the same through real HTTP ------------------------------------------------------------


@dataclass
class Answer:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    good: dict[str, Any] | None = None  # a well-formed flat answer, to be kept exactly
    app_usage: dict[str, int] | None = None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.paths.append(self.path.split("?", 1)[0])  # type: ignore[attr-defined]
        answer: Answer = self.server.answer  # type: ignore[attr-defined]
        self.send_response(answer.status)
        for name, value in answer.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        # One connection per call: a body the client does not read (204, 304) must not
        # become the start of the next example's answer.
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        self.wfile.write(answer.body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr request log."""


@pytest.fixture(scope="module")
def answering_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.paths, server.answer = [], Answer(200, b"{}")  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def header_text(value: str) -> str:
    """What may stand in a header line: latin-1, no line breaks."""
    return value.encode("latin-1", "replace").decode("latin-1").replace("\r", " ").replace(
        "\n", " ")


raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([10, 21, 1001, 5000]).map(lambda n: ("[" * n + "]" * n).encode()),
    st.sampled_from([10, 21, 3000]).map(lambda n: ('{"data":' * n + "{}" + "}" * n).encode()),
    st.just(b'{"access_token": "' + b"A" * 70_000 + b'"}'),
    st.just(b'{"access_token": "AAAAAAAAAAAAAAAAAAAA", "user_id": ' + b"9" * 5000 + b"}"),
    st.just(b'{"access_token": "AAAAAAAAAAAAAAAAAAAA", "expires_in": NaN, "id": 1e400}'),
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    status = draw(st.sampled_from([200, 200, 201, 204, 400, 404, 429, 500, 503])
                  | st.integers(200, 599))
    good, app_usage = None, None
    kind = draw(st.sampled_from(["good", "json", "raw"]))
    if kind == "good":
        good = draw(good_bodies)
        body = json.dumps(good).encode()
    elif kind == "json":
        body = json.dumps(draw(bodies(wire_json) | wire_json)).encode()
    else:
        body = draw(raw_bodies)
    headers = [(name, header_text(value)) for name, value in draw(st.lists(
        st.tuples(st.sampled_from(["X-App-Usage", "X-Business-Use-Case-Usage"]), header_values),
        max_size=2))]
    if draw(st.booleans()):
        app_usage = draw(st.fixed_dictionaries({"call_count": st.integers(0, 100),
                                                "total_cputime": st.integers(0, 100),
                                                "total_time": st.integers(0, 100)}))
        headers = [h for h in headers if h[0] != "X-App-Usage"]
        headers.append(("X-App-Usage", json.dumps(app_usage)))
    return Answer(status, body, headers, good, app_usage)


ENDPOINTS = {
    "exchange_code": ("/oauth/access_token", assert_short, lambda c: c.exchange_code(
        client_id="1", client_secret="app-secret-0123456789", redirect_uri="https://x.test/",
        code="AQ" + "c" * 40 + "#_")),
    "exchange_for_long_lived": ("/access_token", assert_long, lambda c: c.exchange_for_long_lived(
        client_secret="app-secret-0123456789", access_token="IGQV" + "t" * 40)),
    "refresh": ("/refresh_access_token", assert_long,
                lambda c: c.refresh(access_token="IGQV" + "t" * 40)),
    "me": ("/me", assert_profile, lambda c: c.me(access_token="IGQV" + "t" * 40)),
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@settings(max_examples=40, deadline=3000)
@given(answer=answers())
@example(answer=Answer(200, b"[" * 100_000))
@example(answer=Answer(200, b'{"access_token": "' + b"A" * 70_000 + b'"}'))
@example(answer=Answer(400, b'{"error": {"message": "' + b"\x1b[31m" * 50 + b'", "code": 190}}'))
def test_client_over_http_returns_valid_results_or_raises_instagram_errors(
    answering_server: ThreadingHTTPServer, endpoint: str, answer: Answer,
) -> None:
    path, assert_valid, call = ENDPOINTS[endpoint]
    answering_server.answer = answer  # type: ignore[attr-defined]
    host = f"http://127.0.0.1:{answering_server.server_address[1]}"
    client = InstagramClient(api_url=host, www_url=host, graph_url=host, connect_timeout=2,
                             read_timeout=2, deadline=5)
    try:
        result = call(client)
    except InstagramError as exc:
        assert answering_server.paths[-1] == path  # type: ignore[attr-defined]
        if not isinstance(exc, TokenInvalid) and answer.status >= 500:
            assert isinstance(exc, Transient | RateLimited)
        # A well-formed answer with a success status is never refused (the long-lived swap
        # and refresh have no `data` envelope, and a 204 carries no body).
        assert not (answer.good is not None and answer.status in (200, 201))
        return
    assert answering_server.paths[-1] == path  # type: ignore[attr-defined]
    assert 200 <= answer.status < 300, "an error status never gives a result"
    assert_valid(result)
    if answer.good is not None:
        good = answer.good
        expected = {
            "exchange_code": lambda r: (r.access_token, r.user_id) == (
                good["access_token"], str(good["user_id"])),
            "exchange_for_long_lived": lambda r: (r.access_token, r.expires_in) == (
                good["access_token"], good["expires_in"]),
            "refresh": lambda r: (r.access_token, r.expires_in) == (
                good["access_token"], good["expires_in"]),
            "me": lambda r: (r.id, r.username, r.user_id) == (
                good["id"], good["username"], str(good["user_id"])),
        }
        assert expected[endpoint](result)
    if answer.app_usage is not None and endpoint != "exchange_code":
        assert result.usage is not None
        assert result.usage.percent >= max(answer.app_usage.values())
