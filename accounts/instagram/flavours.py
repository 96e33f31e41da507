"""The two API flavours and their scopes (shared/instagram-api.md, the table at the top).

Meta adds and renames permissions: a scope the registry does not know is a warning, not a
refusal (it may be new). Only names known to be wrong are refused, each with its
replacement: the `business_*` names retired on 2025-01-27, and a scope of the other flavour.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class Flavour(StrEnum):
    """The two Instagram API flavours; the token lifecycle is the same for both."""

    BASIC_DISPLAY = "basic_display"
    INSTAGRAM_LOGIN = "instagram_login"


# The Basic Display API was shut down on this day: every call has failed since.
BASIC_DISPLAY_SHUTDOWN = "2024-12-04"
# The old business_* scope names stopped working on this day (instagram_business_* since).
BUSINESS_SCOPES_RETIRED = "2025-01-27"

DEFAULT_SCOPES: dict[Flavour, tuple[str, ...]] = {
    Flavour.BASIC_DISPLAY: ("user_profile", "user_media"),
    Flavour.INSTAGRAM_LOGIN: ("instagram_business_basic",),
}
# The scopes known to be current for each flavour.
ALLOWED_SCOPES: dict[Flavour, frozenset[str]] = {
    Flavour.BASIC_DISPLAY: frozenset({"user_profile", "user_media"}),
    Flavour.INSTAGRAM_LOGIN: frozenset(
        {
            "instagram_business_basic",
            "instagram_business_manage_messages",
            "instagram_business_manage_comments",
            "instagram_business_content_publish",
            "instagram_business_manage_insights",
        }
    ),
}
# Names that never work for the flavour, with what to use instead.
_RETIRED_BUSINESS = {
    name.removeprefix("instagram_"): name
    for name in ALLOWED_SCOPES[Flavour.INSTAGRAM_LOGIN]
}
REFUSED_SCOPES: dict[Flavour, dict[str, str]] = {
    Flavour.INSTAGRAM_LOGIN: {
        **{old: f"retired on {BUSINESS_SCOPES_RETIRED}: use {new}"
           for old, new in _RETIRED_BUSINESS.items()},
        "user_profile": "a Basic Display scope: use instagram_business_basic",
        "user_media": "a Basic Display scope: use instagram_business_basic",
    },
    Flavour.BASIC_DISPLAY: {
        **{name: ("an Instagram Login scope: make this an Instagram Login app (Basic Display "
                  f"was shut down on {BASIC_DISPLAY_SHUTDOWN})")
           for name in ALLOWED_SCOPES[Flavour.INSTAGRAM_LOGIN]},
        **{old: (f"retired on {BUSINESS_SCOPES_RETIRED}, and an Instagram Login scope: make "
                 f"this an Instagram Login app and use {new}")
           for old, new in _RETIRED_BUSINESS.items()},
    },
}


@dataclass(frozen=True)
class ScopeCheck:
    """What is wrong with a list of scopes for a flavour: `refused` maps each name that
    never works to what to use instead; `unknown` lists names the registry does not know
    (perhaps new at Meta: allowed, with a warning)."""

    refused: dict[str, str] = field(default_factory=dict)
    unknown: tuple[str, ...] = ()


def scopes_check(flavour: Flavour, scopes: Iterable[str]) -> ScopeCheck:
    """Sort the scopes into refused (with their replacement) and unknown ones."""
    refused: dict[str, str] = {}
    unknown: list[str] = []
    for scope in dict.fromkeys(scopes):
        if scope in ALLOWED_SCOPES[flavour]:
            continue
        if scope in REFUSED_SCOPES[flavour]:
            refused[scope] = REFUSED_SCOPES[flavour][scope]
        else:
            unknown.append(scope)
    return ScopeCheck(refused=refused, unknown=tuple(unknown))
