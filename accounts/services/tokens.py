"""Storing, verifying and importing tokens."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction

from .. import instagram, selectors
from ..identity import InstagramIds, same_account
from ..instagram import InstagramError, Profile, TokenInvalid
from ..models import Account, Event, Token
from ..timeutil import as_utc, utc_text
from .common import (
    ASSUMED_EXPIRY_NOTE,
    LONG_LIVED_LIFETIME,
    Actor,
    FlowError,
    event_record,
    instagram_client,
    profile_fields,
)
from .files import token_export, token_file_dead_token_apply

# An imported expiry may be this much past 60 days from now: clocks and rounding differ.
IMPORT_EXPIRY_SLACK = timedelta(days=1)


def token_store(
    *,
    account: Account,
    value: str,
    kind: str,
    obtained_at: datetime,
    expires_at: datetime,
    permissions: list[str] | None,
    profile: Profile,
    action: str,
    actor: Actor,
    now: datetime,
    expiry_assumed: bool = False,
    exchange_user_id: str = "",
    permissions_requested: bool = False,
) -> Token:
    """Store a token for the account after checking that it belongs to the right
    Instagram user (`accounts.identity`: any id the account and the answer share);
    raises FlowError (and logs the refusal) when it does not, or when another account of
    the app holds one of the answer's ids. Stores each id in its own field, keeping those
    the answer did not carry. `exchange_user_id`: the code exchange's `user_id`, when the
    token came from one. `expiry_assumed`: Instagram gave no expiry and 60 days were
    assumed (said in the event). `permissions_requested`: Instagram named no permissions,
    `permissions` are the scopes asked for. A token stored ends any hold on its refreshes
    (`refresh_held_since`)."""
    token = None
    answered = _answered_ids(profile, exchange_user_id)
    with transaction.atomic():
        locked = Account.objects.select_for_update().get(pk=account.pk)
        problem = _identity_problem(locked, profile, answered)
        if problem is None:
            ids = answered.merged_into(selectors.account_instagram_ids(locked))
            locked.ig_id, locked.ig_user_id = ids.id, ids.user_id
            locked.ig_exchange_user_id = ids.exchange_user_id
            locked.username = profile.username
            locked.status = Account.Status.ACTIVE
            locked.last_error = ""
            locked.save(
                update_fields=["ig_id", "ig_user_id", "ig_exchange_user_id", "username",
                               "status", "last_error", "updated_at"]
            )
            token, _ = Token.objects.update_or_create(
                account=locked,
                defaults={
                    "value": value,
                    "kind": kind,
                    "obtained_at": obtained_at,
                    "expires_at": expires_at,
                    "last_refreshed_at": None,
                    "next_attempt_at": None,
                    "refresh_failures": 0,
                    "refresh_held_since": None,
                    **({"permissions": permissions,
                        "permissions_requested": permissions_requested}
                       if permissions is not None else {}),
                },
            )
            event_record(
                account=locked, action=action, outcome=Event.Outcome.OK,
                message=(
                    f"Long-lived token for @{profile.username}, "
                    f"expires {utc_text(expires_at)}."
                    + (ASSUMED_EXPIRY_NOTE if expiry_assumed else "")
                ),
                actor=actor, now=now,
            )
    if token is None:
        # Recorded outside the block above, which stored nothing, so the refusal is kept.
        event_record(account=account, action=action, outcome=Event.Outcome.FAILED,
                     message=problem, actor=actor, now=now)
        raise FlowError(problem, account=account)
    return token


def _answered_ids(profile: Profile, exchange_user_id: str = "") -> InstagramIds:
    return InstagramIds(id=profile.id or "", user_id=profile.user_id or "",
                        exchange_user_id=exchange_user_id)


def _twin_of(account: Account, answered: InstagramIds) -> Account | None:
    """Another account of the same app that knows one of the answered ids (one query)."""
    return (selectors.accounts_of_instagram_ids(app_id=account.app_id,
                                                instagram_ids=answered.known())
            .exclude(pk=account.pk).order_by("pk").first())


def _identity_problem(account: Account, profile: Profile,
                      answered: InstagramIds) -> str | None:
    stored = selectors.account_instagram_ids(account)
    if same_account(stored, answered) is False:
        return (
            f"The wrong Instagram account was authorized: this account is "
            f"{account.username or 'known'} ({stored.describe()}), Instagram answered for "
            f"@{profile.username} ({answered.describe()}). Nothing was stored; sign in to "
            f"Instagram as the right account and try again."
        )
    twin = _twin_of(account, answered)
    if twin is not None:
        return (
            f"@{profile.username} is already registered as account '{twin.label}'. "
            f"Nothing was stored."
        )
    return None


# --- verify and import ------------------------------------------------------------------


def account_verify(*, account: Account, actor: Actor, now: datetime) -> Profile:
    """Ask Instagram who the stored token belongs to. A dead token moves the account to
    'needs re-authorization'; a live, unexpired one brings an account flagged as needing
    re-authorization or in error back to active. Raises FlowError on any failure."""
    token = Token.objects.filter(account=account).first()
    if token is None:
        raise FlowError("This account has no token yet: authorize it first.", account=account)
    try:
        profile = instagram_client().me(
            access_token=token.value, fields=profile_fields(account.app.flavour)
        )
    except InstagramError as exc:
        fields = {"last_error": str(exc)}
        if isinstance(exc, TokenInvalid):
            fields["status"] = Account.Status.NEEDS_REAUTH
        Account.objects.filter(pk=account.pk).update(**fields)
        event_record(
            account=account, action="verify", outcome=Event.Outcome.FAILED,
            message=str(exc), actor=actor, now=now,
        )
        if isinstance(exc, TokenInvalid):
            token_file_dead_token_apply(account=account, actor=actor, now=now)
        raise FlowError(f"Instagram did not accept the token: {exc}", account=account) from None
    answered = _answered_ids(profile)
    message = ""
    with transaction.atomic():
        # The ids as they are now (the caller's copy may predate an authorization), held
        # until they are written.
        locked = Account.objects.select_for_update().get(pk=account.pk)
        stored = selectors.account_instagram_ids(locked)
        if same_account(stored, answered) is False:
            message = (
                f"The stored token belongs to @{profile.username} ({answered.describe()}), "
                f"not to this account ({stored.describe()})."
            )
        elif (twin := _twin_of(locked, answered)) is not None:
            message = (f"The stored token belongs to @{profile.username}, already registered "
                       f"as account '{twin.label}'.")
        else:
            ids = answered.merged_into(stored)
            fields = {"username": profile.username, "ig_id": ids.id, "ig_user_id": ids.user_id,
                      "last_error": ""}
            # Instagram accepts the token: an account flagged for it is active again
            # (unless its refreshes are held for a reason /me does not see).
            if (locked.status in (Account.Status.NEEDS_REAUTH, Account.Status.ERROR)
                    and token.expires_at > now and token.refresh_held_since is None):
                fields["status"] = Account.Status.ACTIVE
            Account.objects.filter(pk=account.pk).update(**fields)
    if message:
        event_record(account=account, action="verify", outcome=Event.Outcome.FAILED,
                     message=message, actor=actor, now=now)
        raise FlowError(message, account=account)
    event_record(account=account, action="verify", outcome=Event.Outcome.OK,
                 message=f"Token belongs to @{profile.username}.", actor=actor, now=now)
    return profile


# Instagram's code for "this token itself is invalid" (expired, revoked, logged out).
_TOKEN_DEAD_CODE = 190


def _learn_expiry(
    *, client: instagram.InstagramClient, client_secret: str, access_token: str, now: datetime
) -> tuple[str, datetime, datetime, bool]:
    """Refresh a token /me has just accepted, to learn its expiry. Returns the token to
    keep, its expiry, when it was obtained (UTC), and whether the expiry is assumed.

    Instagram refuses to refresh a token under 24 hours old, with an undocumented error
    (shared/instagram-api.md, section 4; a test server answers code 10), and refuses to
    refresh a short-lived token at all. So a refusal other than 190 is followed by a swap
    for a long-lived token: if Instagram swaps it, it was short-lived after all (imported
    under the wrong kind) and the swap's long-lived token is kept; if it refuses that too,
    the token is a young long-lived one, counted as expiring 59 days from now and obtained
    now, so the sweep leaves it alone for its first day. Raises TokenInvalid (190 only),
    Transient or RateLimited (nothing is known yet: try again)."""
    try:
        long = client.refresh(access_token=access_token)
    except (instagram.Transient, instagram.RateLimited):
        raise
    except InstagramError as exc:
        if isinstance(exc, TokenInvalid) and exc.code == _TOKEN_DEAD_CODE:
            raise
        try:
            long = client.exchange_for_long_lived(client_secret=client_secret,
                                                  access_token=access_token)
        except (instagram.Transient, instagram.RateLimited):
            raise
        except InstagramError:
            return access_token, now + LONG_LIVED_LIFETIME - timedelta(days=1), now, False
    if long.expiry_assumed:
        # An answer that gave no expiry still renewed the token: 60 days from now.
        return long.access_token, now + LONG_LIVED_LIFETIME, now, True
    return long.access_token, now + timedelta(seconds=long.expires_in), now, False


def token_import(
    *,
    account: Account,
    access_token: str,
    kind: str,
    expires_at: datetime | None,
    actor: Actor,
    now: datetime,
) -> Token:
    """Adopt a token obtained by hand: check it with /me, swap a short-lived one for a
    long-lived one, learn or take its expiry, store it and export the file.

    Without an explicit expiry a long-lived token is refreshed once to learn it; if
    Instagram refuses that refresh for a reason other than a dead token (it refuses
    tokens under 24 hours old), the token is young and expires in at least 59 days.
    """
    access_token = access_token.strip()
    expires_at = as_utc(expires_at) if expires_at is not None else None
    if not access_token or any(c.isspace() for c in access_token):
        raise FlowError("Paste the access token alone, without spaces.", account=account)
    if instagram.answers.valid_token(access_token) is None:
        raise FlowError("That is not an access token: tokens are 16 to 2,048 printable ASCII "
                        "characters. Nothing was sent to Instagram.", account=account)
    if expires_at is not None and expires_at <= now:
        raise FlowError("That expiry is in the past: an expired token cannot be refreshed; "
                        "authorize the account instead.", account=account)
    if expires_at is not None and expires_at > now + LONG_LIVED_LIFETIME + IMPORT_EXPIRY_SLACK:
        # A long-lived token lives 60 days: a later expiry is a typo, and believed, the
        # token would never be due and would die unseen while the account looked healthy.
        raise FlowError(f"That expiry is more than 60 days away ({utc_text(expires_at)}): a "
                        f"long-lived token lives 60 days from when it was issued. Give the "
                        f"expiry Instagram gave (or none, to learn it). Nothing was sent to "
                        f"Instagram.", account=account)
    client = instagram_client()
    obtained_at = now
    assumed = False
    try:
        profile = client.me(access_token=access_token,
                            fields=profile_fields(account.app.flavour))
        if kind == Token.Kind.SHORT:
            long = client.exchange_for_long_lived(
                client_secret=account.app.app_secret, access_token=access_token
            )
            access_token, expires_at = long.access_token, now + timedelta(seconds=long.expires_in)
            assumed = long.expiry_assumed
        elif expires_at is None:
            paused_until = selectors.refresh_paused_until(now=now)
            if paused_until is not None:
                event_record(account=account, action="import", outcome=Event.Outcome.FAILED,
                             message=f"Refused during a rate-limit pause (until "
                             f"{utc_text(paused_until)}).", actor=actor, now=now)
                raise FlowError(
                    f"Instagram asked the registry to slow down until {utc_text(paused_until)}"
                    f": the refresh that tells this token's expiry would break that. Give the "
                    f"token's expiry, or import it after that time. Nothing was stored.",
                    account=account,
                )
            access_token, expires_at, obtained_at, assumed = _learn_expiry(
                client=client, client_secret=account.app.app_secret,
                access_token=access_token, now=now,
            )
        else:
            # Best estimate of when it was issued; refreshes only need "older than 24 h".
            obtained_at = min(now, expires_at - LONG_LIVED_LIFETIME)
    except InstagramError as exc:
        event_record(account=account, action="import", outcome=Event.Outcome.FAILED,
                     message=str(exc), actor=actor, now=now)
        if isinstance(exc, instagram.Transient | instagram.RateLimited):
            raise FlowError(
                f"Instagram could not be asked about the token just now ({exc}). Nothing was "
                f"stored; try again in a few minutes, or give the token's expiry.",
                account=account,
            ) from None
        raise FlowError(f"Instagram did not accept the token: {exc}", account=account) from None
    token = token_store(
        account=account,
        value=access_token,
        kind=Token.Kind.LONG,
        obtained_at=obtained_at,
        expires_at=expires_at,
        permissions=None,
        profile=profile,
        action="import",
        actor=actor,
        now=now,
        expiry_assumed=assumed,
    )
    account.refresh_from_db()
    token_export(account=account, actor=actor, now=now)
    return token

