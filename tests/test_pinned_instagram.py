"""Behaviours of the Instagram client package (`accounts.instagram`) no other test pinned
down, found by mutation testing (README, "Mutation testing"; the survivors are classified
in docs/mutation-survivors.md). Each test goes through the package's public API, the
answer rules or the client against the fake Instagram over real HTTP, and fails when the
behaviour changes."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from accounts.instagram import Flavour, InstagramClient, MalformedAnswer, Usage
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
from tests.fake_instagram import FakeInstagram, Fault

TOKEN = "IGAA" + "t" * 40


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
