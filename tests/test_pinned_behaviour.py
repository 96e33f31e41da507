"""Behaviours no other test pinned down, found by mutation testing (README, "Mutation
testing"; the survivors are classified in docs/mutation-survivors.md). Each test goes
through the public service functions and fails when the behaviour changes."""

from __future__ import annotations

import os
import stat
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from accounts import selectors, services
from accounts.instagram import Profile, Usage
from accounts.models import Account, Event, PendingToken, SweepState, Token
from accounts.services import Actor, FlowError, Outcome
from tests.conftest import SECRETS
from tests.fake_instagram import graph_error, rate_limited, status

CLIENT_ID = SECRETS["instagram_login"][0]
SWEEP = Actor(job="refresh_sweep")
REFRESH = "/refresh_access_token"


def make_token(fake, app, label: str, *, age: timedelta, left: timedelta, now=None,
               status_: str = Account.Status.ACTIVE) -> Account:
    """An account whose long-lived token was issued `age` before `now` and expires
    `left` after it."""
    now = now or timezone.now()
    username = label.lower().replace(" ", "_")
    account = Account.objects.create(app=app, label=label)
    Account.objects.filter(pk=account.pk).update(status=status_, username=username,
                                                 ig_id=str(10**17 + account.pk))
    value = fake.mint_token(client_id=app.app_id, username=username, kind="long", age=age)
    Token.objects.create(account=account, value=value, kind=Token.Kind.LONG,
                         obtained_at=now - age, expires_at=now + left)
    account.refresh_from_db()
    return account


def due_ids(now) -> set[int]:
    return set(selectors.tokens_due(now=now).values_list("account_id", flat=True))


# --- token files: durability and group ------------------------------------------------


def test_export_fsyncs_the_whole_file_before_the_rename_and_the_directory_after(
    fake, login_app, token_dir, monkeypatch
):
    account = make_token(fake, login_app, "Durable", age=timedelta(days=2),
                         left=timedelta(days=58))
    final = token_dir / "durable"
    synced: list[tuple[str, int, bool]] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        info = os.fstat(fd)
        kind = "dir" if stat.S_ISDIR(info.st_mode) else "file"
        target = os.readlink(f"/proc/self/fd/{fd}")
        synced.append((kind, info.st_size, final.exists(), target))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    assert services.token_export(account=account, actor=SWEEP, now=timezone.now()) == final
    value = Token.objects.get(account=account).value
    assert [s[0] for s in synced] == ["file", "dir"]
    (_, size, renamed, target), (_, _, dir_renamed, dir_target) = synced
    # The temporary file, flushed whole, before it takes the final name...
    assert size == len(value) and not renamed and Path(target) != final
    # ...then the directory that holds the new entry.
    assert dir_renamed and Path(dir_target) == token_dir


def test_without_a_configured_group_the_file_keeps_the_writers_group(
    fake, login_app, token_dir, settings
):
    settings.TOKEN_FILE_GROUP = ""
    account = make_token(fake, login_app, "No group", age=timedelta(days=2),
                         left=timedelta(days=58))
    path = services.token_export(account=account, actor=SWEEP, now=timezone.now())
    assert path.stat().st_gid == os.getegid()


# --- refresh: busy rows, the stop level, the pause --------------------------------------


@contextmanager
def held_by_another_worker(queryset, seconds: float = 8):  # noqa: ANN001
    """Lock the rows of `queryset` from another connection for the duration (at most
    `seconds` from when this enters)."""
    locked, release = threading.Event(), threading.Event()

    def other_worker() -> None:
        try:
            with transaction.atomic():
                list(queryset.select_for_update())
                locked.set()
                release.wait(seconds)
        finally:
            connection.close()

    holder = threading.Thread(target=other_worker)
    holder.start()
    try:
        assert locked.wait(10)
        yield
    finally:
        release.set()
        holder.join(10)


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_row_another_worker_holds_is_skipped_and_reported_busy_not_waited_on(
    postgres, fake, login_app
):
    account = make_token(fake, login_app, "Held", age=timedelta(days=50),
                         left=timedelta(days=10))
    with held_by_another_worker(Token.objects.filter(account=account)):
        result, waited = timed(lambda: services.token_refresh(
            account_id=account.pk, actor=SWEEP, now=timezone.now()))
    assert result.outcome == Outcome.BUSY
    assert waited < 4
    assert fake.calls(REFRESH) == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_pending_token_another_worker_holds_is_left_to_it(postgres, fake, login_app):
    now = timezone.now()
    swapping = Account.objects.create(app=login_app, label="Swapping")
    pending(swapping, fake, now=now)
    stale = Account.objects.create(app=login_app, label="Stale")
    pending(stale, fake, now=now - timedelta(hours=2), expires_in=timedelta(hours=1))
    with held_by_another_worker(PendingToken.objects.all()):
        result, waited = timed(lambda: services.pending_swap(
            account_id=swapping.pk, actor=SWEEP, now=now))
        plan, plan_waited = timed(lambda: services.pending_sweep(actor=SWEEP, now=now))
    assert result.outcome == Outcome.NOT_DUE and waited < 4
    assert plan.flagged == 0 and plan_waited < 4
    assert PendingToken.objects.count() == 2
    assert fake.calls("/access_token") == []


def test_an_account_without_a_token_is_not_due_rather_than_busy(login_app):
    account = Account.objects.create(app=login_app, label="Never authorized")
    result = services.token_refresh(account_id=account.pk, actor=SWEEP, now=timezone.now())
    assert result.outcome == Outcome.NOT_DUE


@pytest.mark.parametrize("percent, paused", [(95, True), (94, False)])
def test_usage_at_the_stop_level_pauses_without_a_rate_limit_error(
    fake, login_app, settings, percent, paused
):
    settings.USAGE_STOP_PERCENT = 95
    account = make_token(fake, login_app, "Busy app", age=timedelta(days=50),
                         left=timedelta(days=10))
    fake.usage_headers = {
        "X-App-Usage": f'{{"call_count": {percent}, "total_cputime": 1, "total_time": 1}}'}
    now = timezone.now()
    assert services.token_refresh(account_id=account.pk, actor=SWEEP,
                                  now=now).outcome == Outcome.REFRESHED
    state = SweepState.objects.get()
    assert state.usage_percent == percent and state.usage_recorded_at == now
    # No regain time in the headers, no Retry-After: the default quarter of an hour.
    expected = now + timedelta(seconds=900) if paused else None
    assert selectors.refresh_paused_until(now=now) == expected


def test_usage_record_pauses_for_the_time_instagram_says_or_the_retry_delay(db):
    now = timezone.now()
    services.usage_record(usage=Usage(percent=100, regain_seconds=120), now=now)
    assert selectors.refresh_paused_until(now=now) == now + timedelta(seconds=120)
    later = now + timedelta(hours=1)
    services.usage_record(usage=None, now=later, rate_limited=True, retry_after=70)
    assert selectors.refresh_paused_until(now=later) == later + timedelta(seconds=70)
    assert SweepState.objects.get().usage_percent == 100
    # No reading and no rate limit: nothing changes.
    services.usage_record(usage=None, now=later + timedelta(hours=1))
    assert SweepState.objects.get().usage_recorded_at == later


def test_a_refresh_during_a_pause_moves_its_next_attempt_to_the_pause_end(
    fake, login_app
):
    account = make_token(fake, login_app, "Waiting", age=timedelta(days=50),
                         left=timedelta(days=10))
    now = timezone.now()
    until = now + timedelta(seconds=600)
    SweepState.objects.update_or_create(pk=1, defaults={"throttled_until": until})
    result = services.token_refresh(account_id=account.pk, actor=SWEEP, now=now)
    assert (result.outcome, result.retry_in) == (Outcome.PAUSED, 600)
    assert Token.objects.get(account=account).next_attempt_at == until
    # A later back-off already in place is kept.
    later = until + timedelta(seconds=30)
    Token.objects.filter(account=account).update(next_attempt_at=later)
    services.token_refresh(account_id=account.pk, actor=SWEEP, now=now, force=True)
    assert Token.objects.get(account=account).next_attempt_at == later
    assert fake.calls(REFRESH) == []


def test_a_temporary_failure_sets_the_next_attempt_from_the_delay(fake, login_app, settings):
    settings.REFRESH_RETRY_BASE_SECONDS = 10
    account = make_token(fake, login_app, "Flaky", age=timedelta(days=50),
                         left=timedelta(days=10))
    Token.objects.filter(account=account).update(refresh_failures=2)
    fake.inject(REFRESH, status(503))
    now = timezone.now()
    result = services.token_refresh(account_id=account.pk, actor=SWEEP, now=now)
    assert result.outcome == Outcome.RETRY
    # Third failure: 40 s with jitter, so 20..40 s, plus one.
    assert 21 <= result.retry_in <= 41
    token = Token.objects.get(account=account)
    assert token.refresh_failures == 3
    assert token.next_attempt_at == now + timedelta(seconds=result.retry_in)
    assert "attempt 3: " in account.__class__.objects.get(pk=account.pk).last_error


def test_a_refresh_stores_obtained_and_expiry_from_now(fake, login_app):
    account = make_token(fake, login_app, "Timed", age=timedelta(days=50),
                         left=timedelta(days=10))
    Token.objects.filter(account=account).update(refresh_failures=3)
    now = timezone.now()
    assert services.token_refresh(account_id=account.pk, actor=SWEEP,
                                  now=now).outcome == Outcome.REFRESHED
    token = Token.objects.get(account=account)
    assert token.obtained_at == token.last_refreshed_at == now
    assert token.expires_at == now + timedelta(days=60)
    assert token.refresh_failures == 0 and token.next_attempt_at is None


# --- pending swaps ----------------------------------------------------------------------


def pending(account: Account, fake, *, now, expires_in=timedelta(minutes=30)) -> None:
    short = fake.mint_token(client_id=CLIENT_ID, username="shop_owner", kind="short")
    PendingToken.objects.create(account=account, value=short, expires_at=now + expires_in,
                                permissions=["instagram_business_basic"], created_at=now)


def test_a_failed_pending_swap_returns_retry_while_the_token_lives_else_failed(
    fake, login_account, settings
):
    settings.REFRESH_RETRY_BASE_SECONDS = 10
    now = timezone.now()
    pending(login_account, fake, now=now)
    fake.inject("/access_token", status(503))
    result = services.pending_swap(account_id=login_account.pk, actor=SWEEP, now=now)
    assert result.outcome == Outcome.RETRY
    assert 6 <= result.retry_in <= 11  # the first back-off step
    assert "tries again until the short-lived token expires" in result.message
    assert PendingToken.objects.filter(account=login_account).exists()

    fake.inject("/access_token", graph_error(190, 463))
    result = services.pending_swap(account_id=login_account.pk, actor=SWEEP, now=now)
    assert (result.outcome, result.retry_in) == (Outcome.FAILED, None)
    assert "Nothing was stored" in result.message
    assert not PendingToken.objects.exists()


def test_a_pending_swap_stores_the_long_lived_token_from_now(fake, login_account):
    now = timezone.now()
    pending(login_account, fake, now=now)
    result = services.pending_swap(account_id=login_account.pk, actor=SWEEP, now=now)
    assert result.outcome == Outcome.REFRESHED
    token = Token.objects.get(account=login_account)
    assert token.obtained_at == now
    assert token.expires_at == now + timedelta(days=60)
    assert token.permissions == ["instagram_business_basic"]
    event = Event.objects.get(account=login_account, action="authorize")
    assert event.actor_job == "refresh_sweep"


def test_a_pending_token_expired_keeps_an_account_with_a_live_token_active(
    fake, login_app
):
    now = timezone.now()
    account = make_token(fake, login_app, "Reauthorizing", age=timedelta(days=5),
                         left=timedelta(days=55), now=now)
    pending(account, fake, now=now - timedelta(hours=2), expires_in=timedelta(hours=1))
    plan = services.pending_sweep(actor=SWEEP, now=now)
    assert plan.flagged == 1 and plan.swap_ids == []
    account.refresh_from_db()
    # Its long-lived token still works: not "needs re-authorization".
    assert account.status == Account.Status.ACTIVE
    assert not PendingToken.objects.exists()


# --- import: expiry and obtained_at ------------------------------------------------------


def do_import(account, token, *, kind="long", expires_at=None, now):
    return services.token_import(account=account, access_token=token, kind=kind,
                                 expires_at=expires_at, actor=SWEEP, now=now)


def test_import_with_an_expiry_counts_obtained_back_sixty_days(fake, login_account):
    now = timezone.now()
    manual = fake.mint_token(client_id=CLIENT_ID, username="shop_owner", kind="long",
                             age=timedelta(days=50))
    token = do_import(login_account, manual, expires_at=now + timedelta(days=10), now=now)
    assert token.expires_at == now + timedelta(days=10)
    assert token.obtained_at == now - timedelta(days=50)
    assert fake.calls(REFRESH) == []


def test_import_with_an_expiry_beyond_sixty_days_was_obtained_now(fake, login_account):
    now = timezone.now()
    manual = fake.mint_token(client_id=CLIENT_ID, username="shop_owner", kind="long",
                             age=timedelta(hours=1))
    token = do_import(login_account, manual, expires_at=now + timedelta(days=61), now=now)
    assert token.obtained_at == now


def test_import_without_an_expiry_learns_it_from_now(fake, login_account):
    now = timezone.now()
    manual = fake.mint_token(client_id=CLIENT_ID, username="shop_owner", kind="long",
                             age=timedelta(days=50))
    token = do_import(login_account, manual, now=now)
    assert token.expires_at == now + timedelta(days=60)
    assert token.obtained_at == now


def test_import_of_a_young_token_expires_in_fifty_nine_days_from_now(fake, login_account):
    now = timezone.now()
    manual = fake.mint_token(client_id=CLIENT_ID, username="shop_owner", kind="long",
                             age=timedelta(hours=2))
    token = do_import(login_account, manual, now=now)
    assert token.value == manual
    assert token.expires_at == now + timedelta(days=59)
    assert token.obtained_at == now


def test_import_of_a_short_lived_token_is_swapped_and_dated_now(fake, login_account):
    now = timezone.now()
    short = fake.mint_token(client_id=CLIENT_ID, username="shop_owner", kind="short")
    token = do_import(login_account, short, kind="short", now=now)
    assert token.value != short and token.kind == Token.Kind.LONG
    assert token.expires_at == now + timedelta(days=60)
    assert token.obtained_at == now


def test_import_of_an_expiry_exactly_now_is_refused(fake, login_account):
    now = timezone.now()
    with pytest.raises(FlowError, match="in the past"):
        do_import(login_account, "IGAA" + "x" * 40, expires_at=now, now=now)


def test_import_that_instagram_cannot_answer_stores_nothing_and_says_try_again(
    fake, login_account
):
    now = timezone.now()
    manual = fake.mint_token(client_id=CLIENT_ID, username="shop_owner", kind="long",
                             age=timedelta(days=50))
    fake.inject(REFRESH, status(503))
    with pytest.raises(FlowError, match="try again in a few minutes"):
        do_import(login_account, manual, now=now)
    assert not Token.objects.exists()
    assert Event.objects.get(account=login_account, action="import").outcome == "failed"


# --- one Instagram user, one account per app ---------------------------------------------


def store(account: Account, profile: Profile, *, now) -> Token:
    return services.token_store(
        account=account, value="IGAA" + "s" * 40, kind=Token.Kind.LONG, obtained_at=now,
        expires_at=now + timedelta(days=60), permissions=None, profile=profile,
        action="import", actor=SWEEP, now=now,
    )


def test_a_second_account_for_the_same_instagram_user_in_one_app_is_refused(
    fake, login_app, db
):
    now = timezone.now()
    profile = Profile(id="17841400000000042", username="shop_owner")
    first = Account.objects.create(app=login_app, label="First")
    second = Account.objects.create(app=login_app, label="Second")
    store(first, profile, now=now)
    # Storing again for the same account is a renewal, not a twin.
    store(first, profile, now=now)
    with pytest.raises(FlowError, match="already registered as account 'First'"):
        store(second, profile, now=now)
    assert not Token.objects.filter(account=second).exists()
    second.refresh_from_db()
    assert (second.ig_id, second.ig_user_id) == ("", "")
    refusal = Event.objects.get(account=second)
    assert refusal.outcome == "failed" and "already registered" in refusal.message


def test_the_same_instagram_user_may_have_an_account_in_another_app(fake, login_app, db):
    from tests.conftest import make_app

    other_app = make_app(fake, "basic_display")
    now = timezone.now()
    profile = Profile(id="17841400000000042", username="shop_owner")
    store(Account.objects.create(app=login_app, label="Login"), profile, now=now)
    token = store(Account.objects.create(app=other_app, label="Basic"), profile, now=now)
    assert token.account.ig_id == "17841400000000042"


# --- the due and expired rules, at their boundaries --------------------------------------


def test_due_boundaries(fake, login_app, settings):
    settings.REFRESH_THRESHOLD_DAYS = 50
    now = timezone.now()
    day = timedelta(days=1)
    exactly_a_day_old = make_token(fake, login_app, "A day old", age=day,
                                   left=timedelta(days=10), now=now)
    a_moment_younger = make_token(fake, login_app, "Younger", age=day - timedelta(seconds=1),
                                  left=timedelta(days=10), now=now)
    at_threshold = make_token(fake, login_app, "At threshold", age=timedelta(days=10),
                              left=timedelta(days=50), now=now)
    past_threshold = make_token(fake, login_app, "Past threshold", age=timedelta(days=10),
                                left=timedelta(days=50, seconds=1), now=now)
    expiring_now = make_token(fake, login_app, "Expiring now", age=timedelta(days=60),
                              left=timedelta(0), now=now)
    backoff_over = make_token(fake, login_app, "Backoff over", age=timedelta(days=50),
                              left=timedelta(days=10), now=now)
    Token.objects.filter(account=backoff_over).update(next_attempt_at=now)
    backing_off = make_token(fake, login_app, "Backing off", age=timedelta(days=50),
                             left=timedelta(days=10), now=now)
    Token.objects.filter(account=backing_off).update(next_attempt_at=now + timedelta(seconds=1))

    assert due_ids(now) == {exactly_a_day_old.pk, at_threshold.pk, backoff_over.pk}
    for not_due in (a_moment_younger, past_threshold, expiring_now, backing_off):
        assert not_due.pk not in due_ids(now)
    # Expired at the very moment it expires: the sweep flags it.
    assert services.tokens_flag_expired(actor=SWEEP, now=now) == 1
    expiring_now.refresh_from_db()
    assert expiring_now.status == Account.Status.NEEDS_REAUTH


def test_one_sweep_counts_every_token_it_flags(fake, login_app):
    now = timezone.now()
    expired = [make_token(fake, login_app, f"Expired {i}", age=timedelta(days=61),
                          left=timedelta(minutes=-i - 1), now=now) for i in range(3)]
    errored = make_token(fake, login_app, "Errored", age=timedelta(days=61),
                         left=timedelta(minutes=-9), now=now, status_=Account.Status.ERROR)
    make_token(fake, login_app, "Already flagged", age=timedelta(days=61),
               left=timedelta(minutes=-9), now=now, status_=Account.Status.NEEDS_REAUTH)
    make_token(fake, login_app, "Alive", age=timedelta(days=50), left=timedelta(days=10),
               now=now)
    stale_pending = Account.objects.create(app=login_app, label="Interrupted")
    pending(stale_pending, fake, now=now - timedelta(hours=2), expires_in=timedelta(hours=1))

    plan = services.refresh_sweep(actor=SWEEP, now=now)
    assert plan.flagged == 5  # four expired long-lived tokens, one short-lived
    assert Event.objects.get(account=stale_pending, action="swap").actor_job == "refresh_sweep"
    for account in [*expired, errored]:
        account.refresh_from_db()
        assert account.status == Account.Status.NEEDS_REAUTH
        event = Event.objects.get(account=account, action="refresh")
        assert event.outcome == "failed" and event.actor_job == "refresh_sweep"
    assert services.refresh_sweep(actor=SWEEP, now=now).flagged == 0


# --- who did it ---------------------------------------------------------------------------


def test_events_record_the_job_that_acted(fake, login_app, token_dir):
    account = make_token(fake, login_app, "By job", age=timedelta(days=50),
                         left=timedelta(days=10))
    job = Actor(job="refresh_account")
    assert services.token_refresh(account_id=account.pk, actor=job,
                                  now=timezone.now()).outcome == Outcome.REFRESHED
    fake.inject(REFRESH, status(503))
    services.token_refresh(account_id=account.pk, actor=job,
                           now=timezone.now() + timedelta(days=40))
    fake.inject(REFRESH, graph_error(100, message="Unsupported request"))
    Token.objects.filter(account=account).update(next_attempt_at=None)
    services.token_refresh(account_id=account.pk, actor=job,
                           now=timezone.now() + timedelta(days=40))
    fake.inject(REFRESH, graph_error(190))
    services.token_refresh(account_id=account.pk, actor=job,
                           now=timezone.now() + timedelta(days=40))
    events = Event.objects.filter(account=account).order_by("pk")
    assert [(e.action, e.outcome) for e in events] == [
        ("refresh", "ok"), ("export", "ok"),
        ("refresh", "failed"), ("refresh", "failed"), ("refresh", "failed"),
    ]
    assert {(e.actor_job, e.actor_user_id) for e in events} == {("refresh_account", None)}


def test_events_record_the_person_who_acted(fake, login_account, db):
    person = get_user_model().objects.create_user("operator", is_staff=True)
    actor = Actor(user=person)
    now = timezone.now()
    manual = fake.mint_token(client_id=CLIENT_ID, username="shop_owner", kind="long",
                             age=timedelta(days=50))
    do_import(login_account, manual, now=now)
    login_account.refresh_from_db()
    services.account_verify(account=login_account, actor=actor, now=now)
    services.token_export(account=login_account, actor=actor, now=now)
    fake.inject("/me", graph_error(190))
    with pytest.raises(FlowError):
        services.account_verify(account=login_account, actor=actor, now=now)
    by_person = Event.objects.filter(actor_user=person).order_by("pk")
    assert [(e.action, e.outcome) for e in by_person] == [
        ("verify", "ok"), ("export", "ok"), ("verify", "failed")]
    assert all(e.actor_job == "" for e in by_person)


# --- the sweep's bookkeeping ---------------------------------------------------------------


def test_the_sweep_lists_account_ids_not_row_ids(fake, login_app):
    # Accounts without a token first, so account ids and token/pending ids differ.
    for i in range(3):
        Account.objects.create(app=login_app, label=f"Empty {i}")
    now = timezone.now()
    due = make_token(fake, login_app, "Due", age=timedelta(days=50), left=timedelta(days=10),
                     now=now)
    interrupted = Account.objects.create(app=login_app, label="Interrupted")
    pending(interrupted, fake, now=now)
    SweepState.objects.create(pk=1, last_started_at=now - timedelta(hours=1))
    plan = services.refresh_sweep(actor=SWEEP, now=now)
    assert plan.refresh_ids == [due.pk] and plan.swap_ids == [interrupted.pk]
    assert SweepState.objects.get().last_started_at == now


def test_the_sweep_flags_expired_pending_tokens_by_account_and_counts_each(fake, login_app,
                                                                           token_dir):
    for i in range(2):
        Account.objects.create(app=login_app, label=f"Empty {i}")
    now = timezone.now()
    stale = [Account.objects.create(app=login_app, label=f"Stale {i}") for i in range(2)]
    for account in stale:
        pending(account, fake, now=now - timedelta(hours=2), expires_in=timedelta(hours=1))
    assert services.pending_sweep(actor=SWEEP, now=now).flagged == 2
    for account in stale:
        event = Event.objects.get(account=account, action="swap")
        assert event.outcome == "failed" and event.actor_job == "refresh_sweep"
    assert not PendingToken.objects.exists()


def test_the_sweep_flags_only_the_expired_accounts_and_says_why(fake, login_app):
    now = timezone.now()
    expired = make_token(fake, login_app, "Expired", age=timedelta(days=61),
                         left=timedelta(minutes=-1), now=now)
    alive = make_token(fake, login_app, "Alive", age=timedelta(days=5), left=timedelta(days=55),
                       now=now)
    assert services.tokens_flag_expired(actor=SWEEP, now=now) == 1
    alive.refresh_from_db()
    assert alive.status == Account.Status.ACTIVE and alive.last_error == ""
    event = Event.objects.get(account=expired)
    assert "expired on" in event.message and "authorize again" in event.message


def test_an_expired_token_with_the_empty_policy_empties_its_file_in_the_sweep(
    fake, login_app, token_dir, settings
):
    settings.TOKEN_FILE_DEAD_TOKEN = "empty"
    now = timezone.now()
    account = make_token(fake, login_app, "Expired", age=timedelta(days=61),
                         left=timedelta(minutes=-1), now=now)
    services.token_export(account=account, actor=SWEEP, now=now - timedelta(hours=1))
    assert (token_dir / "expired").read_text() != ""
    assert services.refresh_sweep(actor=SWEEP, now=now).flagged == 1
    assert (token_dir / "expired").read_text() == ""
    export = Event.objects.filter(account=account, action="export").latest("pk")
    assert export.created_at == now and export.actor_job == "refresh_sweep"


@pytest.mark.parametrize("percent, spaced", [(75, True), (74, False)])
def test_the_sweep_spaces_refreshes_from_the_slowdown_level_on(fake, login_app, settings,
                                                                percent, spaced):
    settings.USAGE_SLOWDOWN_PERCENT, settings.USAGE_SLOWDOWN_SPACING_SECONDS = 75, 20
    now = timezone.now()
    make_token(fake, login_app, "Due", age=timedelta(days=50), left=timedelta(days=10), now=now)
    services.usage_record(usage=Usage(percent=percent), now=now)
    assert services.refresh_sweep(actor=SWEEP, now=now).spacing_seconds == (20 if spaced else 0)


def test_spacing_fits_half_the_visibility_timeout_in_whole_seconds(fake, login_app, settings):
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 20}
    now = timezone.now()
    for i in range(3):
        make_token(fake, login_app, f"Due {i}", age=timedelta(days=50),
                   left=timedelta(days=10), now=now)
    services.usage_record(usage=Usage(percent=80), now=now)
    spacing = services.refresh_sweep(actor=SWEEP, now=now).spacing_seconds
    assert spacing == 3 and isinstance(spacing, int)  # 10 s // 3 refreshes


def test_queued_markers_keep_the_older_wait(fake, login_app):
    now = timezone.now()
    accounts = [make_token(fake, login_app, f"Queued {i}", age=timedelta(days=50),
                           left=timedelta(days=10), now=now) for i in range(3)]
    first, second, third = (a.pk for a in accounts)
    services.refresh_mark_queued(account_ids=[], starts_at=[])
    assert not Token.objects.filter(refresh_queued_for__isnull=False).exists()
    services.refresh_mark_queued(account_ids=[first], starts_at=[now])
    services.refresh_mark_queued(
        account_ids=[first, second, third],
        starts_at=[now + timedelta(seconds=s) for s in (5, 10, 15)],
    )
    marks = dict(Token.objects.values_list("account_id", "refresh_queued_for"))
    assert marks == {first: now, second: now + timedelta(seconds=10),
                     third: now + timedelta(seconds=15)}
    Token.objects.update(refresh_queued_for=None)
    services.refresh_mark_queued(account_ids=[second, third], starts_at=[now, now])
    marks = dict(Token.objects.values_list("account_id", "refresh_queued_for"))
    assert marks == {first: None, second: now, third: now}
    # One start time for all: the older markers stay too.
    later = now + timedelta(minutes=1)
    services.refresh_mark_queued(account_ids=[first, second], starts_at=[later, later])
    marks = dict(Token.objects.values_list("account_id", "refresh_queued_for"))
    assert marks == {first: later, second: now, third: now}
    # Two start times for two accounts: each its own.
    Token.objects.update(refresh_queued_for=None)
    services.refresh_mark_queued(account_ids=[first, second], starts_at=[now, later])
    marks = dict(Token.objects.values_list("account_id", "refresh_queued_for"))
    assert marks == {first: now, second: later, third: None}


def test_a_sweep_success_is_recorded_on_the_one_state_row(db):
    now = timezone.now()
    services.sweep_record_success(enqueued=7, now=now)
    services.sweep_record_success(enqueued=3, now=now + timedelta(minutes=1))
    state = SweepState.objects.get()
    assert state.pk == 1 and state.last_enqueued == 3
    assert state.last_succeeded_at == now + timedelta(minutes=1)


def test_a_pause_ending_within_a_second_still_waits_one(fake, login_app):
    account = make_token(fake, login_app, "Almost", age=timedelta(days=50),
                         left=timedelta(days=10))
    now = timezone.now()
    SweepState.objects.update_or_create(
        pk=1, defaults={"throttled_until": now + timedelta(milliseconds=400)})
    result = services.token_refresh(account_id=account.pk, actor=SWEEP, now=now)
    assert (result.outcome, result.retry_in) == (Outcome.PAUSED, 1)


def test_the_smallest_retry_delay_is_one_second(settings):
    settings.REFRESH_RETRY_BASE_SECONDS = settings.REFRESH_RETRY_MAX_SECONDS = 1
    assert {services.retry_delay(failures=1) for _ in range(20)} == {1}


def test_any_attempt_clears_the_queue_marker_even_when_not_due(fake, login_app):
    now = timezone.now()
    account = make_token(fake, login_app, "Fresh", age=timedelta(days=2),
                         left=timedelta(days=58), now=now)
    Token.objects.filter(account=account).update(refresh_queued_for=now)
    result = services.token_refresh(account_id=account.pk, actor=SWEEP, now=now)
    assert result.outcome == Outcome.NOT_DUE
    assert Token.objects.get(account=account).refresh_queued_for is None


@pytest.mark.parametrize("fault, outcome", [
    (graph_error(190), Outcome.NEEDS_REAUTH),
    (graph_error(100, message="Unsupported request"), Outcome.FAILED),
])
def test_a_failed_refresh_counts_one_failure_and_says_why(fake, login_app, fault, outcome):
    account = make_token(fake, login_app, "Failing", age=timedelta(days=50),
                         left=timedelta(days=10))
    fake.inject(REFRESH, fault)
    result = services.token_refresh(account_id=account.pk, actor=SWEEP, now=timezone.now())
    assert result.outcome == outcome
    assert Token.objects.get(account=account).refresh_failures == 1
    event = Event.objects.get(account=account, action="refresh")
    assert result.message and event.message == result.message


def test_a_dead_token_with_the_empty_policy_empties_the_file_as_the_same_job(
    fake, login_app, token_dir, settings
):
    settings.TOKEN_FILE_DEAD_TOKEN = "empty"
    account = make_token(fake, login_app, "Dead", age=timedelta(days=50),
                         left=timedelta(days=10))
    services.token_export(account=account, actor=SWEEP, now=timezone.now())
    fake.inject(REFRESH, graph_error(190))
    job = Actor(job="refresh_account")
    services.token_refresh(account_id=account.pk, actor=job, now=timezone.now())
    assert (token_dir / "dead").read_text() == ""
    assert Event.objects.filter(account=account, action="export").latest("pk").actor_job == (
        "refresh_account")


def test_a_rate_limit_as_long_as_the_longest_retry_is_still_a_retry(fake, login_app, settings):
    settings.REFRESH_RETRY_MAX_SECONDS = 61
    account = make_token(fake, login_app, "Limited", age=timedelta(days=50),
                         left=timedelta(days=10))
    fake.inject(REFRESH, rate_limited(usage={"estimated_time_to_regain_access": 1}))
    result = services.token_refresh(account_id=account.pk, actor=SWEEP, now=timezone.now())
    assert (result.outcome, result.retry_in) == (Outcome.RETRY, 61)


def test_a_rate_limit_pauses_whatever_the_usage_and_for_the_retry_delay(fake, login_app):
    account = make_token(fake, login_app, "Limited", age=timedelta(days=50),
                         left=timedelta(days=10))
    # Usage under the stop level and no regain time: the rate limit alone pauses, for
    # as long as the refresh's own retry waits.
    fake.inject(REFRESH, rate_limited(usage={"call_count": 50, "total_cputime": 1,
                                             "total_time": 1,
                                             "estimated_time_to_regain_access": 0}))
    now = timezone.now()
    result = services.token_refresh(account_id=account.pk, actor=SWEEP, now=now)
    assert SweepState.objects.get().usage_percent == 50
    assert selectors.refresh_paused_until(now=now) == now + timedelta(seconds=result.retry_in)


def test_a_temporary_failure_records_the_usage_it_carried(fake, login_app):
    account = make_token(fake, login_app, "Busy", age=timedelta(days=50),
                         left=timedelta(days=10))
    fake.usage_headers = {"X-App-Usage": '{"call_count": 80, "total_cputime": 1, "total_time": 1}'}
    fake.inject(REFRESH, status(503))
    now = timezone.now()
    assert services.token_refresh(account_id=account.pk, actor=SWEEP,
                                  now=now).outcome == Outcome.RETRY
    state = SweepState.objects.get()
    assert (state.usage_percent, state.usage_recorded_at) == (80, now)
