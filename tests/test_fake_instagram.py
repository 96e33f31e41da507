"""Tests of the fake Instagram itself, over real HTTP with ``requests`` (no Django)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.fake_instagram import (
    CHAOS_KINDS,
    FakeInstagram,
    delay,
    disconnect,
    garbage,
    graph_error,
    mangled,
    rate_limited,
    status,
    trickle,
)
from tests.fake_instagram.__main__ import main as cli_main

CLIENT_ID = "1000000000000001"
SECRET = "login-secret"
BASIC_ID = "1000000000000002"
BASIC_SECRET = "basic-secret"
REDIRECT = "http://127.0.0.1:8000/oauth/callback/"
SCOPE = "instagram_business_basic,instagram_business_manage_messages"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeInstagram]:
    with FakeInstagram() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeInstagram) -> FakeInstagram:
    server.reset()
    server.add_app(
        CLIENT_ID, SECRET, [REDIRECT, "https://www.mywebsite.com/?x=1"], name="Login app"
    )
    server.add_app(BASIC_ID, BASIC_SECRET, [REDIRECT], flavour="basic_display")
    server.add_user("alice")
    return server


def authorize_params(**overrides: str) -> dict[str, str]:
    params = {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT,
        "scope": SCOPE,
        "response_type": "code",
        "state": "st-123",
    }
    params.update(overrides)
    return params


def get_code(fake: FakeInstagram, username: str = "alice", **overrides: str) -> str:
    """Walk the dialog: GET the page, POST allow, return the code from the Location."""
    params = authorize_params(**overrides)
    page = requests.get(f"{fake.url}/oauth/authorize", params=params, timeout=5)
    assert page.status_code == 200
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
    assert hidden == params
    response = requests.post(
        f"{fake.url}/oauth/authorize",
        data={**hidden, "username": username, "decision": "allow"},
        allow_redirects=False,
        timeout=5,
    )
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.endswith("#_")
    query = parse_qs(urlsplit(location.removesuffix("#_")).query)
    assert query["state"] == [params["state"]]
    return query["code"][0]


def exchange(
    fake: FakeInstagram, code: str, *, multipart: bool = False, **overrides: str
) -> requests.Response:
    form = {
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "grant_type": "authorization_code",
        "redirect_uri": REDIRECT,
        "code": code,
    }
    form.update(overrides)
    url = f"{fake.url}/oauth/access_token"
    if multipart:
        return requests.post(url, files={k: (None, v) for k, v in form.items()}, timeout=5)
    return requests.post(url, data=form, timeout=5)


def long_swap(fake: FakeInstagram, token: str, secret: str = SECRET) -> requests.Response:
    return requests.get(
        f"{fake.url}/access_token",
        params={"grant_type": "ig_exchange_token", "client_secret": secret, "access_token": token},
        timeout=5,
    )


def refresh(fake: FakeInstagram, token: str) -> requests.Response:
    return requests.get(
        f"{fake.url}/refresh_access_token",
        params={"grant_type": "ig_refresh_token", "access_token": token},
        timeout=5,
    )


def me(
    fake: FakeInstagram, token: str, fields: str = "id,username", path: str = "/me"
) -> requests.Response:
    return requests.get(
        f"{fake.url}{path}", params={"access_token": token, "fields": fields}, timeout=5
    )


def graph_err(response: requests.Response) -> dict:
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["fbtrace_id"]
    return error


# ----------------------------------------------------------------------------- happy path


def test_full_flow(fake: FakeInstagram) -> None:
    page = requests.get(f"{fake.url}/oauth/authorize", params=authorize_params(), timeout=5)
    assert "Login app" in page.text and "instagram_business_manage_messages" in page.text
    assert 'value="alice"' in page.text and 'id="allow"' in page.text and 'id="cancel"' in page.text
    code = get_code(fake)
    assert code.startswith("AQ") and len(code) >= 100
    short = exchange(fake, code)
    assert short.status_code == 200
    short_token = short.json()["access_token"]
    assert fake.token_info(short_token)["kind"] == "short"

    swapped = long_swap(fake, short_token)
    assert swapped.status_code == 200
    body = swapped.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 5184000
    long_token = body["access_token"]
    assert fake.token_info(long_token)["kind"] == "long"

    fake.advance(25 * 3600)
    refreshed = refresh(fake, long_token)
    assert refreshed.status_code == 200
    new_token = refreshed.json()["access_token"]
    assert new_token != long_token
    assert 5183990 <= refreshed.json()["expires_in"] <= 5184000
    info = fake.token_info(new_token)
    assert info["expires_at"] - fake.now() > timedelta(days=59, hours=23)

    user = fake.add_user("bob", id="17841400000000001", user_id="90071992547409931")
    for path in ("/me", "/v21.0/me"):
        profile = me(fake, new_token, "id,username,account_type,user_id", path)
        assert profile.status_code == 200
        assert profile.json()["username"] == "alice"
    token_bob = fake.mint_token(client_id=CLIENT_ID, username="bob")
    assert me(fake, token_bob, "id,user_id").json() == {"id": user.id, "user_id": user.user_id}
    assert len(fake.calls("/me")) == 3 and len(fake.calls("/v21.0/me")) == 3
    assert [c.path for c in fake.calls()][:2] == ["/oauth/authorize", "/oauth/authorize"]


def test_multipart_exchange(fake: FakeInstagram) -> None:
    response = exchange(fake, get_code(fake), multipart=True)
    assert response.status_code == 200, response.text
    assert fake.calls("/oauth/access_token")[0].form["grant_type"] == "authorization_code"


def test_user_id_is_exact_number_above_2_53(fake: FakeInstagram) -> None:
    fake.add_user("carol", user_id="17841405793187219")
    raw = exchange(fake, get_code(fake, "carol")).text
    assert re.search(r'"user_id": 17841405793187219\b', raw)
    assert json.loads(raw)["user_id"] == 17841405793187219 > 2**53


@pytest.mark.parametrize("shape", ["flat", "permissions", "data"])
def test_exchange_shapes(fake: FakeInstagram, shape: str) -> None:
    fake.exchange_shape = shape
    user_id = fake.add_user("dave").user_id
    body = exchange(fake, get_code(fake, "dave")).json()
    if shape == "data":
        entry = body["data"][0]
        assert entry["user_id"] == user_id and entry["permissions"] == SCOPE
    else:
        entry = body
        assert entry["user_id"] == int(user_id)
        assert ("permissions" in body) == (shape == "permissions")
        if shape == "permissions":
            assert body["permissions"] == SCOPE.split(",")
    assert fake.token_info(entry["access_token"])["kind"] == "short"


@pytest.mark.parametrize("shape", ["flat", "data"])
def test_me_shapes(fake: FakeInstagram, shape: str) -> None:
    fake.me_shape = shape
    user = fake.add_user("erin")
    body = me(fake, fake.mint_token(client_id=CLIENT_ID, username="erin", kind="short")).json()
    if shape == "flat":
        assert body == {"id": user.id, "username": "erin"}
    else:
        assert body == {"data": [{"user_id": user.user_id, "username": "erin"}]}


# ----------------------------------------------------------------------------- dialog errors


def test_cancel_redirect_keeps_query(fake: FakeInstagram) -> None:
    params = authorize_params(redirect_uri="https://www.mywebsite.com/?x=1")
    response = requests.post(
        f"{fake.url}/oauth/authorize",
        data={**params, "decision": "cancel"},
        allow_redirects=False,
        timeout=5,
    )
    assert response.status_code == 302
    assert response.headers["Location"] == (
        "https://www.mywebsite.com/?x=1&error=access_denied&error_reason=user_denied"
        "&error_description=The+user+denied+your+request&state=st-123"
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"redirect_uri": REDIRECT.rstrip("/")},
        {"redirect_uri": "http://evil.example/cb/"},
        {"client_id": "999"},
        {"scope": "business_basic"},
        {"scope": "instagram_business_manage_messages"},
        {"client_id": BASIC_ID, "scope": "instagram_business_basic"},
    ],
)
def test_bad_authorize_is_error_page_without_redirect(fake: FakeInstagram, overrides: dict) -> None:
    for method in ("GET", "POST"):
        params = {**authorize_params(**overrides), "decision": "allow", "username": "alice"}
        response = requests.request(
            method, f"{fake.url}/oauth/authorize", params=params, allow_redirects=False, timeout=5
        )
        assert response.status_code == 400
        assert "Location" not in response.headers
        assert response.headers["Content-Type"].startswith("text/html")


def test_scopes_accepted(fake: FakeInstagram) -> None:
    get_code(fake, scope="instagram_business_basic instagram_business_content_publish")
    get_code(fake, client_id=BASIC_ID, scope="user_profile,user_media")
    code = get_code(fake, "newcomer")
    assert fake.token_info(exchange(fake, code).json()["access_token"])["username"] == "newcomer"


# ----------------------------------------------------------------------------- exchange errors


def flat_error(response: requests.Response) -> str:
    assert response.status_code == 400
    body = response.json()
    assert body["error_type"] == "OAuthException" and body["code"] == 400
    return body["error_message"]


def test_code_single_use_and_unknown(fake: FakeInstagram) -> None:
    code = get_code(fake)
    assert exchange(fake, code).status_code == 200
    assert flat_error(exchange(fake, code)) == "This authorization code has been used"
    assert flat_error(exchange(fake, "AQnope")) == "Matching code was not found or was already used"
    assert (
        flat_error(exchange(fake, code + "#_")) == "Matching code was not found or was already used"
    )


def test_code_expires_after_one_hour(fake: FakeInstagram) -> None:
    code = get_code(fake)
    fake.advance(3601)
    assert flat_error(exchange(fake, code)) == "Matching code was not found or was already used"


def test_exchange_client_errors(fake: FakeInstagram) -> None:
    code = get_code(fake)
    assert flat_error(
        exchange(fake, code, redirect_uri="https://www.mywebsite.com/?x=1")
    ).startswith(
        "Error validating verification code. Please make sure your redirect_uri is identical"
    )
    assert flat_error(exchange(fake, code, client_id="999")) == "Invalid platform app"
    assert flat_error(exchange(fake, code, client_secret="nope")) == "Invalid Client Secret"
    assert exchange(fake, code).status_code == 200  # errors did not consume the code


# ----------------------------------------------------------------------------- graph token errors


def test_long_swap_errors(fake: FakeInstagram) -> None:
    short = fake.mint_token(client_id=CLIENT_ID, username="alice", kind="short")
    long = fake.mint_token(client_id=CLIENT_ID, username="alice")
    error = graph_err(long_swap(fake, "garbage"))
    assert (error["code"], error["message"]) == (
        190,
        "Invalid OAuth access token - Cannot parse access token",
    )
    assert graph_err(long_swap(fake, short, "wrong"))["code"] == 100
    assert graph_err(long_swap(fake, long))["code"] == 100
    fake.advance(3601)
    error = graph_err(long_swap(fake, short))
    assert (error["code"], error["error_subcode"]) == (190, 463)
    assert error["message"].startswith("Error validating access token: Session has expired on ")


def test_refresh_rules(fake: FakeInstagram) -> None:
    young = fake.mint_token(client_id=CLIENT_ID, username="alice", age=timedelta(hours=23))
    error = graph_err(refresh(fake, young))
    assert error["code"] != 190 and "24 hours" in error["message"]
    expired = fake.mint_token(client_id=CLIENT_ID, username="alice", age=timedelta(days=61))
    error = graph_err(refresh(fake, expired))
    assert (error["code"], error["error_subcode"]) == (190, 463)
    old = fake.mint_token(client_id=CLIENT_ID, username="alice", age=timedelta(days=50))
    post = requests.post(
        f"{fake.url}/refresh_access_token",
        data={"grant_type": "ig_refresh_token", "access_token": old},
        timeout=5,
    )
    assert graph_err(post)["code"] == 100
    new = refresh(fake, old).json()["access_token"]
    assert new != old and me(fake, old).status_code == 200  # the old one stays valid
    fake.refresh_returns_same_token = True
    fake.advance(25 * 3600)
    assert refresh(fake, new).json()["access_token"] == new
    assert fake.token_info(new)["issued_at"] >= fake.now() - timedelta(seconds=5)


@pytest.mark.parametrize("subcode", [460, 458, 467, None])
def test_revoke(fake: FakeInstagram, subcode: int | None) -> None:
    token = fake.mint_token(client_id=CLIENT_ID, username="alice", age=timedelta(days=2))
    fake.revoke_user("alice", subcode=subcode)
    for response in (me(fake, token), refresh(fake, token)):
        error = graph_err(response)
        assert error["code"] == 190 and error.get("error_subcode") == subcode
    assert fake.token_info(token)["revoked"] is True
    assert me(fake, fake.mint_token(client_id=CLIENT_ID, username="alice")).status_code == 200


# ----------------------------------------------------------------------------- faults


def test_faults_fifo_then_normal(fake: FakeInstagram) -> None:
    token = fake.mint_token(client_id=CLIENT_ID, username="alice")
    fake.inject(
        "/me",
        status(502),
        status(503, ""),
        graph_error(2, http_status=500),
        graph_error(190, 460),
        garbage(),
        garbage(truncated=True),
    )
    first = me(fake, token)
    assert first.status_code == 502 and "<html>" in first.text
    second = me(fake, token)
    assert (second.status_code, second.text) == (503, "")
    third = me(fake, token)
    assert third.status_code == 500 and third.json()["error"]["code"] == 2
    assert graph_err(me(fake, token))["error_subcode"] == 460
    for _ in range(2):
        with pytest.raises(ValueError):
            me(fake, token).json()
    assert me(fake, token).status_code == 200
    assert len(fake.calls("/me")) == 7


def test_rate_limited_fault(fake: FakeInstagram) -> None:
    fake.inject("/refresh_access_token", rate_limited(usage={"estimated_time_to_regain_access": 7}))
    response = refresh(fake, "whatever")
    assert response.status_code == 429 and response.json()["error"]["code"] == 4
    assert json.loads(response.headers["X-App-Usage"])["call_count"] == 100
    buc = json.loads(response.headers["X-Business-Use-Case-Usage"])
    assert next(iter(buc.values()))[0]["estimated_time_to_regain_access"] == 7


def test_delay_fault_triggers_timeout(fake: FakeInstagram) -> None:
    fake.inject("/oauth/access_token", delay(1.0))
    with pytest.raises(requests.Timeout):
        requests.post(f"{fake.url}/oauth/access_token", data={}, timeout=0.2)
    assert exchange(fake, "x").status_code == 400


def test_disconnect_fault(fake: FakeInstagram) -> None:
    fake.inject("/access_token", disconnect())
    with pytest.raises(requests.ConnectionError):
        long_swap(fake, "x")
    assert graph_err(long_swap(fake, "x"))["code"] == 190


def settled_refreshes(fake: FakeInstagram, count: int) -> list[dict]:
    """The refresh ledger once `count` refreshes are there and none is still being sent
    (the fake notes the outcome just after the last byte went out)."""
    deadline = time.monotonic() + 5
    while True:
        records = fake.refreshes()
        if len(records) >= count and all(r["outcome"] != "pending" for r in records):
            return records
        assert time.monotonic() < deadline, records
        time.sleep(0.02)


def test_trickle_fault_processes_then_sends_slowly(fake: FakeInstagram) -> None:
    old = fake.mint_token(client_id=CLIENT_ID, username="alice", age=timedelta(days=50))
    fake.inject("/refresh_access_token", trickle(0.6, chunks=4))
    started = time.monotonic()
    new = refresh(fake, old).json()["access_token"]
    assert time.monotonic() - started >= 0.5
    assert fake.accepts(new) and fake.accepts(old)
    [record] = settled_refreshes(fake, 1)
    assert (record["old"], record["new"], record["outcome"]) == (old, new, "delivered")
    assert record["client"].startswith("127.0.0.1:")


def test_refresh_ledger_tells_undelivered_answers(fake: FakeInstagram) -> None:
    """A refresh whose client gave up (timeout, a deadline cutting a trickle) did rotate
    the token; the ledger says the answer never reached anyone."""
    old = fake.mint_token(client_id=CLIENT_ID, username="alice", age=timedelta(days=50))
    fake.inject("/refresh_access_token", delay(0.5), trickle(3.0, chunks=6))
    params = {"grant_type": "ig_refresh_token", "access_token": old}
    with pytest.raises(requests.Timeout):
        requests.get(f"{fake.url}/refresh_access_token", params=params, timeout=0.3)
    # A client whose deadline passes hangs up in the middle of the trickle.
    response = requests.get(f"{fake.url}/refresh_access_token", params=params, timeout=5,
                            stream=True)
    assert response.status_code == 200
    response.raw.read(5)
    response.close()
    assert sorted((r["fault"], r["outcome"]) for r in settled_refreshes(fake, 2)) == [
        ("delay", "undelivered"), ("trickle", "undelivered")
    ]
    assert all(fake.accepts(r["new"]) for r in fake.refreshes()) and fake.accepts(old)


@pytest.mark.parametrize(
    ("how", "outcome"),
    [("truncate", "unusable"), ("token_newline", "unusable"), ("token_nul", "unusable"),
     ("nested", "unusable"), ("huge", "unusable"), ("expires_in_absurd", "delivered"),
     ("expires_in_missing", "delivered")],
)
def test_mangled_fault_rotates_the_token_and_corrupts_the_answer(
    fake: FakeInstagram, how: str, outcome: str
) -> None:
    old = fake.mint_token(client_id=CLIENT_ID, username="alice", age=timedelta(days=50))
    fake.inject("/refresh_access_token", mangled(how))
    response = refresh(fake, old)
    [record] = settled_refreshes(fake, 1)
    assert record["outcome"] == outcome and fake.accepts(record["new"])
    text = response.text
    if how == "truncate":
        with pytest.raises(ValueError):
            response.json()
    elif how == "nested":
        assert "[" * 5000 in text
    elif how == "huge":
        assert len(response.content) > 1 << 20
    elif how == "expires_in_absurd":
        assert response.json()["expires_in"] == 10**30
    elif how == "expires_in_missing":
        assert response.json() == {"access_token": record["new"], "token_type": "bearer"}
    else:
        token = response.json()["access_token"]
        assert ("\n" if how == "token_newline" else "\x00") in token
        assert token.replace("\n", "").replace("\x00", "") == record["new"]


def test_chaos_is_seeded_per_user_and_counted(fake: FakeInstagram) -> None:
    def run(seed: int) -> tuple[list[int], dict]:
        fake.reset()
        fake.add_app(CLIENT_ID, SECRET, [REDIRECT])
        fake.chaos(0.5, ["5xx", "rate_limit", "malformed"], seed)
        statuses = []
        for name in ("ann", "bob"):
            token = fake.mint_token(client_id=CLIENT_ID, username=name, age=timedelta(days=50))
            statuses += [refresh(fake, token).status_code for _ in range(12)]
        return statuses, fake.chaos_report()

    first, report = run(7)
    assert run(7)[0] == first and run(8)[0] != first
    assert report["requests"] == 24 and 0 < sum(report["injected"].values()) < 24
    assert sum(report["injected"].values()) == sum(report["variants"].values())
    assert set(report["injected"]) <= {"5xx", "rate_limit", "malformed"}
    assert first.count(200) > 0 and len(set(first)) > 1
    assert fake.calls("/me") == [] and me(fake, "x").status_code == 400  # other paths untouched
    fake.chaos(0)
    assert fake.chaos_report() is None


def test_chaos_rejects_unknown_kinds(fake: FakeInstagram) -> None:
    with pytest.raises(ValueError):
        fake.chaos(0.1, ["meteor"])
    with pytest.raises(ValueError):
        fake.chaos(1.5)
    assert set(CHAOS_KINDS) >= {"timeout", "disconnect", "5xx", "rate_limit", "trickle"}


def test_usage_headers_on_graph_responses(fake: FakeInstagram) -> None:
    usage = '{"call_count": 95, "total_cputime": 10, "total_time": 10}'
    fake.usage_headers = {"X-App-Usage": usage}
    assert me(fake, "bad").headers["X-App-Usage"] == usage
    assert refresh(fake, "bad").headers["X-App-Usage"] == usage
    assert "X-App-Usage" not in exchange(fake, "x").headers
    missing = requests.get(f"{fake.url}/nope", timeout=5)
    assert missing.status_code == 404 and "error" in missing.json()


# ----------------------------------------------------------------------------- control API and CLI


def test_control_api(fake: FakeInstagram) -> None:
    ctl = f"{fake.url}/_fake"
    assert requests.post(
        f"{ctl}/apps",
        json={"client_id": "42", "client_secret": "s", "redirect_uris": [REDIRECT]},
        timeout=5,
    ).ok
    assert (
        requests.post(f"{ctl}/users", json={"username": "zed", "id": "1"}, timeout=5).json()["id"]
        == "1"
    )
    minted = requests.post(
        f"{ctl}/tokens",
        json={"client_id": "42", "username": "zed", "kind": "long", "age_days": 50},
        timeout=5,
    ).json()
    token = minted["access_token"]
    assert fake.token_info(token)["expires_at"].isoformat() == minted["expires_at"]
    assert me(fake, token).json() == {"id": "1", "username": "zed"}
    assert refresh(fake, token).status_code == 200
    faults = {
        "path": "/me",
        "faults": [{"kind": "status", "http_status": 500}, {"kind": "graph_error", "code": 1}],
    }
    assert requests.post(f"{ctl}/faults", json=faults, timeout=5).json()["queued"] == 2
    assert [me(fake, token).status_code for _ in range(3)] == [500, 400, 200]
    calls = requests.get(f"{ctl}/calls", timeout=5).json()
    assert calls["counts"] == {"/me": 4, "/refresh_access_token": 1}
    assert requests.post(f"{ctl}/clock", json={"advance_seconds": 11 * 86400}, timeout=5).ok
    assert graph_err(me(fake, token))["error_subcode"] == 463
    assert (
        requests.post(f"{ctl}/revoke", json={"username": "zed"}, timeout=5).json()["revoked"] == 2
    )
    assert (
        requests.post(
            f"{ctl}/faults", json={"path": "/me", "faults": [{"kind": "x"}]}, timeout=5
        ).status_code
        == 400
    )
    settings = {"me_shape": "data", "usage_headers": {"X-App-Usage": "{}"}}
    assert requests.post(f"{ctl}/settings", json=settings, timeout=5).json()["me_shape"] == "data"
    assert fake.me_shape == "data" and me(fake, "x").headers["X-App-Usage"] == "{}"
    chaos = {"rate": 1.0, "kinds": ["5xx"], "seed": 3}
    assert requests.post(f"{ctl}/chaos", json=chaos, timeout=5).json()["chaos"]["seed"] == 3
    assert refresh(fake, token).status_code >= 500
    report = requests.get(f"{ctl}/chaos", timeout=5).json()["chaos"]
    assert report["injected"] == {"5xx": 1}
    assert requests.post(f"{ctl}/chaos", json={"rate": 0}, timeout=5).json() == {"chaos": None}
    settled_refreshes(fake, 1)
    refreshed = requests.get(f"{ctl}/refreshes", timeout=5).json()["refreshes"]
    assert [(r["username"], r["outcome"]) for r in refreshed] == [("zed", "delivered")]
    assert requests.post(f"{ctl}/reset", timeout=5).ok
    assert fake.calls() == [] and fake.clock_offset == timedelta(0)
    assert fake.refreshes() == [] and fake.chaos_report() is None


def test_latency_delays_every_call_to_instagram_but_not_the_control_api(
    fake: FakeInstagram,
) -> None:
    ctl = f"{fake.url}/_fake"
    minted = requests.post(f"{ctl}/tokens", timeout=5, json={
        "client_id": CLIENT_ID, "usernames": ["u1", "u2"], "age_days": 50})
    tokens = minted.json()["access_tokens"]
    assert [fake.token_info(t)["username"] for t in tokens] == ["u1", "u2"]
    assert requests.post(f"{ctl}/settings", json={"latency": 0.3}, timeout=5).json()[
        "latency"] == 0.3
    try:
        started = time.monotonic()
        assert refresh(fake, tokens[0]).status_code == 200
        assert me(fake, tokens[1]).status_code == 200
        assert time.monotonic() - started >= 0.6
        started = time.monotonic()
        assert requests.get(f"{ctl}/clock", timeout=5).ok
        assert time.monotonic() - started < 0.25
    finally:
        fake.latency = 0
    with pytest.raises(ValueError):
        fake.latency = -1
    fake.latency = 0.2
    fake.reset()
    assert fake.latency == 0


def test_cli_mint(fake: FakeInstagram, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "mint",
        "--url",
        fake.url,
        "--client-id",
        CLIENT_ID,
        "--username",
        "alice",
        "--age-days",
        "50",
    ]
    assert cli_main(argv) == 0
    token = capsys.readouterr().out.strip()
    info = fake.token_info(token)
    assert info["kind"] == "long" and fake.now() - info["issued_at"] >= timedelta(days=50)
