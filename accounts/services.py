"""Every write the registry makes: authorize, exchange, verify, import, export, re-encrypt.

Functions take keyword-only arguments and `now`, so callers (admin, views, tasks,
commands) stay thin and tests control time. Network calls happen outside database
transactions; the rows they change are locked and re-read before writing.
Messages in `FlowError` and in events are shown to staff: they never hold a secret.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from . import instagram, selectors
from .instagram import InstagramClient, InstagramError, Profile, TokenInvalid
from .models import Account, Event, InstagramApp, OAuthState, Token, validate_token_filename

logger = logging.getLogger(__name__)

# A long-lived token lives 60 days (shared/instagram-api.md, section 3).
LONG_LIVED_LIFETIME = timedelta(days=60)


class FlowError(Exception):
    """A step the staff user asked for could not be done; `message` says why (no secrets)."""

    def __init__(self, message: str, *, account: Account | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.account = account


@dataclass(frozen=True)
class Actor:
    """Who did it: a staff user, or a named job (task or command)."""

    user: AbstractBaseUser | None = None
    job: str = ""


# --- plumbing -------------------------------------------------------------------------


def instagram_client() -> InstagramClient:
    """The Instagram client for the configured hosts (one session per process)."""
    return _client_for(
        settings.INSTAGRAM_API_URL,
        settings.INSTAGRAM_WWW_URL,
        settings.INSTAGRAM_GRAPH_URL,
        settings.INSTAGRAM_CONNECT_TIMEOUT,
        settings.INSTAGRAM_READ_TIMEOUT,
    )


@lru_cache(maxsize=4)
def _client_for(api: str, www: str, graph: str, connect: float, read: float) -> InstagramClient:
    return InstagramClient(
        api_url=api, www_url=www, graph_url=graph, connect_timeout=connect, read_timeout=read
    )


def profile_fields(flavour: str) -> tuple[str, ...]:
    """The /me fields to ask for: `user_id` exists only in the Instagram Login flavour."""
    if flavour == instagram.Flavour.INSTAGRAM_LOGIN:
        return ("id", "user_id", "username")
    return ("id", "username")


def event_record(
    *,
    account: Account | None,
    action: str,
    outcome: str,
    message: str = "",
    actor: Actor | None = None,
    now: datetime,
) -> Event:
    """Append one event to the log (and to the application log, without secrets)."""
    actor = actor or Actor()
    user = actor.user if actor.user is not None and actor.user.is_authenticated else None
    event = Event.objects.create(
        created_at=now,
        account=account,
        account_label=str(account) if account else "",
        action=action,
        outcome=outcome,
        message=message[:2000],
        actor_user=user,
        actor_job=actor.job,
    )
    logger.info(
        "event action=%s outcome=%s account=%s actor=%s %s",
        action,
        outcome,
        account.pk if account else "-",
        getattr(user, "username", None) or actor.job or "-",
        message,
    )
    return event


def _state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


# --- OAuth ----------------------------------------------------------------------------


def oauth_start(*, account: Account, user: AbstractBaseUser, now: datetime) -> str:
    """Create a single-use state bound to the account and the staff user, valid for
    OAUTH_STATE_TTL_SECONDS, and return Instagram's authorize URL that carries it."""
    state = secrets.token_urlsafe(32)
    OAuthState.objects.create(
        state_hash=_state_hash(state),
        account=account,
        user=user,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.OAUTH_STATE_TTL_SECONDS),
    )
    # States nobody came back with are clutter; clearing them here keeps the table small.
    OAuthState.objects.filter(expires_at__lt=now - timedelta(days=1)).delete()
    event_record(
        account=account, action="authorize_start", outcome=Event.Outcome.OK,
        actor=Actor(user=user), now=now,
    )
    app = account.app
    return instagram_client().authorize_url(
        flavour=app.flavour_enum,
        client_id=app.app_id,
        redirect_uri=app.redirect_uri,
        scopes=app.scope_list(),
        state=state,
    )


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
            .filter(state_hash=_state_hash(state))
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

    A pasted URL that carries a state must carry a valid one for this account."""
    callback = instagram.parse_pasted(text)
    if callback.state is not None:
        state_account = oauth_state_consume(state=callback.state, user=user, now=now)
        if state_account.pk != account.pk:
            raise FlowError(
                f"That URL belongs to the authorization of another account "
                f"({state_account}).",
                account=account,
            )
    return _oauth_finish(account=account, callback=callback, actor=Actor(user=user), now=now)


def _oauth_finish(
    *, account: Account, callback: instagram.CallbackParams, actor: Actor, now: datetime
) -> Account:
    if callback.error:
        reason = callback.error_description or callback.error
        event_record(
            account=account, action="authorize", outcome=Event.Outcome.DENIED,
            message=f"Instagram answered {callback.error}: {reason}", actor=actor, now=now,
        )
        raise FlowError(
            f"Authorization was not granted ({callback.error}: {reason}). Nothing was stored.",
            account=account,
        )
    if not callback.code:
        raise FlowError("The answer from Instagram carried no code.", account=account)
    return oauth_complete(account=account, code=callback.code, actor=actor, now=now)


def oauth_complete(*, account: Account, code: str, actor: Actor, now: datetime) -> Account:
    """Exchange an authorization code for a short-lived token, swap it for a long-lived
    one, identify the account with /me, store, export the file and log the event."""
    app = account.app
    client = instagram_client()
    try:
        short = client.exchange_code(
            client_id=app.app_id,
            client_secret=app.app_secret,
            redirect_uri=app.redirect_uri,
            code=code,
        )
        long = client.exchange_for_long_lived(
            client_secret=app.app_secret, access_token=short.access_token
        )
        profile = client.me(access_token=long.access_token, fields=profile_fields(app.flavour))
    except InstagramError as exc:
        event_record(
            account=account, action="authorize", outcome=Event.Outcome.FAILED,
            message=str(exc), actor=actor, now=now,
        )
        raise FlowError(f"Instagram refused the authorization: {exc}", account=account) from None
    _token_store(
        account=account,
        value=long.access_token,
        kind=Token.Kind.LONG,
        obtained_at=now,
        expires_at=now + timedelta(seconds=long.expires_in),
        permissions=list(short.permissions),
        profile=profile,
        action="authorize",
        actor=actor,
        now=now,
    )
    account.refresh_from_db()
    token_export(account=account, actor=actor, now=now)
    return account


def _token_store(
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
) -> Token:
    """Store a token for the account after checking it belongs to the right Instagram user."""
    with transaction.atomic():
        locked = Account.objects.select_for_update().get(pk=account.pk)
        problem = None
        if locked.ig_user_id and locked.ig_user_id != profile.id:
            problem = (
                f"The wrong Instagram account was authorized: this account is "
                f"{locked.username or locked.ig_user_id} (id {locked.ig_user_id}), Instagram "
                f"answered for @{profile.username} (id {profile.id}). Nothing was stored; "
                f"sign in to Instagram as the right account and try again."
            )
        else:
            twin = (
                Account.objects.filter(app_id=locked.app_id, ig_user_id=profile.id)
                .exclude(pk=locked.pk)
                .first()
            )
            if twin is not None:
                problem = (
                    f"@{profile.username} is already registered as account '{twin.label}'. "
                    f"Nothing was stored."
                )
        if problem:
            event_record(
                account=locked, action=action, outcome=Event.Outcome.FAILED,
                message=problem, actor=actor, now=now,
            )
            raise FlowError(problem, account=locked)
        locked.ig_user_id = profile.id
        locked.username = profile.username
        locked.status = Account.Status.ACTIVE
        locked.last_error = ""
        locked.save(update_fields=["ig_user_id", "username", "status", "last_error", "updated_at"])
        token, _ = Token.objects.update_or_create(
            account=locked,
            defaults={
                "value": value,
                "kind": kind,
                "obtained_at": obtained_at,
                "expires_at": expires_at,
                "last_refreshed_at": None,
                **({"permissions": permissions} if permissions is not None else {}),
            },
        )
        event_record(
            account=locked, action=action, outcome=Event.Outcome.OK,
            message=(
                f"Long-lived token for @{profile.username}, "
                f"expires {expires_at:%Y-%m-%d %H:%M} UTC."
            ),
            actor=actor, now=now,
        )
    return token


# --- verify and import ------------------------------------------------------------------


def account_verify(*, account: Account, actor: Actor, now: datetime) -> Profile:
    """Ask Instagram who the stored token belongs to. A dead token moves the account to
    'needs re-authorization'. Raises FlowError on any failure."""
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
        raise FlowError(f"Instagram did not accept the token: {exc}", account=account) from None
    if account.ig_user_id and account.ig_user_id != profile.id:
        message = (
            f"The stored token belongs to @{profile.username} (id {profile.id}), not to this "
            f"account (id {account.ig_user_id})."
        )
        event_record(account=account, action="verify", outcome=Event.Outcome.FAILED,
                     message=message, actor=actor, now=now)
        raise FlowError(message, account=account)
    Account.objects.filter(pk=account.pk).update(
        username=profile.username, ig_user_id=profile.id, last_error=""
    )
    event_record(account=account, action="verify", outcome=Event.Outcome.OK,
                 message=f"Token belongs to @{profile.username}.", actor=actor, now=now)
    return profile


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
    if not access_token or any(c.isspace() for c in access_token):
        raise FlowError("Paste the access token alone, without spaces.", account=account)
    if expires_at is not None and expires_at <= now:
        raise FlowError("That expiry is in the past: an expired token cannot be refreshed; "
                        "authorize the account instead.", account=account)
    client = instagram_client()
    obtained_at = now
    try:
        profile = client.me(access_token=access_token,
                            fields=profile_fields(account.app.flavour))
        if kind == Token.Kind.SHORT:
            long = client.exchange_for_long_lived(
                client_secret=account.app.app_secret, access_token=access_token
            )
            access_token, expires_at = long.access_token, now + timedelta(seconds=long.expires_in)
        elif expires_at is None:
            try:
                long = client.refresh(access_token=access_token)
            except (TokenInvalid, instagram.Transient, instagram.RateLimited):
                raise
            except InstagramError:
                expires_at = now + LONG_LIVED_LIFETIME - timedelta(days=1)
            else:
                access_token = long.access_token
                expires_at = now + timedelta(seconds=long.expires_in)
        else:
            # Best estimate of when it was issued; refreshes only need "older than 24 h".
            obtained_at = min(now, expires_at - LONG_LIVED_LIFETIME)
    except InstagramError as exc:
        event_record(account=account, action="import", outcome=Event.Outcome.FAILED,
                     message=str(exc), actor=actor, now=now)
        raise FlowError(f"Instagram did not accept the token: {exc}", account=account) from None
    token = _token_store(
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
    )
    account.refresh_from_db()
    token_export(account=account, actor=actor, now=now)
    return token


# --- token files ------------------------------------------------------------------------


def token_file_content(*, account: Account, token: Token) -> str:
    """What the account's token file holds: the bare token, or a JSON document."""
    if account.export_format == Account.ExportFormat.JSON:
        document = {
            "access_token": token.value,
            "expires_at": token.expires_at.isoformat(),
            "user_id": account.ig_user_id,
            "username": account.username,
        }
        return json.dumps(document, indent=2) + "\n"
    # Exactly the token: the PHP page reads the file as-is into a URL.
    return token.value


def token_export(*, account: Account, actor: Actor, now: datetime) -> Path | None:
    """Write the account's token file atomically (temporary file in the same directory,
    fsync, rename) with the configured mode and group. A failure is recorded on the
    account and the event log and leaves the previous file intact. Returns the path
    written, or None when nothing was (export disabled, no token, or failure)."""
    account = Account.objects.select_related("token").get(pk=account.pk)
    if not account.export_enabled:
        return None
    token = getattr(account, "token", None)
    if token is None or token.kind != Token.Kind.LONG:
        return None
    name = account.export_filename
    try:
        if not name:
            raise ValidationError("The account has no token file name and no username yet.")
        validate_token_filename(name)
        owner = selectors.account_owning_filename(account=account)
        if owner is not None:
            raise ValidationError(
                f"The file name {name!r} is already used by account '{owner.label}'; give "
                f"one of them another token file name."
            )
        path = _write_atomically(
            directory=Path(settings.TOKEN_EXPORT_DIR),
            name=name,
            content=token_file_content(account=account, token=token),
            mode=settings.TOKEN_FILE_MODE,
            group=settings.TOKEN_FILE_GROUP,
        )
    except (OSError, ValidationError, LookupError) as exc:
        message = _export_error_text(exc, name)
        Account.objects.filter(pk=account.pk).update(file_error=message)
        event_record(account=account, action="export", outcome=Event.Outcome.FAILED,
                     message=message, actor=actor, now=now)
        return None
    Account.objects.filter(pk=account.pk).update(file_error="", file_written_at=now)
    event_record(account=account, action="export", outcome=Event.Outcome.OK,
                 message=f"Wrote {path}.", actor=actor, now=now)
    return path


def _export_error_text(exc: Exception, name: str) -> str:
    if isinstance(exc, ValidationError):
        return f"Token file not written: {' '.join(exc.messages)}"
    if isinstance(exc, LookupError):
        return f"Token file not written: {exc.args[0] if exc.args else exc}"
    return f"Token file {name!r} not written: {exc.strerror or type(exc).__name__}."


def _write_atomically(*, directory: Path, name: str, content: str, mode: int, group: str) -> Path:
    gid = -1
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise LookupError(f"the group {group!r} (TOKEN_FILE_GROUP) does not exist.") from None
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / name
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), mode)
            if gid != -1:
                os.fchown(handle.fileno(), -1, gid)
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename is durable only once the directory entry is on disk.
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


# --- encryption keys --------------------------------------------------------------------


def secrets_reencrypt() -> int:
    """Re-encrypt every app secret and token with the newest key; returns rows rewritten.

    Safe to run twice; each row is locked while it is rewritten."""
    count = 0
    for model, field in ((InstagramApp, "app_secret"), (Token, "value")):
        for pk in model.objects.values_list("pk", flat=True).iterator():
            with transaction.atomic():
                row = model.objects.select_for_update().filter(pk=pk).first()
                if row is not None:
                    # Saving writes the decrypted value back, encrypted with the first key.
                    row.save(update_fields=[field])
                    count += 1
    return count
