"""Owner authorization links: an operator creates a single-use link for one account and
sends it to the account's owner, who opens it without a login and authorizes on
Instagram; the token lands through the ordinary code exchange (`oauth_complete`).

The link's secret is shown once and only its SHA-256 is stored. A link is spent when a
token is stored through it, and refused once used, revoked or expired. The OAuth state
it starts belongs to the link (not to a staff user), and the owner's browser is bound to
that state by the view (a signed cookie holding the state's hash): a redirect from
Instagram replayed in another browser is refused.

Messages of the errors raised here are for the owner (a member of the public): they name
the account, never a token, a secret or an admin page. What staff need is in the events.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

from .. import instagram, selectors
from ..models import Account, Event, OAuthState, OwnerLink
from ..selectors import OwnerLinkState
from ..timeutil import utc_text
from .alerts import alert_notice_queue
from .common import Actor, FlowError, event_record
from .oauth import oauth_complete, oauth_state_issue

logger = logging.getLogger(__name__)

# Bounds of a link's lifetime: the operator picks within them (OWNER_LINK_TTL_DAYS is the
# default). A link is a bearer secret travelling by mail or chat: it must not live long.
LIFETIME_MIN = timedelta(days=1)
LIFETIME_MAX = timedelta(days=30)
# 32 random bytes: 43 URL-safe characters, as OAuth states are made.
_SECRET_BYTES = 32


class OwnerLinkRefused(FlowError):
    """The link (or the owner's return from Instagram) cannot be used, and nothing was
    changed by it. `reason` is an OwnerLinkState (USED, EXPIRED, REVOKED), UNKNOWN (no
    such link or state), STATE (this return from Instagram was already handled, or came
    too late, while the link itself is still open) or OTHER_BROWSER (a redirect replayed
    away from the browser that opened the link); `link` is the link when there is one."""

    UNKNOWN = "unknown"
    STATE = "state"
    OTHER_BROWSER = "other_browser"

    def __init__(self, message: str, *, reason: str, link: OwnerLink | None = None) -> None:
        super().__init__(message, account=link.account if link is not None else None)
        self.reason = reason
        self.link = link


class OwnerFlowFailed(FlowError):
    """The owner denied at Instagram, or Instagram refused the code or the swap: nothing
    was stored and the link stays usable until it expires. `denied` tells a denial from
    a failure; `link` is the link."""

    def __init__(self, message: str, *, link: OwnerLink, denied: bool) -> None:
        super().__init__(message, account=link.account)
        self.link = link
        self.denied = denied


@dataclass(frozen=True)
class OwnerFlowStart:
    """Where to send the owner's browser, and the hash of the state it carries: the view
    binds the browser to it (the state itself is in the URL only)."""

    authorize_url: str
    state_hash: str


def owner_link_actor(link: OwnerLink) -> Actor:
    """Who acts when the owner goes through `link`: a job naming the link and the staff
    user who created it (the owner has no user here)."""
    creator = link.created_by.get_username() if link.created_by else "a deleted user"
    return Actor(job=f"owner link #{link.pk} from {creator}"[:100])  # Event.actor_job


def owner_link_create(*, account: Account, user: AbstractBaseUser, now: datetime,
                      lifetime: timedelta | None = None) -> tuple[OwnerLink, str]:
    """Create a single-use owner link for `account`, valid for `lifetime` (default
    OWNER_LINK_TTL_DAYS days; 1 to 30 days, else ValueError), and record it. Returns the
    link and its secret: the secret is not stored (only its SHA-256) and cannot be had
    again, so the caller shows it once."""
    lifetime = lifetime if lifetime is not None else timedelta(days=settings.OWNER_LINK_TTL_DAYS)
    if not LIFETIME_MIN <= lifetime <= LIFETIME_MAX:
        raise ValueError("An owner link lives from 1 to 30 days.")
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    link = OwnerLink.objects.create(secret_hash=selectors.secret_hash(secret), account=account,
                                    created_by=user, created_at=now, expires_at=now + lifetime)
    event_record(account=account, action="owner_link_create", outcome=Event.Outcome.OK,
                 message=f"Owner link #{link.pk} created, usable once until "
                         f"{utc_text(link.expires_at)}.",
                 actor=Actor(user=user), now=now)
    return link, secret


def owner_link_revoke(*, link: OwnerLink, user: AbstractBaseUser, now: datetime) -> bool:
    """Revoke the link so that it can no longer start or complete an authorization
    (a flow already at Instagram is refused when it comes back). Returns False, changing
    nothing, when the link was already used or revoked."""
    with transaction.atomic():
        # Locked: a completion holding the link decides first, and a used link stays used.
        locked = OwnerLink.objects.select_for_update().select_related("account").get(
            pk=link.pk)
        if locked.used_at is not None or locked.revoked_at is not None:
            return False
        locked.revoked_at, locked.revoked_by = now, user
        locked.save(update_fields=["revoked_at", "revoked_by"])
        event_record(account=locked.account, action="owner_link_revoke",
                     outcome=Event.Outcome.OK, message=f"Owner link #{locked.pk} revoked.",
                     actor=Actor(user=user), now=now)
    link.revoked_at, link.revoked_by = locked.revoked_at, locked.revoked_by
    return True


def owner_link_refusal(*, link: OwnerLink | None, now: datetime) -> OwnerLinkRefused | None:
    """Why `link` (None: no link has that secret) cannot be used at `now`, as the error
    the other functions raise, in the owner's words; None when it is open. Writes
    nothing (the page an owner opens from the link asks it)."""
    if link is None:
        return OwnerLinkRefused("This link is not valid.", reason=OwnerLinkRefused.UNKNOWN)
    state = selectors.owner_link_state(link=link, now=now)
    if state == OwnerLinkState.USED:
        message = "This link was already used: the account is authorized."
    elif state == OwnerLinkState.REVOKED:
        message = "This link was revoked."
    elif state == OwnerLinkState.EXPIRED:
        message = f"This link expired on {utc_text(link.expires_at)}."
    else:
        return None
    return OwnerLinkRefused(message, reason=state, link=link)


def _record_refusal(refusal: OwnerLinkRefused, *, what: str, now: datetime) -> None:
    if refusal.link is None:
        logger.info("owner link: %s refused: %s", what, refusal.reason)
        return
    event_record(account=refusal.link.account, action="owner_link_refused",
                 outcome=Event.Outcome.DENIED,
                 message=f"Owner link #{refusal.link.pk}: {what} refused ({refusal.reason}).",
                 actor=owner_link_actor(refusal.link), now=now)


def owner_link_start(*, secret: str, now: datetime) -> OwnerFlowStart:
    """Start the owner's authorization: check the link, create an OAuth state that belongs
    to it (no staff user), record the start, and return Instagram's authorize URL with
    the state's hash. Raises OwnerLinkRefused for an unknown, used, revoked or expired
    link (recorded when the link is known; nothing else changes)."""
    refusal = None
    with transaction.atomic():
        link = selectors.owner_link_find(secret=secret, for_update=True)
        refusal = owner_link_refusal(link=link, now=now)
        if refusal is None:
            authorize_url, state_hash = oauth_state_issue(
                account=link.account, owner_link=link, actor=owner_link_actor(link), now=now)
    if refusal is not None:
        _record_refusal(refusal, what="start", now=now)
        raise refusal
    return OwnerFlowStart(authorize_url=authorize_url, state_hash=state_hash)


def _owner_state_consume(*, state: str | None, bound_state_hashes: Collection[str],
                         now: datetime) -> OwnerLink:
    """Mark the owner's state used and return its link, or raise OwnerLinkRefused: no
    state, unknown, not an owner link's, used, expired, or arriving in another browser
    than the one that opened the link (then the state is left unused for that one)."""
    if not state:
        raise owner_link_refusal(link=None, now=now)
    state_hash = selectors.secret_hash(state)
    refusal = None
    with transaction.atomic():
        row = (OAuthState.objects.select_for_update(of=("self",))
               .select_related("owner_link__account__app", "owner_link__created_by")
               .filter(state_hash=state_hash, owner_link__isnull=False).first())
        if row is None:
            raise owner_link_refusal(link=None, now=now)
        link = row.owner_link
        if row.used_at is not None or row.expires_at <= now:
            # A spent or dead link says so; an open one is simply opened again.
            refusal = owner_link_refusal(link=link, now=now) or OwnerLinkRefused(
                "This return from Instagram was already handled or came too late. Open "
                "the link you were sent again.", reason=OwnerLinkRefused.STATE, link=link)
        elif state_hash not in bound_state_hashes:
            refusal = OwnerLinkRefused(
                "Instagram sent you back to a different browser than the one that opened "
                "the link. Open the link again in this browser and continue from there.",
                reason=OwnerLinkRefused.OTHER_BROWSER, link=link)
        else:
            row.used_at = now
            row.save(update_fields=["used_at"])
    if refusal is not None:
        _record_refusal(refusal, what="return from Instagram", now=now)
        raise refusal
    return link


def owner_link_callback(*, params: Mapping[str, str], bound_state_hashes: Collection[str],
                        now: datetime) -> Account:
    """Complete the owner's authorization from Instagram's redirect (`params`: its query).

    `bound_state_hashes`: the state hashes the requesting browser was bound to when it
    opened owner links (what `owner_link_start` returned); a state not among them is
    refused. The state is consumed, then the link is locked and checked again (used,
    revoked or expired meanwhile: refused), the code goes through the ordinary exchange,
    swap and store as the link's actor, and only once the token is stored is the link
    marked used, recorded, and staff notified (`alert_notice_queue`). Returns the account.

    Raises OwnerLinkRefused (nothing happened), or OwnerFlowFailed for a denial at
    Instagram or a refused code or swap (recorded; the link stays usable)."""
    callback = instagram.parse_callback(params)
    link = _owner_state_consume(state=callback.state, bound_state_hashes=bound_state_hashes,
                                now=now)
    account, actor = link.account, owner_link_actor(link)
    if callback.error:
        reason = callback.error_description or callback.error
        event_record(account=account, action="authorize", outcome=Event.Outcome.DENIED,
                     message=f"Instagram answered {callback.error}: {reason}", actor=actor,
                     now=now)
        raise OwnerFlowFailed("You did not allow access on Instagram, so nothing was stored.",
                              link=link, denied=True)
    if not callback.code:
        raise OwnerFlowFailed("The answer from Instagram carried no authorization code, so "
                              "nothing was stored.", link=link, denied=False)
    failure: FlowError | None = None
    with transaction.atomic():
        # Locked across the exchange so two tabs (two states of one link) cannot both
        # spend it: the second waits here, then finds the link used. The calls make the
        # lock last up to three Instagram deadlines; only this link's row waits on it.
        locked = OwnerLink.objects.select_for_update().get(pk=link.pk)
        locked.account, locked.created_by = link.account, link.created_by
        failure = owner_link_refusal(link=locked, now=now)
        if failure is None:
            try:
                account = oauth_complete(account=account, code=callback.code, actor=actor,
                                         now=now)
            except FlowError as exc:
                # Kept, not rolled back: the events say why, and a short-lived token
                # Instagram issued stays for the sweep to swap.
                logger.info("owner link %s: authorization failed: %s", link.pk, exc.message)
                failure = OwnerFlowFailed(
                    "Instagram did not complete the authorization, so nothing was stored.",
                    link=link, denied=False)
            else:
                locked.used_at = now
                locked.save(update_fields=["used_at"])
                event_record(account=account, action="owner_link_use",
                             outcome=Event.Outcome.OK,
                             message=f"The owner authorized @{account.username} through "
                                     f"owner link #{locked.pk}.",
                             actor=actor, now=now)
                alert_notice_queue(
                    account=account, now=now,
                    message=f"the owner authorized @{account.username} through an owner "
                            f"link")
    if isinstance(failure, OwnerLinkRefused):
        _record_refusal(failure, what="completion", now=now)
    if failure is not None:
        raise failure
    return account
