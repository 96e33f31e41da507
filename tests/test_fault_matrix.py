"""The fault matrix: for each step that crosses a boundary and each way it can fail, what is
retried, what the account shows, and that no token is lost and no file is half-written.

- code exchange: any Instagram fault -> a 400 page, nothing stored (the code may be spent:
  authorize again).
- long-lived swap and /me, after the code: timeout, reset, 5xx, malformed body, rate limit ->
  a 400 page saying the registry tries again; the short-lived token is kept and the next
  swap run stores the long-lived one. A killed process: the swap run finishes it
  (test_refresh_celery).
- refresh: timeout, reset, 5xx, malformed body -> retried with back-off, token and file
  unchanged; rate limit -> the same after the pause; the database failing after Instagram
  refreshed -> rolled back whole, the old token kept (Instagram still takes it) and
  refreshed again; a killed worker -> redelivered (test_refresh_celery).
- file write: disk full or permission denied -> the new token kept, the old file whole, no
  temporary file left, *file problem*, and the reconcile rewrites it.
- broker enqueue: the sweep fails loudly and the next one re-selects the same accounts
  (test_refresh_celery).

Instagram's side is the fake over real HTTP; our side's faults are injected where the
operating system or the database would raise them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from accounts import services, tasks
from accounts.models import Account, Event, PendingToken, SweepState, Token
from accounts.selectors import FileState, State, accounts_with_state
from accounts.services import Actor, Outcome
from tests.conftest import active_account, callback_path
from tests.fake_instagram import Fault, delay, disconnect, rate_limited, status

ACTOR = Actor(job="test")
DAY = timedelta(days=1)
CODE_EXCHANGE, SWAP, ME, REFRESH = "/oauth/access_token", "/access_token", "/me", \
    "/refresh_access_token"


def malformed(path: str) -> Fault:
    """A success status whose body breaks the answer's rules."""
    body = {
        CODE_EXCHANGE: '{"access_token": "IGQV\\nnewline-in-token-xxxxxxxx", "user_id": 5}',
        SWAP: '{"access_token": "IGAA\\u0000nul-in-token-xxxxxxxxx", "expires_in": 5183944}',
        REFRESH: '{"access_token": "IGAA\\u0000nul-in-token-xxxxxxxxx", "expires_in": 5183944}',
        ME: '{"id": "17841400000000001", "username": "has\\nnewline"}',
    }[path]
    return status(200, body, "application/json")


TRANSIENT_FAULTS = {
    "timeout": lambda path: delay(1.5),
    "reset": lambda path: disconnect(),
    "5xx": lambda path: status(502),
    "malformed": malformed,
    "rate limit": lambda path: rate_limited(usage={"estimated_time_to_regain_access": 1}),
}


@pytest.fixture
def quick(settings, fake):
    settings.INSTAGRAM_READ_TIMEOUT = 0.7
    settings.INSTAGRAM_DEADLINE_SECONDS = 3


def start_flow(admin_client, account: Account, username: str = "shop_owner"):  # noqa: ANN001
    return admin_client.get(callback_path(admin_client, account, username))


def state_of(account: Account) -> str:
    return accounts_with_state(now=timezone.now()).get(pk=account.pk).state


def due(fake, app) -> Account:  # noqa: ANN001
    """Account "shop": due (50 days old, 10 left), its file written."""
    return active_account(fake, app, "shop", exported=True)


# --- code exchange ------------------------------------------------------------------------


@pytest.mark.parametrize("fault", sorted(TRANSIENT_FAULTS))
def test_code_exchange_fault_stores_nothing(admin_client, login_account, fake, token_dir,
                                           quick, fault):
    fake.inject(CODE_EXCHANGE, TRANSIENT_FAULTS[fault](CODE_EXCHANGE))
    response = start_flow(admin_client, login_account)
    assert response.status_code == 400
    assert "Nothing was stored" in response.content.decode() or "refused" in \
        response.content.decode()
    assert not Token.objects.filter(account=login_account).exists()
    assert not PendingToken.objects.filter(account=login_account).exists()
    assert not (token_dir.exists() and any(token_dir.iterdir()))
    assert Event.objects.filter(account=login_account, action="authorize",
                                outcome="failed").exists()


# --- swap and /me after the code was spent --------------------------------------------------


@pytest.mark.parametrize("path", [SWAP, ME])
@pytest.mark.parametrize("fault", sorted(TRANSIENT_FAULTS))
def test_a_fault_after_the_code_keeps_the_short_lived_token_for_the_next_run(
        admin_client, login_account, fake, token_dir, quick, path, fault):
    fake.inject(path, TRANSIENT_FAULTS[fault](path))
    response = start_flow(admin_client, login_account)
    assert response.status_code == 400
    assert "tries again" in response.content.decode()
    assert PendingToken.objects.filter(account=login_account).exists()  # not lost
    assert not Token.objects.filter(account=login_account).exists()

    SweepState.objects.filter(pk=1).update(throttled_until=None)
    result = tasks.swap_pending_token.apply(args=(login_account.pk,)).get()

    assert result == Outcome.REFRESHED
    token = Token.objects.get(account=login_account)
    assert token.kind == "long" and fake.token_info(token.value)["kind"] == "long"
    assert (token_dir / "shop_owner").read_text() == token.value


# --- refresh ----------------------------------------------------------------------------


@pytest.mark.parametrize("fault", sorted(TRANSIENT_FAULTS))
def test_a_refresh_fault_is_retried_and_changes_neither_token_nor_file(
        fake, login_app, token_dir, quick, fault):
    account = due(fake, login_app)
    old, path = account.token.value, token_dir / "shop"
    fake.inject(REFRESH, TRANSIENT_FAULTS[fault](REFRESH))

    result = services.token_refresh(account_id=account.pk, actor=ACTOR, now=timezone.now())

    assert result.outcome == Outcome.RETRY and result.retry_in >= 1
    token = Token.objects.get(account=account)
    assert token.value == old and token.refresh_failures == 1
    assert token.next_attempt_at > timezone.now()
    assert path.read_text() == old
    assert Event.objects.filter(account=account, action="refresh", outcome="failed").exists()
    assert state_of(account) in (State.REFRESH_DUE, State.EXPIRING)
    if fault == "rate limit":
        assert SweepState.objects.get(pk=1).throttled_until > timezone.now()
    # The fault gone (and any pause over), the retry refreshes it.
    SweepState.objects.filter(pk=1).update(throttled_until=None)
    Token.objects.filter(pk=token.pk).update(next_attempt_at=None)
    later = services.token_refresh(account_id=account.pk, actor=ACTOR, now=timezone.now())
    assert later.outcome == Outcome.REFRESHED
    assert path.read_text() == Token.objects.get(pk=token.pk).value != old


def test_a_database_failure_after_instagram_refreshed_keeps_the_old_valid_token(
        fake, login_app, token_dir, quick, monkeypatch):
    account = due(fake, login_app)
    old = account.token.value

    def down(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        raise OperationalError("server closed the connection unexpectedly")

    # The refreshed round's tokens are stored together (executemany): it fails.
    monkeypatch.setattr(CursorWrapper, "executemany", down)
    with pytest.raises(OperationalError):
        tasks.refresh_account.apply(args=(account.pk,), throw=True)
    monkeypatch.undo()

    token = Token.objects.get(account=account)
    assert token.value == old and token.refresh_failures == 0  # rolled back whole
    assert (token_dir / "shop").read_text() == old
    assert fake.token_info(old)["revoked"] is False  # Instagram still takes it
    # The redelivered task (acks_late) or the next sweep refreshes it.
    assert services.token_refresh(account_id=account.pk, actor=ACTOR,
                                  now=timezone.now()).outcome == Outcome.REFRESHED


def test_a_token_another_worker_has_claimed_is_left_to_it_until_the_claim_lapses(
        fake, login_app, token_dir):
    # Worker A claimed the token and is waiting for Instagram (or its database session
    # died meanwhile: the claim was committed, unlike a row lock it outlives the session).
    account = due(fake, login_app)
    now = timezone.now()
    Token.objects.filter(account=account).update(
        refresh_claim="a" * 32, refresh_claimed_until=now + timedelta(seconds=90))
    result = services.token_refresh(account_id=account.pk, actor=ACTOR, now=now,
                                    claim="another-task")
    assert result.outcome == Outcome.BUSY and fake.calls(REFRESH) == []
    assert services.token_refresh(account_id=account.pk, actor=ACTOR,
                                  now=now).outcome == Outcome.BUSY
    # A claim whose worker died lapses: the token is due again.
    later = now + timedelta(seconds=91)
    assert services.token_refresh(account_id=account.pk, actor=ACTOR,
                                  now=later).outcome == Outcome.REFRESHED
    token = Token.objects.get(account=account)
    assert token.refresh_claim == "" and token.refresh_claimed_until is None


def test_the_same_task_delivered_again_takes_its_claim_over_at_once(fake, login_app,
                                                                    token_dir):
    # Its worker died after claiming (acks_late: the broker hands the message out again).
    account = due(fake, login_app)
    now = timezone.now()
    Token.objects.filter(account=account).update(
        refresh_claim="task-1", refresh_claimed_until=now + timedelta(seconds=90))
    result = services.token_refresh(account_id=account.pk, actor=ACTOR, now=now,
                                    claim="task-1")
    assert result.outcome == Outcome.REFRESHED and len(fake.calls(REFRESH)) == 1
    assert Token.objects.get(account=account).refresh_claim == ""


@pytest.mark.django_db(transaction=True)
def test_an_answer_whose_database_session_died_is_stored_on_a_new_one(
        postgres, fake, login_app, token_dir, monkeypatch):
    account = due(fake, login_app)
    old = account.token.value
    real, failed = CursorWrapper.executemany, []

    def once(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        if not failed:
            failed.append(True)
            raise OperationalError("terminating connection due to administrator command")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CursorWrapper, "executemany", once)
    result = services.token_refresh(account_id=account.pk, actor=ACTOR, now=timezone.now())
    assert failed and result.outcome == Outcome.REFRESHED
    token = Token.objects.get(account=account)
    # Instagram's one answer is what is stored: no second refresh, claim released.
    assert len(fake.calls(REFRESH)) == 1 and token.value != old
    assert fake.token_info(token.value)["kind"] == "long"
    assert token.refresh_claim == "" and (token_dir / "shop").read_text() == token.value
    assert Event.objects.filter(account=account, action="refresh", outcome="ok").count() == 1


@contextlib.contextmanager
def ctrl_c_after(seconds: float):  # noqa: ANN201
    """Ctrl-C in the main thread after `seconds` (SIGALRM standing in for SIGINT)."""
    def interrupt(signum, frame):  # noqa: ANN001
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_ctrl_c_stores_the_answers_that_came_and_calls_nothing_more(fake, login_app, token_dir):
    accounts = [active_account(fake, login_app, f"Stop {i}", exported=True) for i in range(9)]
    old = {a.pk: a.token.value for a in accounts}
    # Rounds of 3: the first answers at once, the second is in flight at the Ctrl-C.
    fake.inject(REFRESH, *[delay(0.05)] * 3, *[delay(1.0)] * 3)
    seen = []
    with pytest.raises(KeyboardInterrupt), ctrl_c_after(0.6):
        for item in services.tokens_refresh_many(account_ids=[a.pk for a in accounts],
                                                 actor=ACTOR, now=timezone.now(),
                                                 concurrency=3):
            seen.append(item)
    assert [result.outcome for _, result in seen] == [Outcome.REFRESHED] * 3
    tokens = {t.account_id: t for t in Token.objects.filter(account__in=accounts)}
    # Both rounds' answers are stored (Instagram would not give them again); the third
    # round was never called; no claim is left behind.
    called = [call.query["access_token"] for call in fake.calls(REFRESH)]
    assert sorted(called) == sorted(old[a.pk] for a in accounts[:6])
    assert all(tokens[a.pk].value != old[a.pk] for a in accounts[:6])
    assert all(tokens[a.pk].value == old[a.pk] for a in accounts[6:])
    assert all(t.refresh_claim == "" and t.refresh_claimed_until is None
               for t in tokens.values())
    # The next run refreshes what is left, and only that.
    rest = dict(services.tokens_refresh_many(account_ids=[a.pk for a in accounts],
                                             actor=ACTOR, now=timezone.now(), concurrency=3))
    assert sorted(r.outcome for r in rest.values()) == [Outcome.NOT_DUE] * 6 + [
        Outcome.REFRESHED] * 3
    assert len(fake.calls(REFRESH)) == 9


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_a_file_write_failure_keeps_the_new_token_and_leaves_the_old_file_whole(
        fake, login_app, token_dir, monkeypatch, code):
    account = due(fake, login_app)
    old = account.token.value
    real_replace = os.replace

    def fail(src, dst):  # noqa: ANN001
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", fail)
    result = services.token_refresh(account_id=account.pk, actor=ACTOR, now=timezone.now())
    monkeypatch.setattr(os, "replace", real_replace)

    assert result.outcome == Outcome.REFRESHED
    new = Token.objects.get(account=account).value
    assert new != old and fake.token_info(new)["kind"] == "long"  # kept in the database
    assert (token_dir / "shop").read_text() == old  # the old file, whole
    assert sorted(p.name for p in token_dir.iterdir()) == ["shop"]  # no temporary left
    account.refresh_from_db()
    assert account.file_state == FileState.UNWRITABLE and os.strerror(code) in account.file_error
    assert state_of(account) == State.FILE_PROBLEM
    report = services.token_files_reconcile(actor=ACTOR, now=timezone.now())
    assert report.rewritten == 1 and (token_dir / "shop").read_text() == new
    assert state_of(account) != State.FILE_PROBLEM
