"""Reads for owner authorization links: find a link by its secret, say what state it is
in, and tell an owner's OAuth state from a staff user's."""

from __future__ import annotations

import hashlib
from datetime import datetime

from django.db.models import Case, CharField, Q, QuerySet, Value, When

from ..models import Account, OAuthState, OwnerLink


class OwnerLinkState:
    """What an owner link is now. A used link stays used (even if revoked or expired
    later); a revoked one stays revoked; otherwise it is open until it expires."""

    OPEN = "open"
    USED = "used"
    EXPIRED = "expired"
    REVOKED = "revoked"

    LABELS = {OPEN: "Open", USED: "Used", EXPIRED: "Expired", REVOKED: "Revoked"}


def _sha256(value: str) -> str:
    # The digest the services store (`secret_hash`, `state_hash`): a bearer secret is
    # never kept, only what it hashes to.
    return hashlib.sha256(value.encode()).hexdigest()


def owner_link_find(*, secret: str) -> OwnerLink | None:
    """The link whose secret this is, with its account, app and creator; None for a
    secret no link has (tampered, mistyped or made up)."""
    if not secret or len(secret) > 200:
        return None
    return (
        OwnerLink.objects.select_related("account__app", "created_by")
        .defer("account__app__app_secret")
        .filter(secret_hash=_sha256(secret))
        .first()
    )


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


def owner_links_in_state(*, state: str, now: datetime,
                         queryset: QuerySet[OwnerLink]) -> QuerySet[OwnerLink]:
    """`queryset` narrowed to the links in `state` (an OwnerLinkState) at `now`."""
    conditions = {
        OwnerLinkState.USED: Q(used_at__isnull=False),
        OwnerLinkState.REVOKED: Q(used_at__isnull=True, revoked_at__isnull=False),
        OwnerLinkState.EXPIRED: Q(used_at__isnull=True, revoked_at__isnull=True,
                                  expires_at__lte=now),
        OwnerLinkState.OPEN: Q(used_at__isnull=True, revoked_at__isnull=True,
                               expires_at__gt=now),
    }
    return queryset.filter(conditions[state]) if state in conditions else queryset


def oauth_state_of_owner_link(*, state: str | None) -> bool:
    """Whether this OAuth `state` (as Instagram sent it back) was issued through an owner
    link, so that its callback is the owner's, not a staff user's. False for a missing or
    unknown state."""
    if not state or len(state) > 200:
        return False
    return OAuthState.objects.filter(state_hash=_sha256(state),
                                     owner_link__isnull=False).exists()


def owner_page_account(*, account_id: int) -> Account | None:
    """What an owner's thank-you page shows of an account: its label and username."""
    return Account.objects.only("label", "username").filter(pk=account_id).first()
