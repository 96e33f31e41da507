"""Tests of `accounts.instagram.InstagramClient` against the fake Instagram over real HTTP.

The client is built directly (no Django settings involved) and points its three hosts at
the fake; nothing here mocks `requests`. No database is needed.
"""

from __future__ import annotations

import json
import logging
import secrets
import traceback
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
import requests

from accounts.instagram import (
    Flavour,
    InstagramClient,
    InstagramError,
    LongLivedToken,
    RateLimited,
    ShortLivedToken,
    TokenInvalid,
    Transient,
    Usage,
    clean_code,
    parse_callback,
    parse_pasted,
)
from tests.conftest import CALLBACK_URI, OTHER_SITE_URI, SECRETS, allow_at_fake
from tests.fake_instagram import (
    FakeInstagram,
    Fault,
    delay,
    disconnect,
    garbage,
    graph_error,
    rate_limited,
    status,
)

LONG_LIFETIME = 60 * 24 * 3600
SCOPES = {
    "basic_display": ("user_profile", "user_media"),
    "instagram_login": ("instagram_business_basic", "instagram_business_manage_messages"),
}
# Odd, so it is not representable as a float: a client that went through float would fail.
BIG_USER_ID = "17841405793187219"
BIG_ID = "17841405793187221"
USERNAME = "shop_owner"
FLAVOURS = ["basic_display", "instagram_login"]


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def client(fake: FakeInstagram) -> InstagramClient:
    return InstagramClient(
        api_url=fake.url, www_url=fake.url, graph_url=fake.url, read_timeout=0.5
    )


def register(fake: FakeInstagram, flavour: str) -> tuple[str, str]:
    client_id, secret = SECRETS[flavour]
    fake.add_app(client_id, secret, [CALLBACK_URI, OTHER_SITE_URI], flavour=flavour,
                 name=f"{flavour} app")
    return client_id, secret


def authorize(client: InstagramClient, fake: FakeInstagram, flavour: str, *,
              username: str = USERNAME, redirect_uri: str = CALLBACK_URI,
              state: str = "state-123") -> str:
    """Walk the dialog at the fake; return the redirect Location (with its `#_`)."""
    client_id, _ = SECRETS[flavour]
    url = client.authorize_url(flavour=Flavour(flavour), client_id=client_id,
                               redirect_uri=redirect_uri, scopes=SCOPES[flavour], state=state)
    return allow_at_fake(url, username=username)


def get_code(client: InstagramClient, fake: FakeInstagram, flavour: str, **kwargs: Any) -> str:
    code = parse_pasted(authorize(client, fake, flavour, **kwargs)).code
    assert code
    return code


def mint(fake: FakeInstagram, *, age: timedelta = timedelta(days=2), kind: str = "long",
         flavour: str = "instagram_login") -> str:
    register(fake, flavour)
    return fake.mint_token(client_id=SECRETS[flavour][0], username=USERNAME, kind=kind, age=age)


def assert_no_leak(exc: BaseException, *secret_values: str) -> None:
    """No secret (nor a 12-character start or end of one) in anything the exception shows."""
    texts = [str(exc), repr(exc), repr(exc.args), "".join(traceback.format_exception(exc))]
    if isinstance(exc, InstagramError):
        texts.append(exc.message)
    if exc.__cause__ is not None:
        texts += [str(exc.__cause__), repr(exc.__cause__)]
    if exc.__context__ is not None and not exc.__suppress_context__:
        texts += [str(exc.__context__), repr(exc.__context__)]
    for value in secret_values:
        assert value
        for piece in {value, value[:12], value[-12:]}:
            for text in texts:
                assert piece not in text, f"secret piece {piece!r} leaked in {text!r}"


def call_endpoint(client: InstagramClient, endpoint: str) -> tuple[tuple[str, ...], Callable]:
    """A call to `endpoint` carrying fresh secrets: (secrets, the call)."""
    token = "IGAA" + secrets.token_urlsafe(110)
    code = "AQ" + secrets.token_urlsafe(96)
    secret = "app-secret-" + secrets.token_hex(16)
    calls = {
        "/oauth/access_token": (
            (code, secret),
            lambda: client.exchange_code(client_id="1000000000000001", client_secret=secret,
                                         redirect_uri=CALLBACK_URI, code=code + "#_"),
        ),
        "/access_token": (
            (token, secret),
            lambda: client.exchange_for_long_lived(client_secret=secret, access_token=token),
        ),
        "/refresh_access_token": ((token,), lambda: client.refresh(access_token=token)),
        "/me": ((token,), lambda: client.me(access_token=token)),
    }
    return calls[endpoint]


def sent_values(fake: FakeInstagram, endpoint: str) -> set[str]:
    call = fake.calls(endpoint)[-1]
    return set(call.query.values()) | set(call.form.values())


ENDPOINTS = ["/oauth/access_token", "/access_token", "/refresh_access_token", "/me"]


# ----------------------------------------------------------------------------- authorize


def test_authorize_url_basic_display_uses_api_host() -> None:
    url = InstagramClient().authorize_url(
        flavour=Flavour.BASIC_DISPLAY, client_id="42", redirect_uri=CALLBACK_URI,
        scopes=["user_profile", "user_media"], state="st-1",
    )
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "api.instagram.com",
                                                        "/oauth/authorize")
    assert parse_qs(parts.query) == {
        "client_id": ["42"], "redirect_uri": [CALLBACK_URI], "scope": ["user_profile,user_media"],
        "response_type": ["code"], "state": ["st-1"],
    }


@pytest.mark.parametrize("force", [False, True])
def test_authorize_url_instagram_login_uses_www_host(force: bool) -> None:
    url = InstagramClient().authorize_url(
        flavour=Flavour.INSTAGRAM_LOGIN, client_id="42", redirect_uri=OTHER_SITE_URI,
        scopes=("instagram_business_basic", "instagram_business_manage_comments"),
        state="st-2", force_authentication=force,
    )
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "www.instagram.com",
                                                        "/oauth/authorize")
    assert parse_qs(parts.query) == {
        "client_id": ["42"], "redirect_uri": [OTHER_SITE_URI],
        "scope": ["instagram_business_basic,instagram_business_manage_comments"],
        "response_type": ["code"], "state": ["st-2"], "enable_fb_login": ["0"],
        "force_authentication": ["1" if force else "0"],
    }


def test_authorize_url_hosts_follow_configuration() -> None:
    client = InstagramClient(api_url="http://api.test/", www_url="http://www.test/",
                             graph_url="http://graph.test/")
    kwargs = {"client_id": "1", "redirect_uri": CALLBACK_URI, "state": "s"}
    basic = client.authorize_url(flavour=Flavour.BASIC_DISPLAY, scopes=["user_profile"], **kwargs)
    login = client.authorize_url(flavour=Flavour.INSTAGRAM_LOGIN,
                                 scopes=["instagram_business_basic"], **kwargs)
    assert basic.startswith("http://api.test/oauth/authorize?")
    assert login.startswith("http://www.test/oauth/authorize?")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_authorize_url_opens_the_dialog(fake: FakeInstagram, client: InstagramClient,
                                        flavour: str) -> None:
    register(fake, flavour)
    url = client.authorize_url(flavour=Flavour(flavour), client_id=SECRETS[flavour][0],
                               redirect_uri=CALLBACK_URI, scopes=SCOPES[flavour], state="s-9")
    page = requests.get(url, timeout=5)
    assert page.status_code == 200
    assert f"{flavour} app" in page.text
    for scope in SCOPES[flavour]:
        assert f"<li>{scope}</li>" in page.text
    location = allow_at_fake(url, username=USERNAME)
    assert parse_pasted(location).state == "s-9"


# ----------------------------------------------------------------------------- lifecycle


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_full_lifecycle(fake: FakeInstagram, client: InstagramClient, flavour: str) -> None:
    client_id, secret = register(fake, flavour)
    fake.add_user(USERNAME, id=BIG_ID, user_id=BIG_USER_ID)

    location = authorize(client, fake, flavour, state="st-life")
    assert location.startswith(CALLBACK_URI + "?") and location.endswith("#_")
    callback = parse_callback(dict(parse_qsl(urlsplit(location).query)))
    pasted = parse_pasted(location)
    assert callback == pasted
    assert pasted.state == "st-life" and pasted.error is None
    assert pasted.code and not pasted.code.endswith("#_") and "#" not in pasted.code

    short = client.exchange_code(client_id=client_id, client_secret=secret,
                                 redirect_uri=CALLBACK_URI, code=pasted.code)
    assert isinstance(short, ShortLivedToken)
    # Basic Display has one id per user; Instagram Login's exchange answers a user_id
    # that can differ from /me's id (the fake: the professional account's).
    assert short.user_id == (BIG_ID if flavour == "basic_display" else BIG_USER_ID)
    assert fake.token_info(short.access_token)["kind"] == "short"
    sent = fake.calls("/oauth/access_token")[-1].form
    assert sent["code"] == pasted.code and sent["grant_type"] == "authorization_code"

    long = client.exchange_for_long_lived(client_secret=secret, access_token=short.access_token)
    assert isinstance(long, LongLivedToken)
    assert fake.token_info(long.access_token)["kind"] == "long"
    assert LONG_LIFETIME - 5 <= long.expires_in <= LONG_LIFETIME

    fake.advance(25 * 3600)
    refreshed = client.refresh(access_token=long.access_token)
    assert refreshed.access_token != long.access_token
    assert fake.token_info(refreshed.access_token)["kind"] == "long"
    assert LONG_LIFETIME - 5 <= refreshed.expires_in <= LONG_LIFETIME
    assert fake.calls("/refresh_access_token")[-1].method == "GET"

    profile = client.me(access_token=refreshed.access_token)
    assert (profile.id, profile.username) == (BIG_ID, USERNAME)
    versioned = client.me(access_token=refreshed.access_token, api_version="v21.0")
    assert (versioned.id, versioned.username) == (BIG_ID, USERNAME)
    assert [c.raw_path for c in fake.calls("/me")] == ["/me", "/v21.0/me"]


@pytest.mark.parametrize("shape", ["flat", "permissions", "data"])
def test_exchange_shapes(fake: FakeInstagram, client: InstagramClient, shape: str) -> None:
    assert int(float(BIG_USER_ID)) != int(BIG_USER_ID)  # not float-safe
    client_id, secret = register(fake, "instagram_login")
    user = fake.add_user("big_id_owner", id=BIG_ID, user_id=BIG_USER_ID)
    fake.exchange_shape = shape
    code = get_code(client, fake, "instagram_login", username="big_id_owner")
    short = client.exchange_code(client_id=client_id, client_secret=secret,
                                 redirect_uri=CALLBACK_URI, code=code)
    assert type(short.user_id) is str
    assert short.user_id == user.user_id == BIG_USER_ID
    assert fake.token_info(short.access_token)["username"] == "big_id_owner"
    expected = () if shape == "flat" else SCOPES["instagram_login"]
    assert short.permissions == expected
    assert isinstance(short.permissions, tuple)


@pytest.mark.parametrize("shape", ["flat", "data"])
def test_me_shapes(fake: FakeInstagram, client: InstagramClient, shape: str) -> None:
    user = fake.add_user(USERNAME, id=BIG_ID, user_id=BIG_USER_ID, account_type="CREATOR")
    token = mint(fake)
    fake.me_shape = shape
    profile = client.me(access_token=token,
                        fields=("id", "username", "account_type", "user_id"))
    assert profile.username == USERNAME
    assert profile.account_type == "CREATOR"
    assert profile.user_id == user.user_id
    # Each id as /me named it: the data envelope carries no `id`, only `user_id`.
    assert profile.id == (user.id if shape == "flat" else None)
    assert type(profile.user_id) is str
    assert fake.calls("/me")[-1].query["fields"] == "id,username,account_type,user_id"

    minimal = client.me(access_token=token)
    assert minimal.username == USERNAME
    assert (minimal.id, minimal.user_id) == ((user.id, None) if shape == "flat"
                                             else (None, user.user_id))


# ----------------------------------------------------------------------------- errors


def test_code_reused(fake: FakeInstagram, client: InstagramClient) -> None:
    client_id, secret = register(fake, "instagram_login")
    code = get_code(client, fake, "instagram_login")
    kwargs = {"client_id": client_id, "client_secret": secret, "redirect_uri": CALLBACK_URI,
              "code": code}
    client.exchange_code(**kwargs)
    with pytest.raises(InstagramError) as info:
        client.exchange_code(**kwargs)
    exc = info.value
    assert not isinstance(exc, TokenInvalid | Transient | RateLimited)
    assert "used" in exc.message and exc.status == 400
    assert_no_leak(exc, code, secret)


def test_code_redirect_mismatch(fake: FakeInstagram, client: InstagramClient) -> None:
    client_id, secret = register(fake, "basic_display")
    code = get_code(client, fake, "basic_display", redirect_uri=CALLBACK_URI)
    with pytest.raises(InstagramError) as info:
        client.exchange_code(client_id=client_id, client_secret=secret,
                             redirect_uri=OTHER_SITE_URI, code=code)
    exc = info.value
    assert not isinstance(exc, TokenInvalid | Transient | RateLimited)
    assert "redirect_uri" in exc.message and exc.status == 400
    assert_no_leak(exc, code, secret)


def test_code_wrong_secret(fake: FakeInstagram, client: InstagramClient) -> None:
    client_id, secret = register(fake, "instagram_login")
    code = get_code(client, fake, "instagram_login")
    wrong = "wrong-secret-" + secrets.token_hex(8)
    with pytest.raises(InstagramError) as info:
        client.exchange_code(client_id=client_id, client_secret=wrong,
                             redirect_uri=CALLBACK_URI, code=code)
    exc = info.value
    assert not isinstance(exc, TokenInvalid | Transient | RateLimited)
    assert "Secret" in exc.message
    assert_no_leak(exc, code, secret, wrong)


TOKEN_INVALID_FAULTS = [
    pytest.param(graph_error(190), 190, None, id="190"),
    pytest.param(graph_error(190, 458), 190, 458, id="190/458"),
    pytest.param(graph_error(190, 460), 190, 460, id="190/460"),
    pytest.param(graph_error(190, 463), 190, 463, id="190/463"),
    pytest.param(graph_error(190, 467), 190, 467, id="190/467"),
    pytest.param(graph_error(190, 463, type="IGApiException"), 190, 463, id="190/463-IGApi"),
    pytest.param(graph_error(10), 10, None, id="10"),
    pytest.param(graph_error(200), 200, None, id="200"),
    pytest.param(graph_error(299), 299, None, id="299"),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("fault", "code", "subcode"), TOKEN_INVALID_FAULTS)
def test_graph_token_invalid(fake: FakeInstagram, client: InstagramClient, endpoint: str,
                             fault: Fault, code: int, subcode: int | None) -> None:
    secret_values, call = call_endpoint(client, endpoint)
    fake.inject(endpoint, fault)
    with pytest.raises(TokenInvalid) as info:
        call()
    exc = info.value
    assert (exc.code, exc.subcode, exc.status) == (code, subcode, 400)
    assert set(secret_values) <= sent_values(fake, endpoint)
    assert_no_leak(exc, *secret_values)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    ("fault", "percent", "retry_after", "http_status", "code"),
    [
        pytest.param(rate_limited(), 100, 300, 429, 4, id="429-code4"),
        pytest.param(rate_limited(http_status=400, code=4,
                                  usage={"call_count": 87, "estimated_time_to_regain_access": 7}),
                     87, 420, 400, 4, id="400-code4"),
        pytest.param(rate_limited(http_status=400, code=17,
                                  usage={"call_count": 10, "total_time": 99}),
                     99, 300, 400, 17, id="400-code17"),
        pytest.param(rate_limited(http_status=400, code=80002), 100, 300, 400, 80002,
                     id="400-code80002"),
    ],
)
def test_rate_limited(fake: FakeInstagram, client: InstagramClient, endpoint: str, fault: Fault,
                      percent: int, retry_after: int, http_status: int, code: int) -> None:
    secret_values, call = call_endpoint(client, endpoint)
    fake.inject(endpoint, fault)
    with pytest.raises(RateLimited) as info:
        call()
    exc = info.value
    assert not isinstance(exc, TokenInvalid)
    assert (exc.status, exc.code) == (http_status, code)
    assert exc.usage is not None
    assert exc.usage.percent == percent
    assert exc.retry_after == retry_after == exc.usage.regain_seconds
    assert_no_leak(exc, *secret_values)


TRANSIENT_FAULTS = [
    pytest.param(graph_error(1), 1, id="graph1"),
    pytest.param(graph_error(2, type="IGApiException"), 2, id="graph2"),
    pytest.param(graph_error(2, http_status=500), 2, id="graph2-500"),
    pytest.param(graph_error(100, http_status=503, message="Service unavailable"), 100,
                 id="graph100-503"),
    pytest.param(status(500), None, id="500"),
    pytest.param(status(503), None, id="503"),
    pytest.param(status(502, ""), None, id="502-empty"),
    pytest.param(garbage(), None, id="garbage"),
    pytest.param(garbage(truncated=True), None, id="garbage-truncated"),
    pytest.param(delay(2), None, id="delay"),
    pytest.param(disconnect(), None, id="disconnect"),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("fault", "code"), TRANSIENT_FAULTS)
def test_transient(fake: FakeInstagram, client: InstagramClient, endpoint: str, fault: Fault,
                   code: int | None) -> None:
    secret_values, call = call_endpoint(client, endpoint)
    fake.inject(endpoint, fault)
    with pytest.raises(Transient) as info:
        call()
    exc = info.value
    assert exc.code == code
    assert set(secret_values) <= sent_values(fake, endpoint)
    if fault.kind in ("delay", "disconnect"):
        # The requests exception names the URL (token included): it must not be kept.
        assert exc.__cause__ is None and exc.__context__ is None
    assert_no_leak(exc, *secret_values)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_unreachable_host(endpoint: str) -> None:
    closed = "http://127.0.0.1:9"
    client = InstagramClient(api_url=closed, www_url=closed, graph_url=closed,
                             connect_timeout=2, read_timeout=0.5)
    secret_values, call = call_endpoint(client, endpoint)
    with pytest.raises(Transient) as info:
        call()
    exc = info.value
    assert endpoint in exc.message
    assert exc.__cause__ is None and exc.__context__ is None
    assert_no_leak(exc, *secret_values)


def test_other_4xx_is_plain_error(fake: FakeInstagram, client: InstagramClient) -> None:
    secret_values, call = call_endpoint(client, "/me")
    fake.inject("/me", graph_error(100, message="(#100) Tried accessing nonexisting field"))
    with pytest.raises(InstagramError) as info:
        call()
    assert type(info.value) is InstagramError and info.value.code == 100
    assert_no_leak(info.value, *secret_values)


def test_refresh_too_young_is_not_token_invalid(fake: FakeInstagram,
                                                client: InstagramClient) -> None:
    token = mint(fake, age=timedelta(hours=23))
    with pytest.raises(InstagramError) as info:
        client.refresh(access_token=token)
    exc = info.value
    assert not isinstance(exc, TokenInvalid)
    assert exc.status == 400 and exc.code != 190
    assert "24 hours" in exc.message
    assert fake.token_info(token)["revoked"] is False
    assert_no_leak(exc, token)


def test_refresh_expired_is_token_invalid(fake: FakeInstagram, client: InstagramClient) -> None:
    token = mint(fake, age=timedelta(days=1))
    fake.advance(60 * 24 * 3600)
    with pytest.raises(TokenInvalid) as info:
        client.refresh(access_token=token)
    exc = info.value
    assert (exc.code, exc.subcode) == (190, 463)
    assert "expired" in exc.message
    assert_no_leak(exc, token)


def test_long_lived_swap_of_expired_short_token(fake: FakeInstagram,
                                                client: InstagramClient) -> None:
    token = mint(fake, kind="short", age=timedelta(hours=2))
    secret = SECRETS["instagram_login"][1]
    with pytest.raises(TokenInvalid) as info:
        client.exchange_for_long_lived(client_secret=secret, access_token=token)
    assert (info.value.code, info.value.subcode) == (190, 463)
    assert_no_leak(info.value, token, secret)


@pytest.mark.parametrize("subcode", [460, None])
def test_revoked_user(fake: FakeInstagram, client: InstagramClient, subcode: int | None) -> None:
    token = mint(fake)
    assert fake.revoke_user(USERNAME, subcode=subcode) == 1
    for call in (lambda: client.refresh(access_token=token),
                 lambda: client.me(access_token=token)):
        with pytest.raises(TokenInvalid) as info:
            call()
        assert (info.value.code, info.value.subcode) == (190, subcode)
        assert_no_leak(info.value, token)


def test_secret_echoed_in_error_message_is_redacted(fake: FakeInstagram,
                                                    client: InstagramClient) -> None:
    secret_values, call = call_endpoint(client, "/access_token")
    token, secret = secret_values
    fake.inject("/access_token", graph_error(
        190, message=f"Bad token {token} for secret {secret}; url ?access_token={token}&x=1"))
    with pytest.raises(TokenInvalid) as info:
        call()
    assert "[redacted]" in info.value.message
    assert_no_leak(info.value, token, secret)


def test_secret_cut_by_message_truncation_is_redacted(fake: FakeInstagram,
                                                      client: InstagramClient) -> None:
    # Regression: messages were cut to 300 characters before secrets were masked, so a
    # token straddling the cut survived in part.
    secret_values, call = call_endpoint(client, "/refresh_access_token")
    (token,) = secret_values
    fake.inject("/refresh_access_token",
                graph_error(190, message="Error validating access token " + "." * 250 + token))
    with pytest.raises(TokenInvalid) as info:
        call()
    assert_no_leak(info.value, token)


# ----------------------------------------------------------------------------- secrets


def test_token_reprs_hide_the_token() -> None:
    token = "IGAA" + secrets.token_urlsafe(100)
    short = ShortLivedToken(access_token=token, user_id=BIG_USER_ID,
                            permissions=("instagram_business_basic",))
    long = LongLivedToken(access_token=token, expires_in=LONG_LIFETIME, usage=Usage(percent=3))
    for value in (short, long):
        assert token not in repr(value) and token[:12] not in repr(value)
        assert token not in str(value)
    assert BIG_USER_ID in repr(short)
    assert str(LONG_LIFETIME) in repr(long)


def test_results_from_the_fake_hide_the_token(fake: FakeInstagram,
                                              client: InstagramClient) -> None:
    client_id, secret = register(fake, "instagram_login")
    code = get_code(client, fake, "instagram_login")
    short = client.exchange_code(client_id=client_id, client_secret=secret,
                                 redirect_uri=CALLBACK_URI, code=code)
    long = client.exchange_for_long_lived(client_secret=secret, access_token=short.access_token)
    assert short.access_token not in repr(short)
    assert long.access_token not in repr(long)


class _Lines(logging.Handler):
    """Formats each record when urllib3 emits it, before any root handler (Django's console
    handler carries a redacting filter of its own) could rewrite it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def urllib3_debug(caplog: pytest.LogCaptureFixture) -> Iterator[tuple[Any, list[str]]]:
    """caplog at DEBUG for "urllib3", plus the lines as formatted on the urllib3 logger."""
    handler = _Lines()
    logger = logging.getLogger("urllib3")
    logger.addHandler(handler)
    try:
        with caplog.at_level(logging.DEBUG, logger="urllib3"):
            yield caplog, handler.lines
    finally:
        logger.removeHandler(handler)


def test_refresh_debug_log_is_redacted(fake: FakeInstagram, client: InstagramClient,
                                       urllib3_debug: tuple[Any, list[str]]) -> None:
    caplog, lines = urllib3_debug
    token = mint(fake)
    refreshed = client.refresh(access_token=token)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    for captured in (messages, lines):
        request_lines = [m for m in captured if "/refresh_access_token?" in m]
        assert request_lines, captured
        assert all("access_token=[redacted]" in m for m in request_lines)
    for text in (caplog.text, *messages, *lines):
        assert token not in text and token[:12] not in text
        assert refreshed.access_token not in text


def test_long_lived_swap_debug_log_is_redacted(fake: FakeInstagram, client: InstagramClient,
                                               urllib3_debug: tuple[Any, list[str]]) -> None:
    caplog, lines = urllib3_debug
    token = mint(fake, kind="short", age=timedelta(minutes=5))
    secret = SECRETS["instagram_login"][1]
    client.exchange_for_long_lived(client_secret=secret, access_token=token)
    for captured in (caplog.messages, lines):
        line = next(m for m in captured if "/access_token?" in m)
        assert "access_token=[redacted]" in line and "client_secret=[redacted]" in line
    for text in (caplog.text, *lines):
        assert token not in text and secret not in text


# ----------------------------------------------------------------------------- usage


def test_usage_from_app_usage_header() -> None:
    usage = Usage.from_headers(
        {"X-App-Usage": json.dumps({"call_count": 12, "total_cputime": 40, "total_time": 7})}
    )
    assert usage == Usage(percent=40, regain_seconds=None)


def test_usage_from_business_use_case_header() -> None:
    header = {
        "17841400000000001": [
            {"type": "instagram", "call_count": 10, "total_cputime": 95, "total_time": 3,
             "estimated_time_to_regain_access": 2},
        ],
        "17841400000000002": [
            {"type": "instagram", "call_count": 50, "total_cputime": 1, "total_time": 1,
             "estimated_time_to_regain_access": 7},
            {"type": "messenger", "call_count": 5, "total_cputime": 5, "total_time": 5,
             "estimated_time_to_regain_access": 0},
        ],
    }
    usage = Usage.from_headers({"X-Business-Use-Case-Usage": json.dumps(header)})
    assert usage == Usage(percent=95, regain_seconds=7 * 60)


def test_usage_from_both_headers_takes_the_highest() -> None:
    usage = Usage.from_headers({
        "X-App-Usage": json.dumps({"call_count": 91, "total_cputime": 0, "total_time": 0}),
        "X-Business-Use-Case-Usage": json.dumps(
            {"1": [{"call_count": 20, "total_cputime": 30, "total_time": 40}]}),
    })
    assert usage == Usage(percent=91, regain_seconds=None)


def test_usage_absent_or_unreadable() -> None:
    assert Usage.from_headers({}) is None
    assert Usage.from_headers({"Content-Type": "application/json"}) is None
    assert Usage.from_headers({"X-App-Usage": "not json"}) is None


def test_usage_headers_surface_on_refresh(fake: FakeInstagram, client: InstagramClient) -> None:
    token = mint(fake)
    plain = client.refresh(access_token=token)
    assert plain.usage is None
    fake.usage_headers = {
        "X-App-Usage": json.dumps({"call_count": 12, "total_cputime": 3, "total_time": 31}),
        "X-Business-Use-Case-Usage": json.dumps(
            {"17841400000000001": [{"type": "instagram", "call_count": 44, "total_cputime": 2,
                                    "total_time": 2, "estimated_time_to_regain_access": 3}]}),
    }
    fake.advance(25 * 3600)
    refreshed = client.refresh(access_token=plain.access_token)
    assert refreshed.usage == Usage(percent=44, regain_seconds=180)


def test_usage_headers_surface_on_me(fake: FakeInstagram, client: InstagramClient) -> None:
    token = mint(fake)
    fake.usage_headers = {
        "X-App-Usage": json.dumps({"call_count": 5, "total_cputime": 6, "total_time": 7})
    }
    assert client.me(access_token=token).usage == Usage(percent=7)


# ----------------------------------------------------------------------------- pasting

CODE = "AQBx" + "k3J-_9" * 20


def test_parse_pasted_full_url_with_fragment() -> None:
    pasted = parse_pasted(f"  {CALLBACK_URI}?code={CODE}&state=st-7#_\n")
    assert (pasted.code, pasted.state, pasted.error) == (CODE, "st-7", None)


def test_parse_pasted_url_without_fragment_and_other_site() -> None:
    pasted = parse_pasted(f"{OTHER_SITE_URI}?code={CODE}")
    assert (pasted.code, pasted.state, pasted.error) == (CODE, None, None)


@pytest.mark.parametrize("raw", [CODE, f"{CODE}#_", f"  {CODE}#_  ", f"\t{CODE}\n", f" {CODE} #_"])
def test_parse_pasted_bare_code(raw: str) -> None:
    pasted = parse_pasted(raw)
    assert (pasted.code, pasted.state, pasted.error) == (CODE, None, None)
    assert clean_code(raw) == CODE


def test_parse_pasted_denied_url() -> None:
    pasted = parse_pasted(
        f"{CALLBACK_URI}?error=access_denied&error_reason=user_denied"
        "&error_description=The+user+denied+your+request&state=st-8"
    )
    assert pasted.code is None
    assert pasted.error == "access_denied"
    assert pasted.error_description == "The user denied your request"
    assert pasted.state == "st-8"


@pytest.mark.parametrize("raw", [f"{CALLBACK_URI}?state=st-9", CALLBACK_URI, "", "   #_"])
def test_parse_pasted_without_code(raw: str) -> None:
    pasted = parse_pasted(raw)
    assert pasted.code is None and pasted.error is None


def test_denied_at_the_fake(fake: FakeInstagram, client: InstagramClient) -> None:
    register(fake, "instagram_login")
    url = client.authorize_url(flavour=Flavour.INSTAGRAM_LOGIN,
                               client_id=SECRETS["instagram_login"][0],
                               redirect_uri=CALLBACK_URI, scopes=SCOPES["instagram_login"],
                               state="st-deny")
    pasted = parse_pasted(allow_at_fake(url, decision="cancel"))
    assert pasted.code is None and pasted.error == "access_denied"
    assert pasted.state == "st-deny"


def test_clean_code_strips_fragment_and_blanks() -> None:
    assert clean_code(f"\n {CODE}#_ ") == CODE
    assert clean_code(CODE) == CODE


def test_exchange_code_strips_pasted_fragment(fake: FakeInstagram,
                                              client: InstagramClient) -> None:
    client_id, secret = register(fake, "instagram_login")
    code = get_code(client, fake, "instagram_login")
    short = client.exchange_code(client_id=client_id, client_secret=secret,
                                 redirect_uri=CALLBACK_URI, code=f"  {code}#_ \n")
    assert fake.calls("/oauth/access_token")[-1].form["code"] == code
    assert fake.token_info(short.access_token)["kind"] == "short"


# ----------------------------------------------------------------------------- refresh string


@pytest.mark.parametrize("same", [True, False])
def test_refresh_returns_what_came_back(fake: FakeInstagram, client: InstagramClient,
                                        same: bool) -> None:
    token = mint(fake)
    fake.refresh_returns_same_token = same
    refreshed = client.refresh(access_token=token)
    assert (refreshed.access_token == token) is same
    info = fake.token_info(refreshed.access_token)
    assert info is not None and info["kind"] == "long"
    assert info["expires_at"] - fake.now() > timedelta(days=59, hours=23)
    assert LONG_LIFETIME - 5 <= refreshed.expires_in <= LONG_LIFETIME
    # Whatever came back is usable.
    assert client.me(access_token=refreshed.access_token).username == USERNAME


# --- the environment: proxies, read once per host -------------------------------------


@pytest.fixture
def environment(monkeypatch):  # noqa: ANN001
    """A clean proxy environment, read afresh by the transport (it caches per host)."""
    from accounts.instagram.transport import proxies_for

    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                 "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    proxies_for.cache_clear()
    yield monkeypatch
    proxies_for.cache_clear()


def test_calls_go_through_the_proxy_the_environment_names(fake, environment):  # noqa: ANN001
    # Instagram behind a proxy, as on a locked-down server: the fake plays the proxy (it
    # takes the absolute URL of a proxied request), the host itself does not resolve.
    environment.setenv("HTTP_PROXY", fake.url)
    client_id, secret = SECRETS["instagram_login"]
    fake.add_app(client_id, secret, [CALLBACK_URI])
    token = fake.mint_token(client_id=client_id, username="behind_proxy", age=timedelta(days=2))
    client = InstagramClient(api_url="http://graph.instagram.invalid",
                             www_url="http://graph.instagram.invalid",
                             graph_url="http://graph.instagram.invalid", read_timeout=2)
    assert client.refresh(access_token=token).access_token
    assert len(fake.calls("/refresh_access_token")) == 1
    # NO_PROXY names the host: the call goes direct, and the host does not resolve.
    from accounts.instagram.transport import proxies_for

    environment.setenv("NO_PROXY", "graph.instagram.invalid")
    proxies_for.cache_clear()
    with pytest.raises(Transient, match="Could not reach Instagram"):
        client.refresh(access_token=token)
    assert len(fake.calls("/refresh_access_token")) == 1
