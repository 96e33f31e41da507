"""Keeping tokens alive: the refresh of many accounts at once and the sweep that finds the
due ones.

A refresh is idempotent: a round of tokens is locked (SKIP LOCKED), re-checked as due and
claimed in one committed transaction before Instagram is called, and the answers are
stored in a second one that releases the claim. A second worker, a redelivered message or
a rerun of the sweep finds the rows locked or claimed, or no longer due, and does nothing;
a claim outlives a lost database session, so an answer Instagram gave is stored rather
than asked for twice. Temporary failures back off exponentially with jitter; a dead token
moves the account to "needs re-authorization" and is not retried.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from .. import selectors
from ..crypto import DecryptionError, decrypt
from ..instagram import (
    InstagramError,
    LongLivedToken,
    RateLimited,
    TokenInvalid,
    Transient,
    Usage,
    failure_text,
    guidance_for_error,
)
from ..models import Account, Event, InstagramApp, PendingToken, SweepState, Token
from ..timeutil import utc_text
from .common import (
    ASSUMED_EXPIRY_NOTE,
    Actor,
    EventEntry,
    FlowError,
    event_record,
    events_record,
    instagram_client,
)
from .files import token_file_dead_token_apply, token_files_write
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
    INTERRUPTED = "interrupted"  # not attempted: the run was stopped (Ctrl-C) before its call


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
    *, account_id: int, actor: Actor, now: datetime, force: bool = False, claim: str = ""
) -> RefreshResult:
    """Refresh the account's long-lived token if it is due (or, with `force`, as soon as
    Instagram allows: 24 hours old and unexpired), store what comes back, export the file
    and log the event. Never sends a token that is too young or expired. The one-account
    case of `tokens_refresh_many` (the admin's *Refresh now*, a retried task)."""
    [(_, result)] = list(tokens_refresh_many(account_ids=[account_id], actor=actor, now=now,
                                             force=force, concurrency=1, claim=claim))
    return result


# While one round's answers are written to the database, another chunk's calls are in
# flight: up to four chunks at a time, each on a database connection of its own.
CHUNKS_AT_ONCE = 4
# Tries at storing tokens Instagram refreshed after the database session was lost.
LOST_SESSION_ATTEMPTS = 3
# How long a round's claim on its tokens lasts: longer than any round (its calls end by
# the deadline), short enough that a worker's death delays its tokens only a little.
CLAIM_SECONDS = int(settings.INSTAGRAM_DEADLINE_SECONDS) * 2 + 60


def tokens_refresh_many(
    *, account_ids: list[int], actor: Actor, now: datetime, force: bool = False,
    concurrency: int | None = None, claim: str = "",
) -> Iterator[tuple[int, RefreshResult]]:
    """Refresh these accounts, yielding each account id (once) with its result as its
    round finishes (in no set order).

    The accounts go in chunks of REFRESH_CHUNK_SIZE, each chunk in rounds of `concurrency`
    accounts (default REFRESH_CONCURRENCY). A round is one transaction: its due token rows
    are locked together (SKIP LOCKED: a row another worker holds is reported BUSY, never
    waited on), their refresh calls go to Instagram at once, in threads that never touch
    the database, and the answers are stored with a few statements for the whole round;
    the files are written after the commit (`token_files_write`). A rate-limit pause
    (read once per round, and set by any answer of this run that asks for one) holds
    every call not yet made: those accounts are PAUSED. On PostgreSQL, four chunks run at
    once (CHUNKS_AT_ONCE) when `concurrency` is over 1, each on a connection of its own,
    sharing the `concurrency` calls in flight; SQLite takes one writer at a time, so its
    chunks run one after the other (the calls of a round still overlap).

    `claim` names the claims (at most 64 characters): a Celery task passes its id, so that
    the same message delivered again after its worker died takes its tokens over at once
    instead of waiting for the claims to lapse. Without it, each round has a name of its
    own."""
    if concurrency is None:
        concurrency = settings.REFRESH_CONCURRENCY
    ids = list(dict.fromkeys(account_ids))
    size = settings.REFRESH_CHUNK_SIZE
    chunks = [ids[start:start + size] for start in range(0, len(ids), size)]
    with _Calls(concurrency=max(1, concurrency)) as calls:
        run = _ChunkRun(actor=actor, now=now, force=force, calls=calls, claim=claim)
        if concurrency <= 1 or len(chunks) <= 1 or connection.vendor == "sqlite":
            # In this thread: a test's transaction sees it, and SQLite has one writer.
            for chunk in chunks:
                yield from run.refresh(chunk)
            return
        yield from _in_threads(run, chunks, workers=min(CHUNKS_AT_ONCE, len(chunks)))


def _in_threads(run: _ChunkRun, chunks: list[list[int]],
                workers: int) -> Iterator[tuple[int, RefreshResult]]:
    """Refresh the chunks in `workers` threads, each with its own database connection
    (closed when it ends); a chunk that raises is reported FAILED, the others go on."""
    todo: queue.SimpleQueue[list[int]] = queue.SimpleQueue()
    for chunk in chunks:
        todo.put(chunk)
    done: queue.SimpleQueue[list[tuple[int, RefreshResult]] | None] = queue.SimpleQueue()

    def work() -> None:
        try:
            while True:
                try:
                    chunk = todo.get_nowait()
                except queue.Empty:
                    return
                if run.calls.stopping.is_set():
                    return
                finished: list[tuple[int, RefreshResult]] = []
                try:
                    finished.extend(run.refresh(chunk))
                except Exception as exc:  # the others go on; the caller reports it
                    logger.exception("refresh of accounts %s failed", chunk)
                    failed = RefreshResult(Outcome.FAILED, message=type(exc).__name__)
                    seen = {account_id for account_id, _ in finished}
                    finished += [(a, failed) for a in chunk if a not in seen]
                done.put(finished)
        finally:
            connection.close()
            done.put(None)

    threads = [threading.Thread(target=work, name=f"refresh-chunk-{i}", daemon=True)
               for i in range(workers)]
    for thread in threads:
        thread.start()
    running = workers
    try:
        while running:
            results = done.get()
            if results is None:
                running -= 1
            else:
                yield from results
    finally:
        if running:
            # Interrupted (Ctrl-C) or abandoned by the caller: no new call is made, and the
            # rounds in flight store what Instagram has already answered before the end.
            run.calls.stop()
        for thread in threads:
            thread.join()


class _NotCalled(Exception):
    """The call was not made: a rate-limit pause began before its turn."""


class _Interrupted(Exception):
    """The call was not made (or its answer is unknown): the run was being stopped."""


class _Calls:
    """Refresh calls to Instagram, up to `concurrency` in flight (threads that never touch
    the database), stopped for the rest of the run once an answer asks for a pause."""

    def __init__(self, *, concurrency: int) -> None:
        self.concurrency = concurrency
        self.paused = threading.Event()
        self.stopping = threading.Event()
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> _Calls:
        if self.concurrency > 1:
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency,
                                            thread_name_prefix="refresh-call")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def stop(self) -> None:
        """Make no call from now on (those asked for get _Interrupted); calls in flight end
        by themselves, within the deadline."""
        self.stopping.set()

    def refresh_all(
        self, values: list[str]
    ) -> tuple[list[LongLivedToken | Exception], BaseException | None]:
        """One answer (or the InstagramError, _NotCalled or _Interrupted) per token value,
        in order, and what interrupted this thread while it waited (KeyboardInterrupt,
        SystemExit), if anything: the caller stores the answers that came, then raises
        it."""
        if self._pool is None or len(values) == 1:
            answers: list[LongLivedToken | Exception] = []
            for value in values:
                try:
                    answers.append(self._one(value))
                except BaseException as exc:  # interrupted during its call: answer unknown
                    self.stop()
                    return answers + [_Interrupted()] * (len(values) - len(answers)), exc
            return answers, None
        futures = [self._pool.submit(self._one, value) for value in values]
        try:
            return [future.result() for future in futures], None
        except BaseException as exc:
            self.stop()
            wait(futures)  # the calls in flight end within the deadline
            return [future.result() for future in futures], exc

    def _one(self, value: str) -> LongLivedToken | Exception:
        if self.stopping.is_set():
            return _Interrupted()
        if self.paused.is_set():
            return _NotCalled()
        try:
            fresh = _call_refresh(value)
        except InstagramError as exc:
            if isinstance(exc, RateLimited) or _at_stop(exc.usage):
                self.paused.set()
            return exc
        if _at_stop(fresh.usage):
            self.paused.set()
        return fresh


def _at_stop(usage: Usage | None) -> bool:
    return usage is not None and usage.percent >= settings.USAGE_STOP_PERCENT


@dataclass
class _ChunkRun:
    actor: Actor
    now: datetime
    force: bool
    calls: _Calls
    claim: str = ""

    def refresh(self, account_ids: list[int]) -> Iterator[tuple[int, RefreshResult]]:
        """Refresh one chunk, a round of as many accounts as calls may be in flight at a
        time (`_round`)."""
        step = self.calls.concurrency
        for start in range(0, len(account_ids), step):
            if self.calls.stopping.is_set():
                for account_id in account_ids[start:]:
                    yield account_id, RefreshResult(Outcome.INTERRUPTED)
                return
            yield from self._round(account_ids[start:start + step])

    def _round(self, account_ids: list[int]) -> Iterator[tuple[int, RefreshResult]]:
        """Claim these accounts' due tokens (one transaction, committed), call Instagram
        for them at once, store the answers (a second transaction, tried again on a new
        session if the first one is lost), then write the files."""
        results: dict[int, RefreshResult] = {}
        claim = self.claim or uuid.uuid4().hex
        with transaction.atomic():
            tokens = self._claim(account_ids, claim, results)
        interrupt = None
        if tokens:
            answers, interrupt = self.calls.refresh_all([token.value for token in tokens])
            self._store_claimed(tokens, answers, claim, results)
        # After the commit: a failed file write keeps the new token; reconcile repairs it.
        refreshed = [a for a in account_ids if results[a].outcome == Outcome.REFRESHED]
        token_files_write(account_ids=refreshed, actor=self.actor, now=self.now)
        for token in tokens:
            if results[token.account_id].outcome == Outcome.NEEDS_REAUTH:
                token_file_dead_token_apply(account=token.account, actor=self.actor,
                                            now=self.now)
        if interrupt is not None:
            raise interrupt  # what Instagram answered is stored, every claim released
        for account_id in account_ids:
            yield account_id, results[account_id]

    def _store_claimed(self, tokens: list[Token], answers: list[LongLivedToken | Exception],
                       claim: str, results: dict[int, RefreshResult]) -> None:
        """Store the answers for the tokens this round still holds the claim on, and
        release the claim. Instagram would not give the answers again, so a database
        session lost meanwhile (a killed backend, a failover) does not lose them: the
        claim keeps every other worker off these tokens, and the store is tried again on
        a new session, LOST_SESSION_ATTEMPTS times. Anything else that goes wrong releases
        the claim (the tokens are then due again) and is raised."""
        for attempt in range(LOST_SESSION_ATTEMPTS):
            try:
                with transaction.atomic():
                    held = set(Token.objects.select_for_update(of=("self",)).filter(
                        pk__in=[token.pk for token in tokens], refresh_claim=claim,
                    ).values_list("pk", flat=True))
                    mine = [(t, a) for t, a in zip(tokens, answers, strict=True) if t.pk in held]
                    self._store([t for t, _ in mine], [a for _, a in mine], results)
                    Token.objects.filter(pk__in=held).update(refresh_claim="",
                                                             refresh_claimed_until=None)
                for token in tokens:
                    if token.pk not in held:
                        # The claim lapsed (this round outlived it) and another worker took
                        # the token: its refresh is the one stored.
                        results[token.account_id] = RefreshResult(Outcome.BUSY)
                return
            except (OperationalError, InterfaceError):
                if connection.in_atomic_block:
                    self._release(tokens, claim)
                    raise
                connection.close()
                time.sleep(0.5 * 2 ** attempt)
            except BaseException:
                self._release(tokens, claim)
                raise
        logger.error("refresh: %s refreshed token(s) could not be stored (accounts %s): the "
                     "database is unreachable; their claims lapse and the next sweep "
                     "refreshes them again", len(tokens), [t.account_id for t in tokens])
        for token in tokens:
            results[token.account_id] = RefreshResult(
                Outcome.FAILED, message="The database was unreachable when Instagram's "
                "answer came; the next sweep tries again.")

    def _release(self, tokens: list[Token], claim: str) -> None:
        """Best effort: give up this round's claim (the database may be gone too)."""
        try:
            with transaction.atomic():
                Token.objects.filter(pk__in=[t.pk for t in tokens], refresh_claim=claim).update(
                    refresh_claim="", refresh_claimed_until=None)
        except (OperationalError, InterfaceError):
            logger.warning("refresh: could not release a claim; it lapses by itself")

    def _claim(self, account_ids: list[int], claim: str,
               results: dict[int, RefreshResult]) -> list[Token]:
        """Lock the round's token rows, claim the due ones (until CLAIM_SECONDS from now)
        and return them, their values decrypted; every other account gets its result
        (BUSY, NOT_DUE, PAUSED, or FAILED when its value cannot be decrypted)."""
        # SKIP LOCKED: a row another worker is refreshing is its business, not ours. The
        # value is read as stored and decrypted here, so that one value no key decrypts
        # is that account's recorded failure, not the chunk's.
        locked = list(
            Token.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("account")
            .defer("value")
            .annotate(stored_value=Cast("value", output_field=TextField()),
                      # For a failure's guidance (some depend on the flavour): not a
                      # query per failed token when every token fails.
                      app_flavour=F("account__app__flavour"))
            .filter(account_id__in=account_ids)
        )
        missing = set(account_ids) - {token.account_id for token in locked}
        busy = set(Token.objects.filter(account_id__in=missing)
                   .values_list("account_id", flat=True)) if missing else set()
        for account_id in missing:
            results[account_id] = RefreshResult(Outcome.BUSY if account_id in busy
                                                else Outcome.NOT_DUE)
        queued = [token.pk for token in locked if token.refresh_queued_for is not None]
        if queued:
            # These are the attempts the queue markers waited for (worker liveness).
            Token.objects.filter(pk__in=queued).update(refresh_queued_for=None)
        # Re-checked under the lock: whoever held a row before may have just refreshed it.
        candidates = (selectors.tokens_refreshable(now=self.now, claim=claim) if self.force
                      else selectors.tokens_due(now=self.now, claim=claim))
        wanted = set(candidates.filter(pk__in=[token.pk for token in locked])
                     .values_list("pk", flat=True)) if locked else set()
        due = []
        for token in locked:
            token.refresh_queued_for = None
            if token.pk in wanted:
                due.append(token)
            elif token.refresh_claimed_until and token.refresh_claimed_until > self.now:
                results[token.account_id] = RefreshResult(Outcome.BUSY)  # another's claim
            else:
                results[token.account_id] = RefreshResult(Outcome.NOT_DUE)
        if not due:
            return []
        paused_until = selectors.refresh_paused_until(now=self.now)
        if paused_until is not None:
            self._defer_for_pause(due, until=paused_until, results=results)
            return []
        readable = []
        for token in due:
            try:
                token.value = decrypt(token.stored_value)
            except DecryptionError:
                self._failed(token, _RegistryFailed(
                    "the stored token cannot be decrypted with any key in ENCRYPTION_KEYS "
                    "(restore the key that encrypted it, or authorize the account again)"),
                    results)
            else:
                readable.append(token)
        if readable:
            Token.objects.filter(pk__in=[token.pk for token in readable]).update(
                refresh_claim=claim,
                refresh_claimed_until=timezone.now() + timedelta(seconds=CLAIM_SECONDS))
        return readable

    def _store(self, tokens: list[Token], answers: list[LongLivedToken | Exception],
               results: dict[int, RefreshResult]) -> None:
        refreshed = [(token, fresh) for token, fresh in zip(tokens, answers, strict=True)
                     if isinstance(fresh, LongLivedToken)]
        if refreshed:
            _store_refreshed(refreshed=refreshed, actor=self.actor, now=self.now)
            for token, _ in refreshed:
                results[token.account_id] = RefreshResult(Outcome.REFRESHED)
        not_called = []
        for token, answer in zip(tokens, answers, strict=True):
            if isinstance(answer, _Interrupted):
                results[token.account_id] = RefreshResult(
                    Outcome.INTERRUPTED, message="Not attempted: the run was stopped.")
            elif isinstance(answer, _NotCalled):
                not_called.append(token)
            elif isinstance(answer, InstagramError):
                self._failed(token, answer, results)
        if not_called:
            until = selectors.refresh_paused_until(now=self.now)
            if until is not None:
                self._defer_for_pause(not_called, until=until, results=results)
            else:
                # The answer that asked for the pause came to another chunk, which has not
                # committed it yet: no end to wait for is known here. The tokens stay due;
                # every sweep and round reads the pause before calling once it is recorded.
                for token in not_called:
                    results[token.account_id] = RefreshResult(
                        Outcome.PAUSED,
                        message="Not attempted: Instagram asked to slow down.")

    def _defer_for_pause(self, tokens: list[Token], *, until: datetime,
                         results: dict[int, RefreshResult]) -> None:
        """Instagram asked us to slow down: no call, no failure counted; the tokens wait
        for the first sweep after the pause (their back-off time moves to its end)."""
        Token.objects.filter(pk__in=[token.pk for token in tokens]).filter(
            Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lt=until)
        ).update(next_attempt_at=until)
        seconds = max(int((until - self.now).total_seconds()), 1)
        for token in tokens:
            results[token.account_id] = RefreshResult(
                Outcome.PAUSED, retry_in=seconds,
                message=f"Not attempted: Instagram asked to slow down until {utc_text(until)}.",
            )

    def _failed(self, token: Token, exc: InstagramError,
                results: dict[int, RefreshResult]) -> None:
        results[token.account_id] = _record_failure(token=token, exc=exc, actor=self.actor,
                                                    now=self.now)


def _sentence(exc: Exception) -> str:
    """The error's text ending in exactly one full stop."""
    text = str(exc).rstrip()
    return text if text.endswith(".") else text + "."


def _call_refresh(value: str) -> LongLivedToken:
    """The refresh call. The client raises only InstagramError subclasses; anything else
    would be a bug of ours, recorded as a temporary failure (with back-off and an event)
    rather than a crashed task that leaves no trace."""
    try:
        return instagram_client().refresh(access_token=value)
    except InstagramError:
        raise
    except Exception as exc:
        logger.exception("refresh: unexpected error")
        raise _RegistryTransient(f"the registry could not read Instagram's answer "
                                 f"({type(exc).__name__})") from None


class _RegistryFailed(InstagramError):
    """Our own failure on the refresh's path (a value no key decrypts): an error."""

    ours = True


class _RegistryTransient(Transient):
    """Our own failure around the call (a bug): backed off and retried like a temporary
    one, and worded as ours."""

    ours = True


def _record_failure(*, token: Token, exc: InstagramError, actor: Actor,
                    now: datetime) -> RefreshResult:
    """Record a refresh Instagram (or the stored value) refused: a dead token moves the
    account to "needs re-authorization"; a temporary failure backs off; a failure no retry
    can fix (`guidance`: a retired API, an app Meta does not know, a missing role) flags
    the account once, with what to do, and holds the token until staff act; anything else
    is an error the next sweep retries."""
    account = token.account
    flavour = getattr(token, "app_flavour", None)  # read with the round's rows (_claim)
    if flavour is None:
        # The flavour alone: the app row also holds the secret, which need not be decrypted.
        flavour = InstagramApp.objects.filter(pk=account.app_id).values_list(
            "flavour", flat=True).first()
    guidance = guidance_for_error(exc, flavour=flavour)
    advice = f" {guidance.advice}" if guidance else ""
    if isinstance(exc, TokenInvalid):
        message = (f"Instagram no longer accepts the token ({exc}): the owner must authorize "
                   f"again.{advice}")
        Account.objects.filter(pk=account.pk).update(
            status=Account.Status.NEEDS_REAUTH, last_error=message
        )
        Token.objects.filter(pk=token.pk).update(refresh_failures=F("refresh_failures") + 1)
        event_record(account=account, action="refresh", outcome=Event.Outcome.FAILED,
                     message=message, actor=actor, now=now)
        return RefreshResult(Outcome.NEEDS_REAUTH, message=message)
    if isinstance(exc, (Transient, RateLimited)):
        failures = token.refresh_failures + 1
        delay = retry_delay(failures=failures, error=exc)
        deferred = delay > settings.REFRESH_RETRY_MAX_SECONDS
        Token.objects.filter(pk=token.pk).update(
            refresh_failures=failures, next_attempt_at=now + timedelta(seconds=delay)
        )
        message = (f"Temporary failure, attempt {failures}: {_sentence(failure_text(exc))} "
                   f"Next try in {delay} s.")
        Account.objects.filter(pk=account.pk).update(last_error=message)
        event_record(account=account, action="refresh", outcome=Event.Outcome.FAILED,
                     message=message, actor=actor, now=now)
        usage_record(usage=exc.usage, now=now, rate_limited=isinstance(exc, RateLimited),
                     retry_after=delay)
        return RefreshResult(Outcome.DEFERRED if deferred else Outcome.RETRY, retry_in=delay,
                             message=message)
    if guidance is not None and guidance.permanent:
        # No retry can fix it: every sweep would ask again, forever. Flagged once, held.
        message = (f"Refresh failed: {_sentence(failure_text(exc))}{advice} The sweep no "
                   f"longer retries it" + ("." if guidance.reauth else
                                           ": once this is fixed, use Refresh token now."))
        Token.objects.filter(pk=token.pk).update(refresh_failures=F("refresh_failures") + 1,
                                                 refresh_held_since=now)
        status = Account.Status.NEEDS_REAUTH if guidance.reauth else Account.Status.ERROR
        Account.objects.filter(pk=account.pk).update(status=status, last_error=message)
        event_record(account=account, action="refresh", outcome=Event.Outcome.FAILED,
                     message=message, actor=actor, now=now)
        return RefreshResult(Outcome.NEEDS_REAUTH if guidance.reauth else Outcome.FAILED,
                             message=message)
    message = (f"Refresh failed: {_sentence(failure_text(exc))}{advice} The next sweep "
               f"tries again.")
    Token.objects.filter(pk=token.pk).update(refresh_failures=F("refresh_failures") + 1)
    Account.objects.filter(pk=account.pk).update(
        status=Account.Status.ERROR, last_error=message
    )
    event_record(account=account, action="refresh", outcome=Event.Outcome.FAILED,
                 message=message, actor=actor, now=now)
    return RefreshResult(Outcome.FAILED, message=message)


def _store_refreshed(*, refreshed: list[tuple[Token, LongLivedToken]], actor: Actor,
                     now: datetime) -> None:
    """Store what Instagram gave for these locked tokens (it may hand back the same string
    or a new one): a few statements for all of them, however many."""
    events = []
    for token, fresh in refreshed:
        token.value = fresh.access_token
        token.obtained_at = now
        token.expires_at = now + timedelta(seconds=fresh.expires_in)
        token.last_refreshed_at = now
        token.refresh_failures = 0
        token.next_attempt_at = None
        token.refresh_held_since = None
        note = ASSUMED_EXPIRY_NOTE if fresh.expiry_assumed else ""
        events.append(EventEntry(account=token.account, action="refresh",
                                 outcome=Event.Outcome.OK,
                                 message=f"Refreshed; expires {utc_text(token.expires_at)}.{note}"))
    _tokens_save(
        [token for token, _ in refreshed],
        ("value", "obtained_at", "expires_at", "last_refreshed_at", "refresh_failures",
         "next_attempt_at", "refresh_queued_for", "refresh_held_since"),
    )
    Account.objects.filter(pk__in=[token.account_id for token, _ in refreshed]).update(
        status=Account.Status.ACTIVE, last_error=""
    )
    events_record(entries=events, actor=actor, now=now)
    readings = [fresh.usage for _, fresh in refreshed if fresh.usage is not None]
    if readings:
        usage_record(usage=max(readings, key=lambda usage: usage.percent), now=now)


def _tokens_save(tokens: list[Token], field_names: tuple[str, ...]) -> None:
    """Save these fields of these tokens: one UPDATE per row, sent together with
    `executemany` (psycopg pipelines them). Not Django's `bulk_update`: its CASE per field
    and row cost more CPU than the refresh call itself (bench/refresh.py --profile). Each
    value goes through its field's own preparation (the token is encrypted here)."""
    fields = [Token._meta.get_field(name) for name in field_names]
    quote = connection.ops.quote_name
    # Only the model's own table and column names go into the text; values are parameters.
    sql = (f"UPDATE {quote(Token._meta.db_table)} SET "  # noqa: S608
           + ", ".join(f"{quote(field.column)} = %s" for field in fields)
           + f" WHERE {quote(Token._meta.pk.column)} = %s")
    rows = [[field.get_db_prep_save(getattr(token, field.attname), connection)
             for field in fields] + [token.pk] for token in tokens]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


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
    """What one sweep found: pending swaps, whether to refresh now (`due_at`: None during
    a rate-limit pause) and how far apart to start the refreshes (seconds). The due
    accounts themselves are read page by page when handed out (`refresh_pages`)."""

    swap_ids: list[int] = field(default_factory=list)
    spacing_seconds: int = 0
    throttled_until: datetime | None = None
    flagged: int = 0
    due_at: datetime | None = None

    def refresh_pages(self, size: int) -> Iterator[list[int]]:
        """The due account ids, `size` at a time, soonest expiry first; memory stays flat
        however many are due (`selectors.tokens_due_pages`)."""
        if self.due_at is None:
            return iter(())
        return selectors.tokens_due_pages(now=self.due_at, size=size)

    @property
    def refresh_ids(self) -> list[int]:
        """All the due account ids at once (for a small sweep, and for tests)."""
        return [account_id for page in self.refresh_pages(500) for account_id in page]


def refresh_sweep(*, actor: Actor, now: datetime) -> SweepPlan:
    """Flag what can no longer be refreshed and plan the refreshes of what is due (read
    later, page by page, from the expires_at index). Enqueuing is the caller's (the
    task's); `sweep_record_success` closes the run."""
    SweepState.objects.update_or_create(pk=1, defaults={"last_started_at": now})
    plan = pending_sweep(actor=actor, now=now)
    plan.flagged += tokens_flag_expired(actor=actor, now=now)
    paused_until = selectors.refresh_paused_until(now=now)
    if paused_until is not None:
        plan.throttled_until = paused_until
        return plan
    plan.due_at = now
    usage = selectors.usage_percent(now=now)
    if usage >= settings.USAGE_SLOWDOWN_PERCENT:
        due = selectors.tokens_due(now=now).count()
        if due:
            # The last delayed task must still start well inside Redis' visibility
            # timeout, or Redis would hand it out a second time.
            visibility = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}).get(
                "visibility_timeout", 3600
            )
            plan.spacing_seconds = min(
                settings.USAGE_SLOWDOWN_SPACING_SECONDS, (visibility // 2) // due
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
