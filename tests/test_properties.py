"""Property-based tests: nothing a person or Instagram's redirect sends crashes the
registry or stores anything it should not.

- the callback's and the paste form's parsers, on any input, and their round trips;
- token file names: accepted exactly when the documented rule says so;
- the callback view, the admin forms and the admin pages, as a superuser, on any input.
Instagram's answers are in test_properties_answers.py.
"""

from __future__ import annotations

import os
import re
import string
import unicodedata
from urllib.parse import urlencode

from django.core.exceptions import ValidationError
from django.http import QueryDict
from hypothesis import example, given, settings
from hypothesis import strategies as st

from accounts.instagram import CallbackParams, parse_callback, parse_pasted
from accounts.models import (
    validate_token_filename,
)

MAX_PARAM_CHARS = 2048
URL_SAFE = st.text(st.sampled_from(string.ascii_letters + string.digits + "-._~"), min_size=1,
                   max_size=300)
BLANKS = st.text(st.sampled_from(" \t\r\n"), max_size=3)
CALLBACK_KEYS = ["code", "state", "error", "error_reason", "error_description"]
# Text with what breaks naive parsers: '#', '?', '&', '=', '%', control characters, NUL.
tricky_text = st.one_of(
    st.text(max_size=40),
    st.text(st.sampled_from("#_?&=%+ \t\n\x00\x1b\x7f\x85\u2028aZ9-./:"), max_size=40),
    st.integers(MAX_PARAM_CHARS - 2, MAX_PARAM_CHARS + 2).map(lambda n: "A" * n),
)


def is_control(char: str) -> bool:
    return unicodedata.category(char) == "Cc"


def assert_clean_params(params: CallbackParams) -> None:
    """What the parsers return is safe to use: bounded, no control characters, and the
    code and state carry no `#…` suffix or surrounding blanks."""
    for value in (params.code, params.state):
        if value is not None:
            assert isinstance(value, str) and 0 < len(value) <= MAX_PARAM_CHARS
            assert not any(is_control(c) for c in value), repr(value)
            assert "#" not in value
    if params.code is not None:
        assert params.code == params.code.strip()
    assert params.error is None or len(params.error) <= 200
    assert params.error_description is None or len(params.error_description) <= 500


# --- 1. the callback's parameters ----------------------------------------------------------


@settings(max_examples=300, deadline=500)
@given(params=st.dictionaries(st.sampled_from(CALLBACK_KEYS) | st.text(max_size=8), tricky_text))
@example(params={"code": "abc\x85def"})  # NEL: a C1 control character
@example(params={"state": "st\x9b31m#_"})
def test_parse_callback_never_raises_and_returns_clean_values(params: dict[str, str]) -> None:
    assert_clean_params(parse_callback(params))


@settings(max_examples=150, deadline=500)
@given(code=URL_SAFE, state=URL_SAFE, code_first=st.booleans(),
       suffix_on=st.sampled_from(["code", "state", "none"]))
def test_redirect_query_round_trips_code_and_state(code: str, state: str, code_first: bool,
                                                   suffix_on: str) -> None:
    values = {"code": code, "state": state}
    if suffix_on != "none":
        values[suffix_on] += "#_"  # what a pasted address bar carries
    pairs = [f"{key}={values[key]}" for key in (("code", "state") if code_first
                                                  else ("state", "code"))]
    parsed = parse_callback(QueryDict("&".join(pairs)))
    assert (parsed.code, parsed.state, parsed.error) == (code, state, None)


# --- 2. the paste form's parser ------------------------------------------------------------


@settings(max_examples=300, deadline=500)
@given(text=st.text() | tricky_text | st.builds(
    lambda head, query: head + "?" + query,
    st.sampled_from(["https://www.mywebsite.com/", "http://[::1", "https://x/", ""]),
    tricky_text))
@example(text="https://www.mywebsite.com/?code=ab\x85c#_")
def test_parse_pasted_never_raises_and_returns_clean_values(text: str) -> None:
    assert_clean_params(parse_pasted(text))


@settings(max_examples=150, deadline=500)
@given(code=URL_SAFE, state=URL_SAFE | st.none(), code_first=st.booleans(),
       base=st.sampled_from(["https://www.mywebsite.com/", "http://127.0.0.1:8000/oauth/callback/",
                             "https://shop.example/instagram/"]),
       fragment=st.sampled_from(["#_", ""]), before=BLANKS, after=BLANKS)
def test_pasted_url_round_trips_code_and_state(code: str, state: str | None, code_first: bool,
                                               base: str, fragment: str, before: str,
                                               after: str) -> None:
    pairs = [("code", code)] + ([("state", state)] if state is not None else [])
    query = urlencode(pairs if code_first else pairs[::-1])
    parsed = parse_pasted(f"{before}{base}?{query}{fragment}{after}")
    assert (parsed.code, parsed.state, parsed.error) == (code, state, None)


@settings(max_examples=150, deadline=500)
@given(code=URL_SAFE, before=BLANKS, after=BLANKS, fragment=st.sampled_from(["#_", "#", ""]))
def test_pasted_bare_code_is_the_code(code: str, before: str, after: str, fragment: str) -> None:
    parsed = parse_pasted(f"{before}{code}{fragment}{after}")
    assert (parsed.code, parsed.state) == (code, None)


# --- 3. token file names -------------------------------------------------------------------

DOCUMENTED_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
names = st.one_of(
    st.text(max_size=110),
    st.text(st.sampled_from("aZ9._-/\\\x00\n é"), max_size=12),
    st.from_regex(DOCUMENTED_NAME, fullmatch=True),
    st.from_regex(DOCUMENTED_NAME, fullmatch=True).map(lambda n: n + "\n"),
    st.integers(98, 102).map(lambda n: "a" * n),
)


def accepted(name: str) -> bool:
    try:
        validate_token_filename(name)
    except ValidationError:
        return False
    return True


@settings(max_examples=400, deadline=500)
@given(name=names)
@example(name="feed\n")
@example(name="a" * 100)
@example(name="a" * 101)
@example(name="a..b")
def test_token_file_names_follow_the_documented_rule_exactly(name: str) -> None:
    documented = name == "" or (DOCUMENTED_NAME.fullmatch(name) is not None and ".." not in name)
    assert accepted(name) == documented


@settings(max_examples=300, deadline=500)
@given(name=names)
def test_an_accepted_name_stays_a_direct_child_of_its_directory(name: str) -> None:
    if not name or not accepted(name):
        return
    directory = "/srv/igregistry/tokens"
    path = os.path.normpath(os.path.join(directory, name))
    assert os.path.dirname(path) == directory
    assert os.path.basename(path) == name
