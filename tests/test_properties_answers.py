"""Property-based tests: whatever Instagram answers, the parsers return only values that
pass the documented rules (tests/answer_rules.py) or raise an InstagramError; error
payloads become safe exceptions; usage headers give bounded readings. The same through
real HTTP: test_properties_http.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from accounts.instagram import (
    InstagramError,
    MalformedAnswer,
    RateLimited,
    TokenInvalid,
    Transient,
    Usage,
)
from accounts.instagram.answers import long_lived_from, profile_from, short_lived_from
from accounts.instagram.errors import error_from
from tests.answer_rules import (
    assert_long,
    assert_profile,
    assert_short,
    assert_usage,
    bodies,
    deep_dict,
    deep_list,
    good_bodies,
    header_values,
    huge_int,
    python_json,
    secret_values,
    strings_in,
)

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
