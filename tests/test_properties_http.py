"""Property-based tests of `InstagramClient` over real HTTP: a tiny local server answers
each endpoint with a generated status, body and usage headers; every call returns a result
that passes the documented rules (tests/answer_rules.py) or raises an InstagramError, an
error status never gives a result, and a well-formed answer is kept exactly.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from accounts.instagram import InstagramClient, InstagramError, RateLimited, TokenInvalid, Transient
from tests.answer_rules import (
    assert_long,
    assert_profile,
    assert_short,
    bodies,
    good_bodies,
    header_values,
    wire_json,
)


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
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
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
