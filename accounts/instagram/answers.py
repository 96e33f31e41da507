"""Instagram's answers as typed results, built only from values that pass explicit rules.

Each `*_from` function takes a parsed JSON body (and the usage headers) and returns a
result or raises MalformedAnswer; it never lets a TypeError, OverflowError or the like
escape. The rules, and why:
- access tokens: printable ASCII without whitespace, 16 to 2048 characters (they go
  verbatim into a file a PHP page puts in a URL);
- ids: ASCII digits, at most 32 (they exceed 2**53: kept as text, never a float);
- `expires_in`: a positive integer of seconds, at most 400 days (documented: about 60);
- usernames: Instagram's own rule, letters, digits, `.` and `_`, at most 30 (they can
  become file names);
- permissions: a list of scope names, or a comma/space-separated string of them.
A token Instagram issued is never thrown away for a bad detail beside it: a missing or
unusable `expires_in` is taken as the documented 60 days (`expiry_assumed`), unreadable
permissions as "not reported".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .errors import MalformedAnswer
from .usage import Usage, as_int

TOKEN_RE = re.compile(r"[\x21-\x7e]{16,2048}")
ID_RE = re.compile(r"[0-9]{1,32}")
USERNAME_RE = re.compile(r"[A-Za-z0-9._]{1,30}")
SCOPE_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_EXPIRES_IN = 400 * 24 * 3600
# A long-lived token lives 60 days (shared/instagram-api.md, sections 3 and 4).
LONG_LIVED_SECONDS = 60 * 24 * 3600
MAX_PERMISSIONS = 50


@dataclass(frozen=True)
class ShortLivedToken:
    """The result of exchanging an authorization code (lives 1 hour)."""

    access_token: str = field(repr=False)
    user_id: str
    permissions: tuple[str, ...] = ()


@dataclass(frozen=True)
class LongLivedToken:
    """A long-lived token from the swap or a refresh. `expires_in` in seconds;
    `expiry_assumed` when Instagram did not say and 60 days were assumed."""

    access_token: str = field(repr=False)
    expires_in: int
    usage: Usage | None = None
    expiry_assumed: bool = False


@dataclass(frozen=True)
class Profile:
    """The account behind a token, from /me, with each id as /me named it (section 5):
    `id` (app-scoped with Instagram Login, the user's id with Basic Display) and `user_id`
    (Instagram Login only: the professional account's id). At least one is set: /me in
    the `data` envelope carries `user_id` and no `id`."""

    id: str | None
    username: str
    user_id: str | None = None
    account_type: str | None = None
    usage: Usage | None = None


def valid_token(value: Any) -> str | None:
    """The token if it follows the rules above, else None."""
    return value if isinstance(value, str) and TOKEN_RE.fullmatch(value) else None


def valid_id(value: Any) -> str | None:
    """The id as text if it is a non-negative integer of at most 32 ASCII digits."""
    # Bounded before str(): an int of over 4,300 digits makes str() raise ValueError.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**32:
        value = str(value)
    return value if isinstance(value, str) and ID_RE.fullmatch(value) else None


def valid_username(value: Any) -> str | None:
    """The username if Instagram could have issued it."""
    return value if isinstance(value, str) and USERNAME_RE.fullmatch(value) else None


def valid_permissions(value: Any) -> tuple[str, ...] | None:
    """Scope names from a list or a comma/space string; None when of another shape."""
    if isinstance(value, str) and len(value) <= 4096:
        value = [p for p in re.split(r"[,\s]+", value) if p]
    if not isinstance(value, list) or len(value) > MAX_PERMISSIONS:
        return None
    if not all(isinstance(p, str) and SCOPE_RE.fullmatch(p) for p in value):
        return None
    return tuple(value)


def short_lived_from(body: dict[str, Any]) -> ShortLivedToken:
    """The code exchange's answer, in any of its three shapes (section 2)."""
    entry: Any = body
    if isinstance(body.get("data"), list) and body["data"]:
        entry = body["data"][0]
    if not isinstance(entry, dict):
        raise MalformedAnswer("Instagram's code exchange answer had an unknown shape.")
    token, user_id = valid_token(entry.get("access_token")), valid_id(entry.get("user_id"))
    if token is None or user_id is None:
        raise MalformedAnswer("Instagram's code exchange answer had no usable token or "
                              "user id.")
    permissions = valid_permissions(entry.get("permissions") or [])
    return ShortLivedToken(access_token=token, user_id=user_id, permissions=permissions or ())


def long_lived_from(body: dict[str, Any], usage: Usage | None) -> LongLivedToken:
    """The swap's or the refresh's answer (sections 3 and 4)."""
    token = valid_token(body.get("access_token"))
    if token is None:
        raise MalformedAnswer("Instagram's token answer had no usable token.")
    expires_in = as_int(body.get("expires_in"), low=1, high=MAX_EXPIRES_IN)
    if expires_in is None:
        return LongLivedToken(access_token=token, expires_in=LONG_LIVED_SECONDS, usage=usage,
                              expiry_assumed=True)
    return LongLivedToken(access_token=token, expires_in=expires_in, usage=usage)


def profile_from(body: dict[str, Any], usage: Usage | None) -> Profile:
    """/me's answer, flat or in a `data` envelope (section 5)."""
    entry: Any = body
    if isinstance(body.get("data"), list):
        entry = body["data"][0] if body["data"] else None
    if not isinstance(entry, dict):
        raise MalformedAnswer("Instagram's profile answer had an unknown shape.")
    ids: dict[str, str | None] = {}
    for name in ("id", "user_id"):
        raw = entry.get(name)
        ids[name] = valid_id(raw) if raw not in (None, "") else None
        if raw not in (None, "") and ids[name] is None:
            raise MalformedAnswer(f"Instagram's profile answer had an unusable {name}.")
    username = valid_username(entry.get("username"))
    if (ids["id"] is None and ids["user_id"] is None) or username is None:
        raise MalformedAnswer("Instagram's profile answer had no usable id or username.")
    account_type = entry.get("account_type")
    if not (isinstance(account_type, str) and re.fullmatch(r"[A-Z_]{1,40}", account_type)):
        account_type = None
    return Profile(id=ids["id"], username=username, user_id=ids["user_id"],
                   account_type=account_type, usage=usage)
