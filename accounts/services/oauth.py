"""The OAuth flow: start with a state, take Instagram's redirect (or a pasted URL),
exchange the code, swap for a long-lived token."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import DatabaseError, transaction

from .. import instagram, selectors
from ..instagram import InstagramError, TokenInvalid
from ..models import Account, Event, OAuthState, OwnerLink, PendingToken, Token
from ..timeutil import utc_text
from .common import Actor, FlowError, event_record, instagram_client, profile_fields
from .files import token_export
from .tokens import token_store

logger = logging.getLogger(__name__)

# An authorization code's short-lived token lives 1 hour (shared/instagram-api.md, 2).
SHORT_LIVED_LIFETIME = timedelta(hours=1)


def _advice(exc: Exception, flavour: str | None = None) -> str:
    """What to do about this failure, when it is a known one (`instagram.guidance`)."""
    guidance = instagram.guidance_for_error(exc, flavour=flavour)
    return guidance.advice if guidance else ""


# --- OAuth ----------------------------------------------------------------------------


def oauth_start(*, account: Account, user: AbstractBaseUser, now: datetime) -> str:
    """Create a single-use state bound to the account and the staff user, valid for
    OAUTH_STATE_TTL_SECONDS, and return Instagram's authorize URL that carries it."""
    authorize_url, _ = oauth_state_issue(account=account, user=user, actor=Actor(user=user),
                                         now=now)
    return authorize_url


def oauth_state_issue(
    *, account: Account, actor: Actor, now: datetime, user: AbstractBaseUser | None = None,
    owner_link: OwnerLink | None = None,
) -> tuple[str, str]:
    """Create a single-use state for the account, started by exactly one of `user` (staff)
    or `owner_link` (the account's owner), valid for OAUTH_STATE_TTL_SECONDS; record the
    start as `actor`. Returns Instagram's authorize URL that carries the state, and the
    state's hash (what an owner's browser is bound to; the state itself is not kept)."""
    state = secrets.token_urlsafe(32)
    state_hash = selectors.secret_hash(state)
    OAuthState.objects.create(
        state_hash=state_hash,
        account=account,
        user=user,
        owner_link=owner_link,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.OAUTH_STATE_TTL_SECONDS),
    )
    # States nobody came back with are clutter; clearing them here keeps the table small.
    OAuthState.objects.filter(expires_at__lt=now - timedelta(days=1)).delete()
    event_record(
        account=account, action="authorize_start", outcome=Event.Outcome.OK,
        actor=actor, now=now,
    )
    app = account.app
    authorize_url = instagram_client().authorize_url(
        flavour=app.flavour_enum,
        client_id=app.app_id,
        redirect_uri=app.redirect_uri,
        scopes=app.scope_list(),
        state=state,
    )
    return authorize_url, state_hash


def oauth_state_consume(*, state: str | None, user: AbstractBaseUser, now: datetime) -> Account:
    """Mark a state used and return its account, or raise FlowError if it is missing,
    unknown (forged), expired, already used, or was issued to another staff user."""
    if not state:
        raise FlowError(
            "The answer from Instagram carried no state, so it cannot be matched to an "
            "authorization started here. Start again from the account's Authorize action."
        )
    with transaction.atomic():
        # Locked so that two tabs replaying the same redirect cannot both pass.
        row = (
            OAuthState.objects.select_for_update()
            .select_related("account__app")
            .filter(state_hash=selectors.secret_hash(state))
            .first()
        )
        if row is None:
            raise FlowError(
                "This authorization was not started by the registry (unknown state). "
                "Start again from the account's Authorize action."
            )
        if row.used_at is not None:
            raise FlowError(
                "This authorization link was already used. Start again from the account's "
                "Authorize action.",
                account=row.account,
            )
        if row.expires_at <= now:
            raise FlowError(
                "This authorization expired before Instagram sent the browser back. "
                "Start again from the account's Authorize action.",
                account=row.account,
            )
        if row.owner_link_id is not None:
            # The owner's browser completes it (accounts.services.owner_links), not staff.
            raise FlowError(
                "This authorization was started through an owner link: only the browser "
                "that opened the link can complete it.",
                account=row.account,
            )
        if row.user_id != user.pk:
            raise FlowError(
                "This authorization was started by another staff user. Start again "
                "while signed in as yourself.",
                account=row.account,
            )
        row.used_at = now
        row.save(update_fields=["used_at"])
    return row.account


def oauth_callback(
    *, params: Mapping[str, str], user: AbstractBaseUser, now: datetime
) -> Account:
    """Handle Instagram's redirect: check the state, then take the denial or the code
    through to a stored long-lived token. Raises FlowError with a message for staff."""
    callback = instagram.parse_callback(params)
    account = oauth_state_consume(state=callback.state, user=user, now=now)
    return _oauth_finish(account=account, callback=callback, actor=Actor(user=user), now=now)


def oauth_paste(
    *, account: Account, text: str, user: AbstractBaseUser, now: datetime
) -> Account:
    """Complete the flow from what staff pasted: the redirected URL or the bare code.

    A pasted URL that carries a state must carry a valid one for this account. A bare code
    carries none, so it completes only the authorization this user started for this
    account with Authorize, unused and unexpired (OAUTH_STATE_TTL_SECONDS): a code from
    elsewhere, or another person's flow, is refused. Raises FlowError."""
    callback = instagram.parse_pasted(text)
    if callback.state is not None:
        state_account = oauth_state_consume(state=callback.state, user=user, now=now)
        if state_account.pk != account.pk:
            raise FlowError(
                f"That URL belongs to the authorization of another account "
                f"({state_account}).",
                account=account,
            )
    else:
        _state_of_own_flow_consume(account=account, user=user, now=now)
    return _oauth_finish(account=account, callback=callback, actor=Actor(user=user), now=now)


def _state_of_own_flow_consume(*, account: Account, user: AbstractBaseUser,
                               now: datetime) -> None:
    with transaction.atomic():
        row = (
            OAuthState.objects.select_for_update()
            .filter(account=account, user_id=user.pk, used_at__isnull=True,
                    expires_at__gt=now)
            .order_by("-created_at")
            .first()
        )
        if row is None:
            raise FlowError(
                "A bare code completes only an authorization you started for this account: "
                "press Authorize, allow at Instagram, then paste the code (or the whole "
                "address) here. Nothing was stored.",
                account=account,
            )
        row.used_at = now
        row.save(update_fields=["used_at"])


def _oauth_finish(
    *, account: Account, callback: instagram.CallbackParams, actor: Actor, now: datetime
) -> Account:
    if callback.error:
        reason = callback.error_description or callback.error
        said = f"{callback.error}: {reason}"
        guidance = instagram.guidance_for(said, flavour=account.app.flavour)
        advice = guidance.advice if guidance else ""
        event_record(
            account=account, action="authorize", outcome=Event.Outcome.DENIED,
            message=f"Instagram answered {said}", actor=actor, now=now,
        )
        raise FlowError(
            f"Authorization was not granted ({said}). Nothing was stored.",
            account=account, advice=advice,
        )
    if not callback.code:
        raise FlowError("The answer from Instagram carried no code.", account=account)
    return oauth_complete(account=account, code=callback.code, actor=actor, now=now)


def oauth_complete(*, account: Account, code: str, actor: Actor, now: datetime) -> Account:
    """Exchange an authorization code for a short-lived token, keep it (encrypted) until
    it is swapped for a long-lived one, identify the account with /me, store, export the
    file and log the event. Raises FlowError with a message for staff."""
    app = account.app
    try:
        short = instagram_client().exchange_code(
            client_id=app.app_id,
            client_secret=app.app_secret,
            redirect_uri=app.redirect_uri,
            code=code,
        )
    except InstagramError as exc:
        # Worded by what it was: no answer, an unusable one, or Instagram's refusal.
        failure = f"The code exchange failed: {instagram.failure_text(exc)}."
        advice = _advice(exc, app.flavour)
        event_record(
            account=account, action="authorize", outcome=Event.Outcome.FAILED,
            message=f"{failure} {advice}".strip(), actor=actor, now=now,
        )
        raise FlowError(f"{failure} Nothing was stored.", account=account,
                        advice=advice) from None
    # The code is spent: from here on the short-lived token is all there is, so it is kept
    # and a sweep can finish the swap within its hour if this request dies. When Instagram
    # names no permissions, the scopes asked for are recorded, marked as such.
    requested = not short.permissions
    PendingToken.objects.update_or_create(
        account=account,
        defaults={
            "value": short.access_token,
            "expires_at": now + SHORT_LIVED_LIFETIME,
            "permissions": list(short.permissions or app.scope_list()),
            "permissions_requested": requested,
            "exchange_user_id": short.user_id,
            "created_at": now,
        },
    )
    pending_token_swap(account_id=account.pk, actor=actor, now=now)
    account.refresh_from_db()
    return account


def pending_token_swap(
    *, account_id: int, actor: Actor, now: datetime, skip_locked: bool = False
) -> bool:
    """Swap the account's pending short-lived token for a long-lived one and store it.

    Returns False when there was nothing to do (no pending token, or another worker holds
    it). Raises FlowError when the swap failed: a temporary failure keeps the pending
    token for the next sweep, anything else (or an expired token) discards it."""
    failure: FlowError | None = None
    with transaction.atomic():
        # Locked across the calls so the flow and a sweep never swap the same token twice.
        pending = (
            PendingToken.objects.select_for_update(skip_locked=skip_locked, of=("self",))
            .select_related("account__app")
            .filter(account_id=account_id)
            .first()
        )
        if pending is None:
            return False
        account = pending.account
        if pending.expires_at <= now:
            pending.delete()
            failure = FlowError(
                "The short-lived token expired before it could be swapped for a long-lived "
                "one. Authorize the account again.", account=account,
            )
            if not selectors.tokens_refreshable(now=now).filter(account=account).exists():
                Account.objects.filter(pk=account.pk).update(
                    status=Account.Status.NEEDS_REAUTH, last_error=failure.message
                )
            event_record(account=account, action="swap", outcome=Event.Outcome.FAILED,
                         message=failure.message, actor=actor, now=now)
        else:
            failure = _swap_and_store(pending=pending, actor=actor, now=now)
    if failure is not None:
        raise failure
    token_export(account=account, actor=actor, now=now)
    return True


def _swap_and_store(*, pending: PendingToken, actor: Actor, now: datetime) -> FlowError | None:
    account, app = pending.account, pending.account.app
    client = instagram_client()
    try:
        long = client.exchange_for_long_lived(
            client_secret=app.app_secret, access_token=pending.value
        )
        profile = client.me(access_token=long.access_token, fields=profile_fields(app.flavour))
    except TokenInvalid as exc:
        # The short-lived token itself is dead: nothing is left to try again with.
        pending.delete()
        failure = f"The swap for a long-lived token failed: {instagram.failure_text(exc)}."
        advice = _advice(exc, app.flavour)
        event_record(account=account, action="authorize", outcome=Event.Outcome.FAILED,
                     message=f"{failure} {advice}".strip(), actor=actor, now=now)
        return FlowError(f"{failure} Nothing was stored.", account=account, advice=advice)
    except InstagramError as exc:
        # Temporary, or a refusal that may not last (an unexpected status, a 4xx that is
        # not about the token): the short-lived token Instagram issued is kept.
        message = (
            f"Instagram did not complete the swap for a long-lived token "
            f"({instagram.failure_text(exc)}). The short-lived token is kept: the registry "
            f"tries again until the short-lived token expires at "
            f"{utc_text(pending.expires_at)}; if Instagram keeps refusing, authorize again."
        )
        advice = _advice(exc, app.flavour)
        event_record(account=account, action="swap", outcome=Event.Outcome.FAILED,
                     message=f"{message} {advice}".strip(), actor=actor, now=now)
        return FlowError(message, account=account, advice=advice)
    except DatabaseError:
        raise
    except Exception as exc:  # a bug of ours must not lose the short-lived token either
        logger.exception("swap for account %s failed", account.pk)
        message = (f"The swap did not complete (the registry failed: "
                   f"{type(exc).__name__}); the short-lived token is kept and the registry "
                   f"tries again until {utc_text(pending.expires_at)}.")
        event_record(account=account, action="swap", outcome=Event.Outcome.FAILED,
                     message=message, actor=actor, now=now)
        return FlowError(message, account=account)
    pending.delete()
    try:
        token_store(
            account=account,
            value=long.access_token,
            kind=Token.Kind.LONG,
            obtained_at=now,
            expires_at=now + timedelta(seconds=long.expires_in),
            permissions=list(pending.permissions),
            permissions_requested=pending.permissions_requested,
            profile=profile,
            action="authorize",
            actor=actor,
            now=now,
            expiry_assumed=long.expiry_assumed,
            exchange_user_id=pending.exchange_user_id,
        )
    except FlowError as exc:
        return exc
    return None
