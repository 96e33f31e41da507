"""The documented rules of Instagram's answers (accounts/instagram/answers.py), restated
rather than imported so that a rule loosened in the code fails, and hypothesis strategies
for anything Instagram could send: deep nesting, huge ints, NaN, non-ASCII digits, control
characters, bools where ints go. Shared by the property tests of the parsers and of the
client over HTTP."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import strategies as st

from accounts.instagram import LongLivedToken, Profile, ShortLivedToken, Usage

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
header_values = st.one_of(
    wire_json.map(json.dumps), st.text(max_size=60),
    st.sampled_from([10, 21, 1001, 5000]).map(lambda n: "[" * n + "]" * n),
    st.sampled_from([10, 21, 1001]).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.just('{"call_count": ' + "9" * 5000 + "}"),
)

