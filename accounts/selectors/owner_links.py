"""Reads for owner authorization links: find a link by its secret, say what state it is
in, build the link to send, and tell an owner's OAuth state from a staff user's."""

from __future__ import annotations

import hashlib
from datetime import datetime
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.db.models import Case, CharField, QuerySet, Value, When
from django.urls import reverse

from ..models import Account, OAuthState, OwnerLink
from .onboarding import callback_url

# The query parameter of an owner link that carries its secret.
OWNER_LINK_PARAM = "link"


class OwnerLinkState:
    """What an owner link is now. A used link stays used (even if revoked or expired
    later); a revoked one stays revoked; otherwise it is open until it expires."""

    OPEN = "open"
    USED = "used"
    EXPIRED = "expired"
    REVOKED = "revoked"

    LABELS = {OPEN: "Open", USED: "Used", EXPIRED: "Expired", REVOKED: "Revoked"}


def secret_hash(value: str) -> str:
    """The hex SHA-256 of a bearer secret (an owner link's secret, an OAuth state): what
    `OwnerLink.secret_hash` and `OAuthState.state_hash` store and are looked up by, and
    what an owner's browser is bound to. The secret itself is never kept."""
    return hashlib.sha256(value.encode()).hexdigest()


def owner_link_find(*, secret: str, for_update: bool = False) -> OwnerLink | None:
    """The link whose secret this is, with its account, app and creator; None for a
    secret no link has (tampered, mistyped or made up). `for_update`: lock the link's row
    (inside the caller's transaction), and load the app in full."""
    if not secret or len(secret) > 200:
        return None
    queryset = OwnerLink.objects.select_related("account__app", "created_by")
    queryset = (queryset.select_for_update(of=("self",)) if for_update
                else queryset.defer("account__app__app_secret"))
    return queryset.filter(secret_hash=secret_hash(secret)).first()


def owner_link_url(*, secret: str) -> str:
    """The link to send to the owner: absolute, on SITE_URL (the registry's public
    address, where Instagram's redirect URI also points)."""
    query = urlencode({OWNER_LINK_PARAM: secret})
    return f"{settings.SITE_URL}{reverse('owner-authorize')}?{query}"


def owner_link_completes_here(*, redirect_uri: str) -> bool:
    """Whether Instagram's redirect (the app's `redirect_uri`) brings the owner back to
    this registry's callback on SITE_URL (`callback_url`), where the link was opened:
    otherwise the owner lands elsewhere (or without the cookie that binds their browser)
    and the link cannot complete."""
    expected, given = urlsplit(callback_url()), urlsplit(redirect_uri)
    return ((given.scheme, given.netloc.lower(), given.path)
            == (expected.scheme, expected.netloc.lower(), expected.path))


def owner_link_state(*, link: OwnerLink, now: datetime) -> str:
    """The link's OwnerLinkState at `now`."""
    if link.used_at is not None:
        return OwnerLinkState.USED
    if link.revoked_at is not None:
        return OwnerLinkState.REVOKED
    if link.expires_at <= now:
        return OwnerLinkState.EXPIRED
    return OwnerLinkState.OPEN


def owner_links_with_state(*, now: datetime,
                           queryset: QuerySet[OwnerLink] | None = None) -> QuerySet[OwnerLink]:
    """Owner links annotated with `state` (an OwnerLinkState, the same rule as
    `owner_link_state`), computed in SQL so the admin can filter and sort on it."""
    queryset = queryset if queryset is not None else OwnerLink.objects.all()
    return queryset.annotate(state=Case(
        When(used_at__isnull=False, then=Value(OwnerLinkState.USED)),
        When(revoked_at__isnull=False, then=Value(OwnerLinkState.REVOKED)),
        When(expires_at__lte=now, then=Value(OwnerLinkState.EXPIRED)),
        default=Value(OwnerLinkState.OPEN),
        output_field=CharField(),
    ))


def oauth_state_of_owner_link(*, state: str | None) -> bool:
    """Whether this OAuth `state` (as Instagram sent it back) was issued through an owner
    link, so that its callback is the owner's, not a staff user's. False for a missing or
    unknown state."""
    if not state or len(state) > 200:
        return False
    return OAuthState.objects.filter(state_hash=secret_hash(state),
                                     owner_link__isnull=False).exists()


def owner_page_account(*, account_id: int) -> Account | None:
    """What an owner's thank-you page shows of an account: its label and username."""
    return Account.objects.only("label", "username").filter(pk=account_id).first()
