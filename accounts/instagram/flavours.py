"""The two API flavours and their scopes (shared/instagram-api.md, the table at the top)."""

from __future__ import annotations

from enum import StrEnum


class Flavour(StrEnum):
    """The two Instagram API flavours; the token lifecycle is the same for both."""

    BASIC_DISPLAY = "basic_display"
    INSTAGRAM_LOGIN = "instagram_login"


DEFAULT_SCOPES: dict[Flavour, tuple[str, ...]] = {
    Flavour.BASIC_DISPLAY: ("user_profile", "user_media"),
    Flavour.INSTAGRAM_LOGIN: ("instagram_business_basic",),
}
ALLOWED_SCOPES: dict[Flavour, frozenset[str]] = {
    Flavour.BASIC_DISPLAY: frozenset({"user_profile", "user_media"}),
    Flavour.INSTAGRAM_LOGIN: frozenset(
        {
            "instagram_business_basic",
            "instagram_business_manage_messages",
            "instagram_business_manage_comments",
            "instagram_business_content_publish",
        }
    ),
}
