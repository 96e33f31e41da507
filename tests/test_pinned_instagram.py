"""Behaviours of the Instagram client package (`accounts.instagram`) no other test pinned
down, found by mutation testing (README, "Mutation testing"; the survivors are classified
in docs/mutation-survivors.md). Each test goes through the package's public API: the
answer rules, or the client against the fake Instagram over real HTTP (against a small
local server where the fake cannot misbehave that way: TLS, an answer stalled past the
size bound, a trickle on a kept-alive connection), and fails when the behaviour changes."""

from __future__ import annotations

import ipaddress
import json
import logging
import pickle
import secrets
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from accounts.instagram import (
    CallbackParams,
    Flavour,
    InstagramClient,
    InstagramError,
    MalformedAnswer,
    RateLimited,
    RedactSecretsFilter,
    TokenInvalid,
    Transient,
    Usage,
    mask,
    parse_callback,
    parse_pasted,
    redact_secrets,
)
from accounts.instagram.answers import (
    LONG_LIVED_SECONDS,
    MAX_EXPIRES_IN,
    MAX_PERMISSIONS,
    long_lived_from,
    profile_from,
    short_lived_from,
    valid_id,
    valid_permissions,
)
from accounts.instagram.callback import MAX_PARAM_CHARS
from accounts.instagram.errors import MAX_CODE, MESSAGE_CHARS, error_from
from accounts.instagram.transport import session_with_deadlines
from accounts.instagram.usage import (
    MAX_BODY_BYTES,
    MAX_HEADER_CHARS,
    MAX_JSON_DEPTH,
    MAX_PERCENT,
    MAX_REGAIN_MINUTES,
    as_int,
    json_depth_ok,
    loads_bounded,
)
from tests.conftest import SECRETS
from tests.fake_instagram import FakeInstagram, Fault, delay, graph_error

TOKEN = "IGAA" + "t" * 40
CLIENT_ID, SECRET = SECRETS["instagram_login"]


@pytest.fixture
def client(fake: FakeInstagram) -> InstagramClient:
    return InstagramClient(api_url=fake.url, www_url=fake.url, graph_url=fake.url,
                           read_timeout=0.5)


def json_fault(body: str, http_status: int = 200, headers: tuple = ()) -> Fault:
    """An answer of the fake with this JSON body (the request is not processed)."""
    return Fault("status", http_status, body.encode(), "application/json", headers=headers)


def readable(exc: BaseException) -> str:
    """What a log line or an event shows of an error: text, never a crash."""
    text = str(exc)
    assert isinstance(text, str) and text.strip(), repr(exc)
    return text.lower()


# --- answers: the rules of Instagram's answers ------------------------------------------


def test_an_unknown_shape_of_the_code_exchange_is_a_readable_malformed_answer():
    with pytest.raises(MalformedAnswer) as caught:
        short_lived_from({"data": ["not an object"]})
    assert "code exchange" in readable(caught.value)


@pytest.mark.parametrize("entry", [
    {"access_token": TOKEN, "user_id": "12ab"},       # a token, no usable user id
    {"access_token": "short", "user_id": "1784140"},  # a user id, no usable token
])
def test_a_code_exchange_needs_both_a_token_and_a_user_id(entry):
    with pytest.raises(MalformedAnswer) as caught:
        short_lived_from(entry)
    assert "code exchange" in readable(caught.value)


def test_permissions_boundaries_count_and_length():
    scopes = [f"scope_{i}" for i in range(MAX_PERMISSIONS)]
    assert valid_permissions(scopes) == tuple(scopes)
    assert valid_permissions([*scopes, "one_more"]) is None
    # A string of at most 4,096 characters is split; a longer one is not read at all.
    padded = "user_profile" + " " * (4096 - len("user_profile"))
    assert valid_permissions(padded) == ("user_profile",)
    assert valid_permissions(padded + " ") is None
    assert short_lived_from({"access_token": TOKEN, "user_id": "7",
                             "permissions": padded + " "}).permissions == ()


def test_an_integer_id_of_zero_is_an_id():
    assert valid_id(0) == "0"
    assert profile_from({"id": 0, "username": "shop"}, None).id == "0"


def test_an_empty_data_envelope_of_the_profile_is_a_malformed_answer():
    with pytest.raises(MalformedAnswer) as caught:
        profile_from({"data": []}, None)
    assert "profile" in readable(caught.value)


def test_an_empty_user_id_beside_the_profile_is_not_reported_not_refused():
    profile = profile_from({"id": "17841405793187221", "username": "shop", "user_id": ""},
                           None)
    assert (profile.id, profile.user_id) == ("17841405793187221", None)


def test_an_unusable_user_id_beside_the_profile_is_a_readable_malformed_answer():
    with pytest.raises(MalformedAnswer) as caught:
        profile_from({"id": "1", "username": "shop", "user_id": "12ab"}, None)
    assert "user_id" in readable(caught.value)


@pytest.mark.parametrize(("account_type", "kept"), [
    ("BUSINESS", "BUSINESS"), ("MEDIA_CREATOR", "MEDIA_CREATOR"), ("business", None),
    ("", None), (7, None), (None, None),
])
def test_the_account_type_is_reported_only_when_it_is_a_type_name(account_type, kept):
    profile = profile_from({"id": "1", "username": "shop", "account_type": account_type}, None)
    assert profile.account_type == kept


def test_a_profile_without_a_usable_id_is_a_readable_malformed_answer():
    with pytest.raises(MalformedAnswer) as caught:
        profile_from({"id": "abc", "username": "shop"}, None)
    assert "profile" in readable(caught.value)


@pytest.mark.parametrize(("expires_in", "kept"), [
    (1, 1), ("3600", 3600), (MAX_EXPIRES_IN, MAX_EXPIRES_IN),
    (0, None), (-3600, None), (MAX_EXPIRES_IN + 1, None), (None, None),
])
def test_expires_in_is_taken_when_it_is_one_second_to_400_days(expires_in, kept):
    usage = Usage(percent=12)
    body = {"access_token": TOKEN} | ({} if expires_in is None else {"expires_in": expires_in})
    token = long_lived_from(body, usage)
    assert token.access_token == TOKEN
    assert token.usage == usage  # on both paths, assumed expiry or not
    if kept is None:
        assert (token.expires_in, token.expiry_assumed) == (LONG_LIVED_SECONDS, True)
    else:
        assert (token.expires_in, token.expiry_assumed) == (kept, False)


def test_a_refresh_returns_the_lifetime_instagram_gave(fake, client):
    """Through the client: an answer saying one day is one day, not the assumed sixty."""
    fake.inject("/refresh_access_token", json_fault(
        json.dumps({"access_token": TOKEN, "token_type": "bearer", "expires_in": 86400}),
        headers=(("X-App-Usage", '{"call_count": 30}'),)))
    token = client.refresh(access_token="IGAA" + "r" * 40)
    assert (token.access_token, token.expires_in, token.expiry_assumed) == (TOKEN, 86400, False)
    assert token.usage == Usage(percent=30)


# --- client ---------------------------------------------------------------------------


def test_the_authorize_url_does_not_force_a_new_login_unless_asked():
    url = InstagramClient().authorize_url(
        flavour=Flavour.INSTAGRAM_LOGIN, client_id="42", redirect_uri="https://x.test/cb",
        scopes=["instagram_business_basic"], state="st")
    assert parse_qs(urlsplit(url).query)["force_authentication"] == ["0"]


def test_a_default_client_talks_to_instagrams_own_hosts_with_its_documented_timeouts():
    client = InstagramClient()
    assert (client.api_url, client.www_url, client.graph_url) == (
        "https://api.instagram.com", "https://www.instagram.com", "https://graph.instagram.com")
    assert (client.transport.timeout, client.transport.deadline) == ((5.0, 20.0), 30.0)


def test_configured_hosts_lose_their_trailing_slashes_and_nothing_else():
    client = InstagramClient(api_url="http://api.testX/", www_url="http://www.testX//",
                             graph_url="http://graph.testX/")
    kwargs = {"client_id": "1", "redirect_uri": "https://x.test/cb", "state": "s"}
    basic = client.authorize_url(flavour=Flavour.BASIC_DISPLAY, scopes=["user_profile"],
                                 **kwargs)
    login = client.authorize_url(flavour=Flavour.INSTAGRAM_LOGIN,
                                 scopes=["instagram_business_basic"], **kwargs)
    assert basic.startswith("http://api.testX/oauth/authorize?")
    assert login.startswith("http://www.testX/oauth/authorize?")
    assert client.graph_url == "http://graph.testX"


def test_a_graph_url_with_a_trailing_slash_reaches_the_endpoints(fake):
    fake.add_app(CLIENT_ID, SECRET, ["https://x.test/cb"], flavour="instagram_login")
    token = fake.mint_token(client_id=CLIENT_ID, username="shop", kind="long")
    client = InstagramClient(graph_url=fake.url + "/", read_timeout=0.5)
    assert client.me(access_token=token).username == "shop"
    assert [call.raw_path for call in fake.calls("/me")] == ["/me"]


def test_the_client_names_itself_to_instagram(fake, client):
    fake.add_app(CLIENT_ID, SECRET, ["https://x.test/cb"], flavour="instagram_login")
    client.me(access_token=fake.mint_token(client_id=CLIENT_ID, username="shop"))
    headers = {name.lower(): value for name, value in fake.calls("/me")[-1].headers.items()}
    assert headers["user-agent"] == "igregistry/1"


def test_a_client_given_a_session_sends_through_it(fake):
    fake.add_app(CLIENT_ID, SECRET, ["https://x.test/cb"], flavour="instagram_login")
    token = fake.mint_token(client_id=CLIENT_ID, username="shop", kind="long")
    session = session_with_deadlines()
    session.headers["X-Registry-Worker"] = "worker-7"
    client = InstagramClient(graph_url=fake.url, read_timeout=0.5, session=session)
    assert client.session is session
    client.me(access_token=token)
    assert fake.calls("/me")[-1].headers.get("X-Registry-Worker") == "worker-7"


def echoing_refusal(endpoint: str, *values: str) -> Fault:
    """Instagram's refusal of `endpoint` quoting `values` bare (not as `key=value`)."""
    text = "Rejected " + " and ".join(values)
    if endpoint == "/oauth/access_token":  # the api host's flat shape
        return json_fault(json.dumps({"error_type": "OAuthException", "code": 400,
                                      "error_message": text}), 400)
    return graph_error(100, message=text)


@pytest.mark.parametrize("endpoint", ["/oauth/access_token", "/access_token",
                                      "/refresh_access_token", "/me"])
def test_every_call_masks_its_own_secrets_when_a_refusal_quotes_them(fake, client, endpoint):
    token, secret = "IGAA" + secrets.token_urlsafe(60), "app-secret-" + secrets.token_hex(16)
    code = "AQ" + secrets.token_urlsafe(60)
    calls = {
        "/oauth/access_token": ((secret, code), lambda: client.exchange_code(
            client_id="1", client_secret=secret, redirect_uri="https://x.test/cb",
            code=code + "#_")),
        "/access_token": ((secret, token), lambda: client.exchange_for_long_lived(
            client_secret=secret, access_token=token)),
        "/refresh_access_token": ((token,), lambda: client.refresh(access_token=token)),
        "/me": ((token,), lambda: client.me(access_token=token)),
    }
    values, call = calls[endpoint]
    fake.inject(endpoint, echoing_refusal(endpoint, *values))
    with pytest.raises(InstagramError) as caught:
        call()
    shown = str(caught.value)
    assert shown.startswith("Rejected [redacted]"), shown
    for value in values:
        assert value not in shown and value[-12:] not in shown


def test_the_long_lived_swap_reports_instagrams_usage(fake, client):
    fake.add_app(CLIENT_ID, SECRET, ["https://x.test/cb"], flavour="instagram_login")
    short = fake.mint_token(client_id=CLIENT_ID, username="shop", kind="short")
    fake.usage_headers = {"X-App-Usage": json.dumps({"call_count": 61})}
    token = client.exchange_for_long_lived(client_secret=SECRET, access_token=short)
    assert token.usage == Usage(percent=61)
    assert fake.accepts(token.access_token)


# --- transport ------------------------------------------------------------------------


def token_body(size: int) -> bytes:
    """A refresh answer of exactly `size` bytes (padded)."""
    head = json.dumps({"access_token": TOKEN, "expires_in": 86400, "padding": ""})
    body = head[:-2] + "x" * (size - len(head)) + '"}'
    assert len(body) == size
    return body.encode()


def test_an_answer_of_exactly_the_size_bound_is_read_whole(fake, client):
    """64 KiB, in many reads (each at most 8 KiB): all of it, in order."""
    fake.inject("/refresh_access_token",
                Fault("status", 200, token_body(MAX_BODY_BYTES), "application/json"))
    token = client.refresh(access_token=TOKEN)
    assert (token.access_token, token.expires_in) == (TOKEN, 86400)


@pytest.mark.parametrize("size", [MAX_BODY_BYTES + 1, 5 * MAX_BODY_BYTES])
def test_an_answer_over_the_size_bound_is_a_temporary_failure_not_a_malformed_one(
        fake, client, size):
    fake.inject("/refresh_access_token",
                Fault("status", 200, token_body(size), "application/json"))
    with pytest.raises(Transient) as caught:
        client.refresh(access_token=TOKEN)
    assert type(caught.value) is Transient
    assert "too large" in str(caught.value)


def test_bytes_that_are_not_utf8_beside_the_token_do_not_spoil_the_answer(fake, client):
    body = (b'{"access_token": "' + TOKEN.encode() + b'", "expires_in": 86400, '
            b'"note": "caf\xe9 \xff\xfe"}')
    fake.inject("/refresh_access_token", Fault("status", 200, body, "application/json"))
    token = client.refresh(access_token=TOKEN)
    assert (token.access_token, token.expires_in) == (TOKEN, 86400)


@contextmanager
def raw_server(answer: Callable[[socket.socket], None], *, tls: ssl.SSLContext | None = None):
    """A one-connection-at-a-time HTTP server that reads a request and calls `answer`
    with the connection; yields its base URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                conn.settimeout(5)
                if tls is not None:
                    conn = tls.wrap_socket(conn, server_side=True)
                conn.recv(65536)
                answer(conn)
            except OSError:
                pass
            finally:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    scheme = "https" if tls else "http"
    try:
        yield f"{scheme}://127.0.0.1:{listener.getsockname()[1]}", stop
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_an_oversize_answer_is_refused_as_soon_as_the_bound_is_passed():
    """Headers promising a megabyte, 100 KB sent, then nothing: the call stops at the bound,
    it does not wait for the rest (nor for its deadline)."""

    def answer(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000000\r\n\r\n" + b"x" * 100_000)
        stop.wait(3)

    with raw_server(answer) as (url, stop):
        client = InstagramClient(graph_url=url, connect_timeout=1, read_timeout=2, deadline=2)
        started = time.monotonic()
        with pytest.raises(Transient) as caught:
            client.refresh(access_token=TOKEN)
        elapsed = time.monotonic() - started
    assert "too large" in str(caught.value)
    assert elapsed < 1.5, elapsed


def self_signed(tmp_path) -> tuple[ssl.SSLContext, str]:
    """A TLS server context for 127.0.0.1 and the path of its certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, str(cert_path)


def test_the_deadline_holds_over_https_too(tmp_path):
    """Instagram is reached over HTTPS: a server trickling its answer one byte every 0.1 s
    (for 4 s, then it hangs up) is cut off at the 1 s deadline there as well."""
    context, cert = self_signed(tmp_path)

    def answer(conn: socket.socket) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 99":
            if stop.wait(0.1):
                return
            conn.sendall(bytes([byte]))

    with raw_server(answer, tls=context) as (url, stop):
        session = session_with_deadlines()
        # Trust this certificate only (an environment's REQUESTS_CA_BUNDLE would win).
        session.trust_env, session.verify = False, cert
        client = InstagramClient(graph_url=url, connect_timeout=1, read_timeout=1,
                                 deadline=1, session=session)
        started = time.monotonic()
        with pytest.raises(Transient) as caught:
            client.refresh(access_token=TOKEN)
        elapsed = time.monotonic() - started
    assert "within 1 s" in str(caught.value)
    assert elapsed < 2.5, elapsed


def test_the_deadline_holds_on_a_kept_alive_connection():
    """The second call reuses the first call's connection (no new connect): the deadline
    still cuts it off when the server trickles the second answer."""
    fast = json.dumps({"access_token": TOKEN, "expires_in": 86400}).encode()

    def answer(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(fast), fast))
        conn.recv(65536)  # the second request, on the same connection
        for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 99":
            if stop.wait(0.1):
                return
            conn.sendall(bytes([byte]))

    with raw_server(answer) as (url, stop):
        client = InstagramClient(graph_url=url, connect_timeout=1, read_timeout=1, deadline=1)
        assert client.refresh(access_token=TOKEN).expires_in == 86400
        started = time.monotonic()
        with pytest.raises(Transient) as caught:
            client.refresh(access_token=TOKEN)
        elapsed = time.monotonic() - started
    assert "within 1 s" in str(caught.value)
    assert elapsed < 2.5, elapsed


def test_a_call_in_flight_does_not_hold_up_the_process_exit():
    """A worker that exits while a call waits on Instagram exits at once: the deadline's
    watchdog is no reason to stay (the call's deadline here is 20 s)."""

    def answer(conn: socket.socket) -> None:
        stop.wait(10)  # says nothing

    script = (
        "import sys, threading, time\n"
        "from accounts.instagram import InstagramClient\n"
        "client = InstagramClient(graph_url=sys.argv[1], read_timeout=20, deadline=20)\n"
        "threading.Thread(target=client.refresh, kwargs={'access_token': 'IGAA' + 'x' * 40},\n"
        "                 daemon=True).start()\n"
        "time.sleep(0.5)\n"
    )
    # A call in this process too, so that mutation testing (which runs only the tests that
    # reach the code) runs this one: nothing listens there, it fails at once.
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(Transient):
        InstagramClient(graph_url=f"http://127.0.0.1:{port}").refresh(access_token=TOKEN)
    with raw_server(answer) as (url, stop):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", script, url], check=True, timeout=30,
                       cwd=Path(__file__).resolve().parent.parent)
        elapsed = time.monotonic() - started
    assert elapsed < 8, elapsed


def test_a_redirect_is_not_followed(fake, client):
    """An answer that sends the call elsewhere is a refusal: the token is not carried on."""
    fake.add_app(CLIENT_ID, SECRET, ["https://x.test/cb"], flavour="instagram_login")
    token = fake.mint_token(client_id=CLIENT_ID, username="shop")
    fake.inject("/refresh_access_token", Fault(
        "status", 302, b"", headers=(("Location", f"{fake.url}/me?fields=id,username"),)))
    with pytest.raises(InstagramError) as caught:
        client.refresh(access_token=token)
    assert caught.value.status == 302
    assert fake.calls("/me") == []


def test_a_session_with_deadlines_also_works_outside_a_call(fake):
    session = session_with_deadlines()
    answer = session.get(f"{fake.url}/me", params={"access_token": "unknown"}, timeout=2)
    assert answer.status_code == 400 and "error" in answer.json()


# --- usage: bounded JSON, integers, the usage headers ----------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_json_nested_up_to_twenty_deep_is_read_deeper_is_not():
    assert json_depth_ok(nested(MAX_JSON_DEPTH)) and not json_depth_ok(nested(21))
    assert loads_bounded(nested(20)) is not None and loads_bounded(nested(21)) is None
    assert loads_bounded('{"a": ' * 20 + "1" + "}" * 20) is not None
    assert loads_bounded('{"a": ' * 21 + "1" + "}" * 21) is None
    # Depth is nesting, not the number of brackets: many siblings are fine.
    assert loads_bounded("[" + ",".join([nested(20)] * 30) + "]") is None
    assert loads_bounded("[" + ",".join([nested(19)] * 30) + "]") is not None
    # Closing a bracket goes back one level, not to the top nor two down.
    assert loads_bounded("[[[]," + nested(19) + "]]") is None
    assert loads_bounded("[[[]," + nested(18) + "]]") == [[[], json.loads(nested(18))]]


def test_brackets_inside_strings_do_not_count_as_nesting():
    inside = "[" * 40 + "{" * 40
    assert loads_bounded(json.dumps([inside])) == [inside]
    # An escaped quote does not end the string; the brackets after it are still inside.
    quoted = 'say \\"' + "[" * 30
    assert loads_bounded('["' + quoted + '"]') == ['say "' + "[" * 30]
    # An escaped backslash does end the escape: the quote after it closes the string, so
    # the brackets that follow are real and too deep.
    assert loads_bounded('["a\\\\", ' + nested(20) + "]") is None
    assert loads_bounded('["a\\\\", ' + nested(19) + "]") == ["a\\", json.loads(nested(19))]
    # The first character of the first string is not escaped by anything before it.
    assert loads_bounded('["", ' + nested(20) + "]") is None
    assert loads_bounded('["", ' + nested(19) + "]") == ["", json.loads(nested(19))]


def test_loads_bounded_size_bound_and_long_integers():
    assert loads_bounded('"' + "x" * 98 + '"', max_chars=100) == "x" * 98
    assert loads_bounded('"' + "x" * 99 + '"', max_chars=100) is None
    assert loads_bounded("") is None and loads_bounded(None) is None
    assert loads_bounded("{not json") is None
    assert loads_bounded("1" * 64) == int("1" * 64)
    assert loads_bounded("1" * 65) == "1" * 65  # too long for an int: kept as text
    assert loads_bounded("[" + "9" * 5000 + "]") == ["9" * 5000]


@pytest.mark.parametrize(("value", "expected"), [
    (7, 7), (-7, -7), ("7", 7), (" 42 ", 42), ("+5", 5), ("-5", -5), ("0", 0),
    ("9" * 20, int("9" * 20)), ("9" * 21, None), ("", None), ("+", None), ("-", None),
    ("1.5", None), ("1e3", None), ("٣", None), ("²", None), ("X5", None), ("+-5", None),
    ("5-", None), (True, None), (False, None),
    (1.0, None), (None, None), ([1], None),
])
def test_as_int_takes_only_integers(value, expected):
    assert as_int(value) == expected
    assert type(as_int(value)) is (int if expected is not None else type(None))


def test_as_int_bounds_are_inclusive():
    assert [as_int(n, low=1, high=3) for n in (0, 1, 3, 4)] == [None, 1, 3, None]
    assert as_int("3", low=3, high=3) == 3 and as_int("4", high=3) is None
    assert as_int(-1, low=0) is None and as_int(10**9, low=0) == 10**9

    class Count(int):
        pass

    assert type(as_int(Count(5))) is int


def app_usage(**values) -> dict[str, str]:
    return {"X-App-Usage": json.dumps(values)}


def business_usage(*entries) -> dict[str, str]:
    return {"X-Business-Use-Case-Usage": json.dumps({"17841400000000001": list(entries)})}


def test_usage_percentages_each_quota_counted_and_bounded():
    for key in ("call_count", "total_cputime", "total_time"):
        assert Usage.from_headers(app_usage(**{key: 77})) == Usage(percent=77)
        assert Usage.from_headers(business_usage({key: 66})) == Usage(percent=66)
    assert Usage.from_headers(app_usage(call_count=-20)) == Usage(percent=0)
    assert Usage.from_headers(business_usage(
        {"call_count": -20, "total_cputime": -5, "total_time": "-1"})) == Usage(percent=0)
    assert Usage.from_headers(app_usage(call_count="55")) == Usage(percent=55)
    assert Usage.from_headers(app_usage(call_count=10**6)) == Usage(percent=MAX_PERCENT)
    assert Usage.from_headers(app_usage(call_count=MAX_PERCENT)).percent == MAX_PERCENT
    assert Usage.from_headers(app_usage()) == Usage(percent=0, regain_seconds=None)


def test_usage_regain_time_in_seconds_bounded_to_a_day():
    def regain(minutes):
        return Usage.from_headers(business_usage(
            {"call_count": 100, "estimated_time_to_regain_access": minutes})).regain_seconds

    assert regain(5) == 300 and regain("2") == 120
    assert regain(0) is None and regain(-5) is None and regain("soon") is None
    assert regain(MAX_REGAIN_MINUTES) == regain(10**6) == MAX_REGAIN_MINUTES * 60
    # The longest wait of all the entries.
    assert Usage.from_headers(business_usage(
        {"estimated_time_to_regain_access": 3}, {"estimated_time_to_regain_access": 9},
        {"estimated_time_to_regain_access": 4})).regain_seconds == 540


def test_usage_entries_of_another_shape_are_skipped_not_fatal():
    header = {"X-Business-Use-Case-Usage": json.dumps({
        "1": "not a list", "2": ["not an object", 7, {"call_count": 35}], "4": 7, "5": None,
        "3": [{"total_time": 12, "estimated_time_to_regain_access": 1}]})}
    assert Usage.from_headers(header) == Usage(percent=35, regain_seconds=60)
    # Only a readable object counts as a header at all.
    assert Usage.from_headers({"X-App-Usage": "[1, 2]"}) is None
    assert Usage.from_headers({"X-Business-Use-Case-Usage": "[]"}) is None
    assert Usage.from_headers({"X-Business-Use-Case-Usage": "{}"}) == Usage(percent=0)
    assert Usage.from_headers({"X-App-Usage": "[]", **business_usage({"call_count": 8})}) \
        == Usage(percent=8)
    assert Usage.from_headers({**app_usage(call_count=8), "X-Business-Use-Case-Usage": "7"}) \
        == Usage(percent=8)


def test_a_usage_header_over_its_size_bound_is_ignored():
    padding = " " * (MAX_HEADER_CHARS - len(json.dumps({"call_count": 50})))
    fits = json.dumps({"call_count": 50}) + padding
    assert len(fits) == MAX_HEADER_CHARS
    assert Usage.from_headers({"X-App-Usage": fits}) == Usage(percent=50)
    assert Usage.from_headers({"X-App-Usage": fits + " "}) is None
    business = json.dumps({"1": [{"call_count": 50}]})
    fits = business + " " * (MAX_HEADER_CHARS - len(business))
    assert Usage.from_headers({"X-Business-Use-Case-Usage": fits}) == Usage(percent=50)
    assert Usage.from_headers({"X-Business-Use-Case-Usage": fits + " "}) is None


# --- errors: Instagram's refusals as exceptions -----------------------------------------

USAGE = Usage(percent=100, regain_seconds=300)


def graph_body(code=None, subcode=None, message="Something went wrong") -> dict:
    error = {"message": message, "type": "OAuthException"}
    if code is not None:
        error["code"] = code
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


@pytest.mark.parametrize(("code", "http_status", "kind"), [
    (190, 400, TokenInvalid), (10, 400, TokenInvalid), (200, 403, TokenInvalid),
    (299, 400, TokenInvalid), ("190", 400, TokenInvalid), (300, 400, InstagramError),
    (199, 400, InstagramError), (100, 400, InstagramError), (None, 400, InstagramError),
    (4, 400, RateLimited), (17, 400, RateLimited), (32, 400, RateLimited),
    (613, 400, RateLimited), (80002, 400, RateLimited), (100, 429, RateLimited),
    (190, 429, TokenInvalid), (1, 400, Transient), (2, 400, Transient), (100, 500, Transient),
    (100, 503, Transient), (100, 499, InstagramError), (3, 400, InstagramError),
    (MAX_CODE + 190, 400, InstagramError),
])
def test_graph_errors_are_classified_by_code_then_status(code, http_status, kind):
    exc = error_from(http_status, graph_body(code, 460), USAGE, "/me", ())
    assert type(exc) is kind
    assert (exc.status, exc.usage, exc.message) == (http_status, USAGE, "Something went wrong")
    assert exc.code == (as_int(code, low=0, high=MAX_CODE))
    assert exc.subcode == 460


def test_graph_error_codes_and_subcodes_are_32_bit_integers():
    exc = error_from(400, graph_body(MAX_CODE, MAX_CODE), None, "/me", ())
    assert (exc.code, exc.subcode) == (MAX_CODE, MAX_CODE)
    exc = error_from(400, graph_body(MAX_CODE + 1, -1), None, "/me", ())
    assert (exc.code, exc.subcode) == (None, None)
    exc = error_from(400, graph_body(-1, MAX_CODE + 1), None, "/me", ())
    assert (exc.code, exc.subcode) == (None, None)
    exc = error_from(400, graph_body(0, 0), None, "/me", ())
    assert (exc.code, exc.subcode) == (0, 0)
    exc = error_from(400, graph_body("17", "463"), None, "/me", ())
    assert (type(exc), exc.code, exc.subcode) == (RateLimited, 17, 463)


def test_a_graph_error_without_a_message_gets_one():
    for message in (None, "", 42, ["x"]):
        exc = error_from(400, graph_body(190, message=message), None, "/me", ())
        assert type(exc) is TokenInvalid and isinstance(exc.message, str) and exc.message


@pytest.mark.parametrize(("http_status", "kind"), [
    (400, InstagramError), (499, InstagramError), (429, RateLimited), (500, Transient),
    (502, Transient),
])
def test_the_flat_error_shape_of_the_code_exchange(http_status, kind):
    body = {"error_type": "OAuthException", "code": 400,
            "error_message": "Matching code was not found or was already used"}
    exc = error_from(http_status, body, USAGE, "/oauth/access_token", ())
    assert type(exc) is kind
    assert (exc.status, exc.code, exc.usage) == (http_status, 400, USAGE)
    assert exc.message == "Matching code was not found or was already used"


def test_the_flat_shape_falls_back_to_the_error_type_then_a_word():
    exc = error_from(400, {"error_type": "OAuthException"}, None, "/oauth/access_token", ())
    assert (type(exc), exc.message, exc.code) == (InstagramError, "OAuthException", None)
    exc = error_from(400, {"error_message": "", "error_type": ""}, None, "/x", ())
    assert type(exc) is InstagramError and exc.message and isinstance(exc.message, str)
    exc = error_from(400, {"error_message": 5, "code": "9"}, None, "/x", ())
    assert (type(exc), exc.code) == (InstagramError, 9) and isinstance(exc.message, str)
    codes = [error_from(400, {"error_message": "m", "code": code}, None, "/x", ()).code
             for code in (0, -1, MAX_CODE, MAX_CODE + 1)]
    assert codes == [0, None, MAX_CODE, None]


@pytest.mark.parametrize(("http_status", "body", "kind"), [
    (429, None, RateLimited), (500, None, Transient), (599, "<html>", Transient),
    (200, None, MalformedAnswer), (299, ["a list"], MalformedAnswer),
    (200, {"error": "a string"}, MalformedAnswer), (300, None, InstagramError),
    (199, None, InstagramError), (404, {"other": 1}, InstagramError),
    (499, None, InstagramError),
])
def test_an_answer_of_no_known_error_shape_is_classified_by_status(http_status, body, kind):
    exc = error_from(http_status, body, USAGE, "/me", ())
    assert type(exc) is kind
    assert (exc.status, exc.code, exc.usage) == (http_status, None, USAGE)
    assert "/me" in exc.message


def test_a_rate_limit_says_how_long_when_instagram_did():
    exc = error_from(429, graph_body(4), USAGE, "/me", ())
    assert exc.retry_after == 300
    assert error_from(429, graph_body(4), None, "/me", ()).retry_after is None
    assert error_from(429, graph_body(4), Usage(percent=100), "/me", ()).retry_after is None


def test_error_text_shows_code_subcode_and_status():
    assert str(error_from(400, graph_body(190, 460, "Gone"), None, "/me", ())) == \
        "Gone (code 190/460) [HTTP 400]"
    assert str(error_from(400, graph_body(190, None, "Gone"), None, "/me", ())) == \
        "Gone (code 190) [HTTP 400]"
    assert str(InstagramError("Plain")) == "Plain"
    assert str(InstagramError("Coded", code=0)) == "Coded (code 0)"


def test_secrets_in_an_error_message_masked_cut_and_made_printable():
    six, five = "abc123", "abc12"
    exc = error_from(400, graph_body(100, message=f"bad {six} and {five}"), None, "/me",
                     (six, five, ""))
    assert exc.message == f"bad [redacted] and {five}"  # short values are not masked
    exc = error_from(400, graph_body(100, message="line\none\x1b[2J\x00end"), None, "/me", ())
    assert exc.message == "line one [2J end"
    exc = error_from(400, graph_body(100, message="y" * 290 + " " + six * 3), None, "/me",
                     (six,))
    assert exc.message == ("y" * 290 + " [redacted]")[:MESSAGE_CHARS]
    assert len(error_from(400, graph_body(100, message="z" * 1000), None, "/me", ())
               .message) == MESSAGE_CHARS
    exc = error_from(400, {"error_message": f"use access_token={six}xyz please"}, None,
                     "/oauth/access_token", ())
    assert exc.message == "use access_token=[redacted] please"


# --- callback: the redirect and pasted URLs ---------------------------------------------


def test_a_code_or_state_of_at_most_2048_characters_is_kept_a_longer_one_dropped():
    ok, long = "A" * MAX_PARAM_CHARS, "A" * (MAX_PARAM_CHARS + 1)
    assert parse_callback({"code": ok, "state": ok}) == CallbackParams(ok, ok, None, None)
    assert parse_callback({"code": long, "state": long}) == CallbackParams(None, None, None,
                                                                           None)
    assert parse_pasted(ok).code == ok and parse_pasted(long).code is None


@pytest.mark.parametrize(("char", "kept"), [
    ("\x00", False), ("\x1f", False), (" ", True), ("~", True), ("\x7f", False),
    ("\x85", False), ("\x9f", False), ("\xa0", True), ("é", True),
])
def test_a_code_or_state_with_a_control_character_is_dropped(char, kept):
    value = f"AQ{char}Bx"
    params = parse_callback({"code": value, "state": value})
    assert (params.code, params.state) == ((value, value) if kept else (None, None))


def test_the_code_and_state_lose_the_fragment_instagram_appends():
    params = parse_callback({"code": " AQBx#_ ", "state": "st-1#_"})
    assert (params.code, params.state) == ("AQBx", "st-1")
    params = parse_callback({"code": "AQBx#one#_", "state": "st-1#two#_"})
    assert (params.code, params.state) == ("AQBx", "st-1")  # cut at the first "#"
    assert parse_callback({"code": "#_", "state": "#_"}) == CallbackParams(None, None, None,
                                                                           None)
    assert parse_callback({}) == CallbackParams(None, None, None, None)


def test_a_denial_is_kept_printable_and_bounded():
    params = parse_callback({"error": "access_denied\x1b[2J\n" + "e" * 300,
                             "error_reason": "user_denied",
                             "error_description": " The user denied\x00 " + "d" * 600})
    assert params.error == ("access_denied[2J" + "e" * 300)[:200]
    assert params.error_description == (" The user denied " + "d" * 600)[:500].strip()
    assert parse_callback({"error": "x", "error_reason": "user_denied"}).error_description \
        == "user_denied"
    assert parse_callback({"error": "\x00\n\t", "error_description": ""}) == \
        CallbackParams(None, None, None, None)
    # Cut first, then blanks stripped: what is left is never blank-ended.
    assert parse_callback({"error": "e" * 199 + " x"}).error == "e" * 199


@pytest.mark.parametrize(("text", "code", "state"), [
    ("https://x.test/cb?code=AQBx&state=st#_", "AQBx", "st"),
    ("http://x.test/cb?state=st&code=AQBx", "AQBx", "st"),
    ("x.test/cb?code=AQBx&state=st", "AQBx", "st"),
    ("https://x.test/cb?code=&state=st", None, "st"),
    ("https://x.test/cb", None, None),
    ("http://[bad/cb?code=AQBx", None, None),
    ("  AQBx#_\n", "AQBx", None),
    ("AQ\x07Bx", None, None),
])
def test_what_staff_paste(text, code, state):
    params = parse_pasted(text)
    assert (params.code, params.state, params.error, params.error_description) == (
        code, state, None, None)


# --- redaction --------------------------------------------------------------------------


def test_mask_shows_the_last_four_characters_of_a_long_secret_only():
    assert mask(None) == "" and mask("") == ""
    assert mask("12345678") == "…"
    assert mask("123456789") == "…6789"


def test_redact_secrets_masks_each_secret_parameter_whatever_its_case():
    text = "GET /x?ACCESS_TOKEN=abc&client_secret=s3&code=c0de&state=st&user=u 'signed_request=q'"
    assert redact_secrets(text) == (
        "GET /x?ACCESS_TOKEN=[redacted]&client_secret=[redacted]&code=[redacted]&"
        "state=[redacted]&user=u 'signed_request=[redacted]'")


def test_the_log_filter_rewrites_only_records_that_carry_a_secret():
    log_filter = RedactSecretsFilter()
    secret = logging.LogRecord("urllib3", logging.DEBUG, __file__, 1,
                               '"GET /me?access_token=%s HTTP/1.1" %s', ("IGAAsecret", 200),
                               None)
    assert log_filter.filter(secret) is True
    assert (secret.msg, secret.args) == ('"GET /me?access_token=[redacted] HTTP/1.1" 200', None)
    assert secret.getMessage() == '"GET /me?access_token=[redacted] HTTP/1.1" 200'

    plain = logging.LogRecord("urllib3", logging.DEBUG, __file__, 1, "%s calls", (3,), None)
    assert log_filter.filter(plain) is True
    assert (plain.msg, plain.args) == ("%s calls", (3,))

    broken = logging.LogRecord("urllib3", logging.DEBUG, __file__, 1, "%s and %s", ("a",),
                               None)
    assert log_filter.filter(broken) is True
    assert (broken.msg, broken.args) == ("%s and %s", ("a",))


def test_urllib3s_request_lines_pass_through_the_filter():
    """Whatever logging the host application configured."""
    captured = []

    class Keep(logging.Handler):
        def emit(self, record):
            captured.append(record.getMessage())

    logger = logging.getLogger("urllib3.connectionpool")
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.debug('"%s %s %s" %s', "GET", "/refresh_access_token?access_token=IGAAsecret",
                     "HTTP/1.1", 200)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert captured == ['"GET /refresh_access_token?access_token=[redacted] HTTP/1.1" 200']


def test_a_temporary_failure_says_which_one_it_was(fake, client):
    """Unreachable, too slow to answer, or cut off by the deadline: three diagnoses."""
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(Transient) as unreachable:
        InstagramClient(graph_url=f"http://127.0.0.1:{port}").refresh(access_token=TOKEN)
    assert str(unreachable.value) == (
        "Could not reach Instagram for /refresh_access_token (ConnectionError).")

    fake.inject("/refresh_access_token", delay(1.5))
    slow = InstagramClient(graph_url=fake.url, read_timeout=0.3, deadline=5)
    with pytest.raises(Transient) as timed_out:
        slow.refresh(access_token=TOKEN)
    assert str(timed_out.value) == "Instagram did not answer /refresh_access_token in time."


def test_an_error_carries_its_message_as_its_argument():
    """What reads an exception's arguments (its repr, Celery's record of a failed task, a
    pickled copy) finds the message."""
    exc = error_from(400, graph_body(190, message="Session expired"), None, "/me", ())
    assert exc.args == ("Session expired",)
    assert repr(exc) == "TokenInvalid('Session expired')"
    copy = pickle.loads(pickle.dumps(exc))
    assert (type(copy), copy.args, str(copy)) == (TokenInvalid, exc.args, str(exc))


@pytest.mark.parametrize(("http_status", "body", "kind"), [
    (300, {"access_token": TOKEN, "expires_in": 86400}, InstagramError),
    (200, {"access_token": TOKEN, "expires_in": 86400,
           "error": {"code": 190, "message": "Session expired"}}, TokenInvalid),
])
def test_only_a_2xx_answer_without_an_error_is_an_answer(fake, client, http_status, body, kind):
    fake.inject("/refresh_access_token", json_fault(json.dumps(body), http_status))
    with pytest.raises(InstagramError) as caught:
        client.refresh(access_token=TOKEN)
    assert type(caught.value) is kind and caught.value.status == http_status


def test_a_refusal_of_no_known_shape_names_the_endpoint(fake, client):
    fake.inject("/refresh_access_token", json_fault('"no"', 404))
    with pytest.raises(InstagramError) as caught:
        client.refresh(access_token=TOKEN)
    assert caught.value.message == "Instagram refused /refresh_access_token."
