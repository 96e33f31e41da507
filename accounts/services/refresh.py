"""Keeping tokens alive: the refresh of one account and the sweep that finds the due ones.

A refresh is idempotent: the token row is locked for the whole refresh and re-checked
after locking, so a second worker, a redelivered message or a rerun of the sweep finds
nothing to do. Temporary failures back off exponentially with jitter; a dead token moves
the account to "needs re-authorization" and is not retried.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F

from .. import selectors
from ..crypto import DecryptionError
from ..instagram import (
    InstagramError,
    LongLivedToken,
    RateLimited,
    TokenInvalid,
    Transient,
    Usage,
)
from ..models import Account, Event, PendingToken, SweepState, Token
from ..timeutil import utc_text
from .common import ASSUMED_EXPIRY_NOTE, Actor, FlowError, event_record, instagram_client
from .files import token_export, token_file_dead_token_apply
from .oauth import pending_token_swap

logger = logging.getLogger(__name__)


class Outcome:
    """What `token_refresh` did."""

    REFRESHED = "refreshed"
    NOT_DUE = "not_due"  # not due (any more), or not refreshable at all
    BUSY = "busy"  # another worker holds the row right now
    NEEDS_REAUTH = "needs_reauth"
    RETRY = "retry"  # temporary failure: try again after `retry_in` seconds
    DEFERRED = "deferred"  # throttled for longer than a task retry may wait: next sweep
    PAUSED = "paused"  # not attempted: a rate-limit pause holds; the sweep after it retries
    FAILED = "failed"  # another error: recorded, next sweep tries again


@dataclass(frozen=True)
class RefreshResult:
    outcome: str
    retry_in: int | None = None
    message: str = ""


def retry_delay(*, failures: int, error: InstagramError | None = None) -> int:
    """Seconds to wait before attempt `failures + 1`: exponential from the base with full
    jitter, capped; at least what a rate limit said to wait."""
    base = settings.REFRESH_RETRY_BASE_SECONDS * 2 ** max(failures - 1, 0)
    capped = min(base, settings.REFRESH_RETRY_MAX_SECONDS)
    delay = random.uniform(capped / 2, capped)  # jitter: workers do not retry in step
    if isinstance(error, RateLimited) and error.retry_after:
        delay = max(delay, error.retry_after)
    return int(delay) + 1


def token_refresh(
    *, account_id: int, actor: Actor, now: datetime, force: bool = False
) -> RefreshResult:
    """Refresh the account's long-lived token if it is due (or, with `force`, as soon as
    Instagram allows: 24 hours old and unexpired), store what comes back, export the file
    and log the event. Never sends a token that is too young or expired."""
    candidates = (
        selectors.tokens_refreshable(now=now) if force else selectors.tokens_due(now=now)
    )
    answered: list[tuple[str, LongLivedToken]] = []
    try:
        with transaction.atomic():
            # SKIP LOCKED: a row another worker is refreshing is its business, not ours.
            token = (
                Token.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("account__app")
                # Decrypted when sent, so that a value no key decrypts is a recorded failure.
                .defer("value", "account__app__app_secret")
                .filter(account_id=account_id)
                .first()
            )
            if token is None:
                busy = Token.objects.filter(account_id=account_id).exists()
                return RefreshResult(Outcome.BUSY if busy else Outcome.NOT_DUE)
            if token.refresh_queued_for is not None:
                # This is the attempt the queue marker waited for (worker liveness).
                Token.objects.filter(pk=token.pk).update(refresh_queued_for=None)
                token.refresh_queued_for = None
            # Re-checked under the lock: whoever held it before may have just refreshed it.
            if not candidates.filter(pk=token.pk).exists():
                return RefreshResult(Outcome.NOT_DUE)
            paused_until = selectors.refresh_paused_until(now=now)
            if paused_until is not None:
                return _defer_for_pause(token=token, until=paused_until, now=now)
            result = _refresh_locked(token=token, actor=actor, now=now, answered=answered)
    except (OperationalError, InterfaceError):
        if not answered or connection.in_atomic_block:
            raise
        # Instagram has refreshed the token, but the database session ended before the
        # new one was stored (a killed backend, a failover). Instagram would not give it
        # again: store it on a new session rather than refresh a second time.
        connection.close()
        old_value, fresh = answered[0]
        result = _store_after_lost_session(account_id=account_id, old_value=old_value,
                                           fresh=fresh, actor=actor, now=now)
        token = Token.objects.select_related("account__app").get(account_id=account_id)
    if result.outcome == Outcome.REFRESHED:
        # After commit: a failed file write keeps the new token; reconcile repairs the file.
        token_export(account=token.account, actor=actor, now=now)
    elif result.outcome == Outcome.NEEDS_REAUTH:
        token_file_dead_token_apply(account=token.account, actor=actor, now=now)
    return result


def tokens_refresh_many(
    *, account_ids: list[int], actor: Actor, now: datetime, force: bool = False,
    concurrency: int | None = None,
) -> Iterator[tuple[int, RefreshResult]]:
    """Refresh these accounts with `token_refresh`, up to `concurrency` at once (default
    REFRESH_CONCURRENCY; 1 on SQLite, which takes one writer at a time), yielding each
    account id with its result as it finishes (in no set order).

    A refresh is one round trip to Instagram, so the calls overlap in threads, each with
    its own database connection (closed when the thread ends). Exactly-once is
    token_refresh's row lock, as ever; a rate-limit pause that begins during the run holds
    for every refresh after it (each checks it before calling Instagram and is PAUSED)."""
    if concurrency is None:
        concurrency = settings.REFRESH_CONCURRENCY
    if connection.vendor == "sqlite":
        concurrency = 1
    workers = max(1, min(concurrency, len(account_ids)))
    if workers == 1:
        # In this thread: no connection to hand over, and a test's transaction sees it.
        for account_id in account_ids:
            yield account_id, token_refresh(account_id=account_id, actor=actor, now=now,
                                            force=force)
        return
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for account_id in account_ids:
        todo.put(account_id)
    done: queue.SimpleQueue[tuple[int, RefreshResult] | None] = queue.SimpleQueue()

    def work() -> None:
        try:
            while True:
                try:
                    account_id = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    result = token_refresh(account_id=account_id, actor=actor, now=now,
                                           force=force)
                except Exception as exc:  # the others go on; the caller reports it
                    logger.exception("refresh of account %s failed", account_id)
                    result = RefreshResult(Outcome.FAILED, message=type(exc).__name__)
                done.put((account_id, result))
        finally:
            connection.close()
            done.put(None)

    threads = [threading.Thread(target=work, name=f"refresh-{i}", daemon=True)
               for i in range(workers)]
    for thread in threads:
        thread.start()
    running = workers
    while running:
        item = done.get()
        if item is None:
            running -= 1
        else:
            yield item
    for thread in threads:
        thread.join()


def _defer_for_pause(*, token: Token, until: datetime, now: datetime) -> RefreshResult:
    """Instagram asked us to slow down: no call, no failure counted; the token waits for
    the first sweep after the pause (its back-off time moves to the pause's end)."""
    if token.next_attempt_at is None or token.next_attempt_at < until:
        Token.objects.filter(pk=token.pk).update(next_attempt_at=until)
    seconds = max(int((until - now).total_seconds()), 1)
    return RefreshResult(
        Outcome.PAUSED, retry_in=seconds,
        message=f"Not attempted: Instagram asked to slow down until {utc_text(until)}.",
    )


def _sentence(exc: Exception) -> str:
    """The error's text ending in exactly one full stop."""
    text = str(exc).rstrip()
    return text if text.endswith(".") else text + "."


def _call_refresh(token: Token) -> LongLivedToken:
    """The refresh call. The client raises only InstagramError subclasses; anything else
    would be a bug of ours, recorded as a temporary failure (with back-off and an event)
    rather than a crashed task that leaves no trace."""
    try:
        value = token.value
    except DecryptionError:
        raise InstagramError("the stored token cannot be decrypted with any key in "
                             "ENCRYPTION_KEYS (restore the key that encrypted it, or "
                             "authorize the account again)") from None
    try:
        return instagram_client().refresh(access_token=value)
    except InstagramError:
        raise
    except Exception as exc:
        logger.exception("refresh of account %s: unexpected error", token.account_id)
        raise Transient(f"the registry could not read Instagram's answer "
                        f"({type(exc).__name__})") from None


def _store_after_lost_session(*, account_id: int, old_value: str, fresh: LongLivedToken,
                              actor: Actor, now: datetime) -> RefreshResult:
    """Store a refreshed token whose first session died before the commit, if the row
    still holds the token that was refreshed (or the commit did happen after all, or
    another worker stored a newer one since: then there is nothing to do)."""
    with transaction.atomic():
        token = (
            Token.objects.select_for_update(of=("self",))
            .select_related("account__app")
            .filter(account_id=account_id)
            .first()
        )
        if token is None or token.value != old_value:
            return RefreshResult(Outcome.NOT_DUE)
        return _store_refreshed(token=token, fresh=fresh, actor=actor, now=now)


def _refresh_locked(*, token: Token, actor: Actor, now: datetime,
                    answered: list[tuple[str, LongLivedToken]]) -> RefreshResult:
    account = token.account
    try:
        fresh = _call_refresh(token)
    except TokenInvalid as exc:
        message = f"Instagram no longer accepts the token ({exc}): the owner must authorize again."
        Account.objects.filter(pk=account.pk).update(
            status=Account.Status.NEEDS_REAUTH, last_error=message
        )
        Token.objects.filter(pk=token.pk).update(refresh_failures=F("refresh_failures") + 1)
        event_record(account=account, action="refresh", outcome=Event.Outcome.FAILED,
                     message=message, actor=actor, now=now)
        return RefreshResult(Outcome.NEEDS_REAUTH, message=message)
    except (Transient, RateLimited) as exc:
        failures = token.refresh_failures + 1
        delay = retry_delay(failures=failures, error=exc)
        deferred = delay > settings.REFRESH_RETRY_MAX_SECONDS
        Token.objects.filter(pk=token.pk).update(
            refresh_failures=failures, next_attempt_at=now + timedelta(seconds=delay)
        )
        message = f"Temporary failure, attempt {failures}: {_sentence(exc)} Next try in {delay} s."
        Account.objects.filter(pk=account.pk).update(last_error=message)
        event_record(account=account, action="refresh", outcome=Event.Outcome.FAILED,
                     message=message, actor=actor, now=now)
        usage_record(usage=exc.usage, now=now, rate_limited=isinstance(exc, RateLimited),
                     retry_after=delay)
        return RefreshResult(Outcome.DEFERRED if deferred else Outcome.RETRY, retry_in=delay,
                             message=message)
    except InstagramError as exc:
        message = f"Refresh failed: {_sentence(exc)} The next sweep tries again."
        Token.objects.filter(pk=token.pk).update(refresh_failures=F("refresh_failures") + 1)
        Account.objects.filter(pk=account.pk).update(
            status=Account.Status.ERROR, last_error=message
        )
        event_record(account=account, action="refresh", outcome=Event.Outcome.FAILED,
                     message=message, actor=actor, now=now)
        return RefreshResult(Outcome.FAILED, message=message)
    answered.append((token.value, fresh))
    return _store_refreshed(token=token, fresh=fresh, actor=actor, now=now)


def _store_refreshed(*, token: Token, fresh: LongLivedToken, actor: Actor,
                     now: datetime) -> RefreshResult:
    account = token.account
    expires_at = now + timedelta(seconds=fresh.expires_in)
    # Instagram may hand back the same string or a new one: store what came back.
    token.value = fresh.access_token
    token.obtained_at = now
    token.expires_at = expires_at
    token.last_refreshed_at = now
    token.refresh_failures = 0
    token.next_attempt_at = None
    token.save()
    Account.objects.filter(pk=account.pk).update(status=Account.Status.ACTIVE, last_error="")
    note = ASSUMED_EXPIRY_NOTE if fresh.expiry_assumed else ""
    event_record(account=account, action="refresh", outcome=Event.Outcome.OK,
                 message=f"Refreshed; expires {utc_text(expires_at)}.{note}",
                 actor=actor, now=now)
    usage_record(usage=fresh.usage, now=now)
    return RefreshResult(Outcome.REFRESHED)


def usage_record(
    *, usage: Usage | None, now: datetime, rate_limited: bool = False, retry_after: int = 0
) -> None:
    """Remember how busy Instagram says we are, so the sweep can slow down or pause."""
    if usage is None and not rate_limited:
        return
    percent = usage.percent if usage else 100
    fields: dict = {"usage_percent": percent, "usage_recorded_at": now}
    if rate_limited or percent >= settings.USAGE_STOP_PERCENT:
        pause = (usage.regain_seconds if usage else None) or retry_after or 900
        fields["throttled_until"] = now + timedelta(seconds=pause)
    selectors.sweep_state()  # make sure the row exists
    SweepState.objects.filter(pk=1).update(**fields)


@dataclass
class SweepPlan:
    """What one sweep found: accounts to refresh, pending swaps, and how far apart to
    start the refreshes (seconds)."""

    refresh_ids: list[int] = field(default_factory=list)
    swap_ids: list[int] = field(default_factory=list)
    spacing_seconds: int = 0
    throttled_until: datetime | None = None
    flagged: int = 0


def refresh_sweep(*, actor: Actor, now: datetime) -> SweepPlan:
    """Flag what can no longer be refreshed and list what is due, in one indexed query
    each. Enqueuing is the caller's (the task's); `sweep_record_success` closes the run."""
    SweepState.objects.update_or_create(pk=1, defaults={"last_started_at": now})
    plan = pending_sweep(actor=actor, now=now)
    plan.flagged += tokens_flag_expired(actor=actor, now=now)
    paused_until = selectors.refresh_paused_until(now=now)
    if paused_until is not None:
        plan.throttled_until = paused_until
        return plan
    plan.refresh_ids = list(selectors.tokens_due(now=now).values_list("account_id", flat=True))
    usage = selectors.usage_percent(now=now)
    if usage >= settings.USAGE_SLOWDOWN_PERCENT and plan.refresh_ids:
        # The last delayed task must still start well inside Redis' visibility timeout,
        # or Redis would hand it out a second time.
        visibility = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}).get(
            "visibility_timeout", 3600
        )
        plan.spacing_seconds = min(
            settings.USAGE_SLOWDOWN_SPACING_SECONDS, (visibility // 2) // len(plan.refresh_ids)
        )
    return plan


def pending_sweep(*, actor: Actor, now: datetime) -> SweepPlan:
    """The short-lived tokens of interrupted authorizations: flag the expired ones and list
    the rest for a swap. Run more often than the refresh sweep: they live one hour."""
    flagged = pending_flag_expired(actor=actor, now=now)
    swap_ids = list(selectors.pending_tokens(now=now).values_list("account_id", flat=True))
    return SweepPlan(swap_ids=swap_ids, flagged=flagged)


def refresh_mark_queued(*, account_ids: list[int], starts_at: list[datetime]) -> None:
    """Note when each account's refresh task is due to start, before it is handed to the
    broker (a worker that takes it at once must find the marker to clear). A marker
    already there is kept: the older wait is the one that measures a stalled queue."""
    if not account_ids:
        return
    if len(set(starts_at)) == 1:
        Token.objects.filter(
            account_id__in=account_ids, refresh_queued_for__isnull=True
        ).update(refresh_queued_for=starts_at[0])
        return
    for account_id, when in zip(account_ids, starts_at, strict=True):
        Token.objects.filter(account_id=account_id, refresh_queued_for__isnull=True).update(
            refresh_queued_for=when
        )


def sweep_record_success(*, enqueued: int, now: datetime) -> None:
    """Note that a sweep got all its work onto the queue (health checks read this)."""
    SweepState.objects.update_or_create(
        pk=1, defaults={"last_succeeded_at": now, "last_enqueued": enqueued}
    )


def tokens_flag_expired(*, actor: Actor, now: datetime) -> int:
    """Move accounts whose token expired to "needs re-authorization" (an expired token
    can never be refreshed). Returns how many were flagged; a rerun flags none."""
    flagged = 0
    for token in selectors.tokens_expired_unflagged(now=now).select_related("account"):
        message = (
            f"The token expired on {utc_text(token.expires_at)} and can no longer be "
            f"refreshed: the owner must authorize again."
        )
        changed = Account.objects.filter(
            pk=token.account_id, status__in=[Account.Status.ACTIVE, Account.Status.ERROR]
        ).update(status=Account.Status.NEEDS_REAUTH, last_error=message)
        if changed:
            flagged += 1
            event_record(account=token.account, action="refresh", outcome=Event.Outcome.FAILED,
                         message=message, actor=actor, now=now)
            token_file_dead_token_apply(account=token.account, actor=actor, now=now)
    return flagged


def pending_flag_expired(*, actor: Actor, now: datetime) -> int:
    """Discard short-lived tokens that expired before their swap, flagging the account."""
    flagged = 0
    for account_id in selectors.pending_tokens_expired(now=now).values_list(
        "account_id", flat=True
    ):
        try:
            pending_token_swap(account_id=account_id, actor=actor, now=now, skip_locked=True)
        except FlowError:
            flagged += 1
    return flagged


def pending_swap(*, account_id: int, actor: Actor, now: datetime) -> RefreshResult:
    """Finish an interrupted authorization: swap its short-lived token (task entry point)."""
    try:
        done = pending_token_swap(account_id=account_id, actor=actor, now=now, skip_locked=True)
    except FlowError as exc:
        still_pending = PendingToken.objects.filter(account_id=account_id).exists()
        return RefreshResult(Outcome.RETRY if still_pending else Outcome.FAILED,
                             retry_in=retry_delay(failures=1) if still_pending else None,
                             message=exc.message)
    return RefreshResult(Outcome.REFRESHED if done else Outcome.NOT_DUE)
