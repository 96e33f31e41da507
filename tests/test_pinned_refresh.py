"""Behaviours of the refresh in rounds (claims, the second transaction, chunks) and of the
batch file export that no other test pinned down, found by mutation testing (README,
"Mutation testing"; the survivors are classified in docs/mutation-survivors.md). Each
test goes through the public service functions against the fake Instagram over HTTP and
fails when the behaviour changes."""

from __future__ import annotations

import time
import types
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from accounts import services
from accounts.instagram import InstagramClient
from accounts.models import Account, Event, Token
from accounts.services import Actor, Outcome
from accounts.services import refresh as refresh_module

ACTOR = Actor(job="test")
REFRESH = "/refresh_access_token"
CLAIM_SECONDS = int(django_settings.INSTAGRAM_DEADLINE_SECONDS) * 2 + 60


def make_token(fake, app, label: str, *, age: timedelta = timedelta(days=50),
               left: timedelta = timedelta(days=10), export: bool = True) -> Account:
    """An account whose long-lived token was issued `age` ago and expires in `left` (by
    default due), its file written once (so a refresh rewrites it in the batch)."""
    now = timezone.now()
    username = label.lower().replace(" ", "_")
    account = Account.objects.create(app=app, label=label)
    Account.objects.filter(pk=account.pk).update(status=Account.Status.ACTIVE,
                                                 username=username,
                                                 ig_id=str(10**17 + account.pk))
    value = fake.mint_token(client_id=app.app_id, username=username, kind="long", age=age)
    Token.objects.create(account=account, value=value, kind=Token.Kind.LONG,
                         obtained_at=now - age, expires_at=now + left)
    account = Account.objects.select_related("token").get(pk=account.pk)
    if export:
        services.token_export(account=account, actor=ACTOR, now=now)
    return account


def claims() -> dict[int, tuple[str, object]]:
    return {t.account_id: (t.refresh_claim, t.refresh_claimed_until)
            for t in Token.objects.defer("value")}


@pytest.fixture
def during_call(monkeypatch):
    """Runs `hook[0]` (when set) inside each refresh call, before Instagram is asked, and
    records the token rows' claims as they were then."""
    seen: list[dict[int, tuple[str, object]]] = []
    hook: list = [None]
    real = InstagramClient.refresh

    def spy(self, **kwargs):  # noqa: ANN001, ANN003
        seen.append(claims())
        if hook[0] is not None:
            hook[0]()
        return real(self, **kwargs)

    monkeypatch.setattr(InstagramClient, "refresh", spy)
    return types.SimpleNamespace(seen=seen, hook=hook)


@pytest.fixture
def no_sleep(monkeypatch):
    """The pauses between tries at storing after a lost session, recorded, not slept."""
    slept: list[float] = []
    monkeypatch.setattr(refresh_module, "time", types.SimpleNamespace(sleep=slept.append))
    return slept


# --- the claim ----------------------------------------------------------------------------


def test_a_token_is_claimed_while_instagram_is_asked_and_released_after(
        fake, login_app, during_call):
    account = make_token(fake, login_app, "Shop")
    before = timezone.now()
    result = services.token_refresh(account_id=account.pk, actor=ACTOR, now=before)
    after = timezone.now()
    assert result.outcome == Outcome.REFRESHED
    [during] = during_call.seen
    claim, until = during[account.pk]
    # A claim of its own (a fresh id), lasting CLAIM_SECONDS from the moment it is taken.
    assert len(claim) == 32 and int(claim, 16) >= 0
    assert before + timedelta(seconds=CLAIM_SECONDS) <= until
    assert until <= after + timedelta(seconds=CLAIM_SECONDS)
    assert claims()[account.pk] == ("", None)


def test_each_round_claims_only_its_own_accounts(fake, login_app, during_call):
    accounts = [make_token(fake, login_app, f"Shop {i}") for i in range(3)]
    ids = [a.pk for a in accounts]
    results = dict(services.tokens_refresh_many(account_ids=ids, actor=ACTOR,
                                                now=timezone.now(), concurrency=1))
    assert {a: r.outcome for a, r in results.items()} == dict.fromkeys(ids, Outcome.REFRESHED)
    # Rounds of one: while a call is made, just its token is claimed (the earlier rounds'
    # claims released), each round with a claim of its own.
    held = [[a for a, (claim, _) in seen.items() if claim] for seen in during_call.seen]
    assert held == [[ids[0]], [ids[1]], [ids[2]]]
    assert len({seen[a][0] for seen, [a] in zip(during_call.seen, held, strict=True)}) == 3
    assert all(claim == ("", None) for claim in claims().values())


def test_a_round_of_several_calls_them_together_and_stores_every_answer(
        fake, login_app, token_dir):
    accounts = [make_token(fake, login_app, f"Shop {i}") for i in range(5)]
    ids = [a.pk for a in accounts]
    results = dict(services.tokens_refresh_many(account_ids=ids, actor=ACTOR,
                                                now=timezone.now(), concurrency=2))
    assert {a: r.outcome for a, r in results.items()} == dict.fromkeys(ids, Outcome.REFRESHED)
    assert len(fake.calls(REFRESH)) == 5
    for account in accounts:
        token = Token.objects.get(account=account)
        assert token.value != account.token.value and token.refresh_claim == ""
        assert (token_dir / account.username).read_text() == token.value


def test_a_claim_ending_exactly_now_has_lapsed(fake, login_app):
    account = make_token(fake, login_app, "Shop")
    now = timezone.now()
    Token.objects.filter(account=account).update(refresh_claim="b" * 32,
                                                 refresh_claimed_until=now)
    result = services.token_refresh(account_id=account.pk, actor=ACTOR, now=now)
    assert result.outcome == Outcome.REFRESHED and len(fake.calls(REFRESH)) == 1


@pytest.mark.parametrize("claimed_for, outcome", [(1, Outcome.BUSY), (0, Outcome.NOT_DUE),
                                                  (None, Outcome.NOT_DUE)])
def test_a_token_not_due_is_busy_only_while_another_claim_lives(
        fake, login_app, claimed_for, outcome):
    account = make_token(fake, login_app, "Young", age=timedelta(days=2),
                         left=timedelta(days=58))
    now = timezone.now()
    if claimed_for is not None:
        Token.objects.filter(account=account).update(
            refresh_claim="c" * 32, refresh_claimed_until=now + timedelta(seconds=claimed_for))
    result = services.token_refresh(account_id=account.pk, actor=ACTOR, now=now)
    assert result.outcome == outcome and fake.calls(REFRESH) == []


def test_a_claim_that_lapsed_and_was_taken_by_another_worker_stores_nothing(
        fake, login_app, token_dir, during_call):
    account = make_token(fake, login_app, "Shop")
    old = account.token.value
    other = ("d" * 32, timezone.now() + timedelta(seconds=60))

    def another_worker_takes_it() -> None:
        Token.objects.filter(account=account).update(refresh_claim=other[0],
                                                     refresh_claimed_until=other[1])

    during_call.hook[0] = another_worker_takes_it
    result = services.token_refresh(account_id=account.pk, actor=ACTOR, now=timezone.now())
    assert result.outcome == Outcome.BUSY
    token = Token.objects.get(account=account)
    # The other worker's refresh is the one that counts: ours is dropped, its claim kept.
    assert token.value == old and (token.refresh_claim, token.refresh_claimed_until) == other
    assert token.last_refreshed_at is None
    assert not Event.objects.filter(account=account, action="refresh").exists()
    assert (token_dir / "shop").read_text() == old


def test_a_token_no_key_decrypts_is_not_claimed_and_spoils_only_its_own_refresh(
        fake, login_app, during_call):
    good, bad = make_token(fake, login_app, "Good"), make_token(fake, login_app, "Bad")
    with connection.cursor() as cursor:  # raw: the field would encrypt whatever it is given
        cursor.execute("UPDATE accounts_token SET value = %s WHERE account_id = %s",
                       ["not-a-fernet-token", bad.pk])
    results = dict(services.tokens_refresh_many(account_ids=[bad.pk, good.pk], actor=ACTOR,
                                                now=timezone.now(), concurrency=2))
    assert results[good.pk].outcome == Outcome.REFRESHED
    assert results[bad.pk].outcome == Outcome.FAILED
    assert "cannot be decrypted" in results[bad.pk].message
    [during] = during_call.seen
    assert during[bad.pk] == ("", None) and during[good.pk][0]
    assert len(fake.calls(REFRESH)) == 1
    assert Account.objects.get(pk=bad.pk).status == Account.Status.ERROR


def test_each_account_is_refreshed_and_reported_once_however_often_it_is_named(
        fake, login_app, settings):
    settings.REFRESH_CHUNK_SIZE = 2
    accounts = [make_token(fake, login_app, f"Shop {i}") for i in range(3)]
    ids = [a.pk for a in accounts]
    results = list(services.tokens_refresh_many(
        account_ids=[ids[0], ids[1], ids[0], ids[2], ids[1]], actor=ACTOR,
        now=timezone.now(), concurrency=1))
    assert sorted(a for a, _ in results) == sorted(ids)
    assert {r.outcome for _, r in results} == {Outcome.REFRESHED}
    assert len(fake.calls(REFRESH)) == 3


# --- the store, after the calls -------------------------------------------------------------


def failing_executemany(monkeypatch, error: type[Exception], times: int) -> list[bool]:
    """The refreshed tokens' store (one executemany) fails `times` times with `error`."""
    real, failed = CursorWrapper.executemany, []

    def flaky(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        if len(failed) < times:
            failed.append(True)
            raise error("server closed the connection unexpectedly")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CursorWrapper, "executemany", flaky)
    return failed


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("error", [OperationalError, InterfaceError])
def test_a_lost_session_is_tried_again_after_half_a_second(
        fake, login_app, token_dir, monkeypatch, no_sleep, error):
    account = make_token(fake, login_app, "Shop")
    old = account.token.value
    failed = failing_executemany(monkeypatch, error, times=2)
    result = services.token_refresh(account_id=account.pk, actor=ACTOR, now=timezone.now())
    assert len(failed) == 2 and result.outcome == Outcome.REFRESHED
    assert no_sleep == [0.5, 1.0]  # backing off: 0.5 s, then 1 s
    token = Token.objects.get(account=account)
    assert len(fake.calls(REFRESH)) == 1 and token.value != old
    assert (token.refresh_claim, token.refresh_claimed_until) == ("", None)
    assert (token_dir / "shop").read_text() == token.value


@pytest.mark.django_db(transaction=True)
def test_a_store_that_never_gets_through_gives_up_after_three_tries_and_keeps_the_claim(
        fake, login_app, token_dir, monkeypatch, no_sleep, caplog):
    account = make_token(fake, login_app, "Shop")
    old = account.token.value
    failed = failing_executemany(monkeypatch, OperationalError, times=99)
    now = timezone.now()
    result = services.token_refresh(account_id=account.pk, actor=ACTOR, now=now)
    assert len(failed) == 3 and no_sleep == [0.5, 1.0, 2.0]
    assert result.outcome == Outcome.FAILED and "unreachable" in result.message
    assert "could not be stored" in caplog.text
    monkeypatch.undo()
    token = Token.objects.get(account=account)
    assert token.value == old and (token_dir / "shop").read_text() == old
    # The claim stays until it lapses: nobody asks Instagram again meanwhile.
    assert token.refresh_claim and token.refresh_claimed_until > now
    again = services.token_refresh(account_id=account.pk, actor=ACTOR, now=timezone.now())
    assert again.outcome == Outcome.BUSY and len(fake.calls(REFRESH)) == 1


@pytest.mark.django_db(transaction=True)
def test_any_other_store_failure_releases_the_claim_and_is_raised(
        fake, login_app, token_dir, monkeypatch, no_sleep):
    account = make_token(fake, login_app, "Shop")
    old = account.token.value
    failing_executemany(monkeypatch, IntegrityError, times=1)
    with pytest.raises(IntegrityError):
        services.token_refresh(account_id=account.pk, actor=ACTOR, now=timezone.now())
    assert no_sleep == []
    token = Token.objects.get(account=account)
    assert token.value == old and (token.refresh_claim, token.refresh_claimed_until) == ("", None)
    # Due again at once: the next attempt refreshes it.
    result = services.token_refresh(account_id=account.pk, actor=ACTOR, now=timezone.now())
    assert result.outcome == Outcome.REFRESHED


def test_a_lost_session_inside_a_callers_transaction_releases_the_claim_and_is_raised(
        fake, login_app, monkeypatch, no_sleep):
    # The test's own transaction is the caller's: a new session cannot continue it.
    account = make_token(fake, login_app, "Shop")
    failing_executemany(monkeypatch, OperationalError, times=1)
    with pytest.raises(OperationalError):
        services.token_refresh(account_id=account.pk, actor=ACTOR, now=timezone.now())
    assert no_sleep == []
    assert claims()[account.pk] == ("", None)


def test_the_calls_of_a_round_overlap(fake, login_app, in_flight):
    import time

    from tests.fake_instagram import delay

    accounts = [make_token(fake, login_app, f"Shop {i}") for i in range(2)]
    state = in_flight
    fake.inject(REFRESH, delay(0.3), delay(0.3))
    started = time.monotonic()
    results = dict(services.tokens_refresh_many(account_ids=[a.pk for a in accounts],
                                                actor=ACTOR, now=timezone.now(),
                                                concurrency=2))
    assert {r.outcome for r in results.values()} == {Outcome.REFRESHED}
    assert state["most"] == 2 and time.monotonic() - started < 0.6


def test_a_round_records_the_highest_usage_its_answers_carried(fake, login_app, monkeypatch):
    import threading

    from accounts.models import SweepState

    accounts = [make_token(fake, login_app, f"Shop {i}") for i in range(2)]
    percent = {accounts[0].token.value: 40, accounts[1].token.value: 70}
    lock = threading.Lock()
    real = InstagramClient.refresh

    def per_account(self, *, access_token, **kwargs):  # noqa: ANN001, ANN003
        with lock:  # one at a time: each answer carries its own account's reading
            fake.usage_headers = {"X-App-Usage": (f'{{"call_count": {percent[access_token]}, '
                                                  f'"total_cputime": 1, "total_time": 1}}')}
            return real(self, access_token=access_token, **kwargs)

    monkeypatch.setattr(InstagramClient, "refresh", per_account)
    now = timezone.now()
    results = dict(services.tokens_refresh_many(account_ids=[a.pk for a in accounts],
                                                actor=ACTOR, now=now, concurrency=2))
    assert {r.outcome for r in results.values()} == {Outcome.REFRESHED}
    state = SweepState.objects.get()
    assert (state.usage_percent, state.usage_recorded_at) == (70, now)


def test_without_force_a_token_not_yet_due_is_left_alone(fake, login_app):
    young = make_token(fake, login_app, "Young", age=timedelta(days=2), left=timedelta(days=58))
    [(account_id, result)] = services.tokens_refresh_many(account_ids=[young.pk], actor=ACTOR,
                                                          now=timezone.now())
    assert (account_id, result.outcome) == (young.pk, Outcome.NOT_DUE)
    assert fake.calls(REFRESH) == []


def test_chunks_in_the_callers_transaction_run_in_its_thread(fake, login_app, settings):
    # SQLite always; PostgreSQL for one chunk: the caller's uncommitted rows are seen.
    settings.REFRESH_CHUNK_SIZE = 2
    count = 4 if connection.vendor == "sqlite" else 2
    accounts = [make_token(fake, login_app, f"Shop {i}") for i in range(count)]
    results = list(services.tokens_refresh_many(account_ids=[a.pk for a in accounts],
                                                actor=ACTOR, now=timezone.now(),
                                                concurrency=2))
    assert sorted(a for a, _ in results) == sorted(a.pk for a in accounts)
    assert {r.outcome for _, r in results} == {Outcome.REFRESHED}


# --- chunks in threads (PostgreSQL) ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_chunk_that_fails_midway_keeps_its_finished_rounds_and_the_others_go_on(
        postgres, fake, login_app, settings, monkeypatch):
    settings.REFRESH_CHUNK_SIZE = 4
    accounts = [make_token(fake, login_app, f"Shop {i}") for i in range(10)]
    ids = [a.pk for a in accounts]
    bad = ids[6]  # second round of the second chunk: ids[4:8] in rounds of two
    real = refresh_module.token_files_write

    def disk_gone(*, account_ids, **kwargs):  # noqa: ANN001, ANN003
        if bad in account_ids:
            raise RuntimeError("the export directory vanished")
        return real(account_ids=account_ids, **kwargs)

    monkeypatch.setattr(refresh_module, "token_files_write", disk_gone)
    results = list(services.tokens_refresh_many(account_ids=ids, actor=ACTOR,
                                                now=timezone.now(), concurrency=2))
    assert sorted(a for a, _ in results) == sorted(ids)  # each once
    outcomes = dict(results)
    failed = {a for a, r in outcomes.items() if r.outcome == Outcome.FAILED}
    assert failed == {ids[6], ids[7]}
    assert {outcomes[a].message for a in failed} == {"RuntimeError"}
    assert all(outcomes[a].outcome == Outcome.REFRESHED for a in ids if a not in failed)
    # Instagram was asked for the failed round too; the next chunks were not held up.
    assert len(fake.calls(REFRESH)) == 10


@pytest.mark.django_db(transaction=True)
def test_chunks_run_at_most_four_at_once_each_on_a_connection_it_closes(
        postgres, fake, login_app, settings, monkeypatch):
    settings.REFRESH_CHUNK_SIZE = 1
    accounts = [make_token(fake, login_app, f"Shop {i}") for i in range(6)]
    threads: set[str] = set()
    real = refresh_module.token_files_write

    def noted(**kwargs):  # noqa: ANN003
        import threading
        threads.add(threading.current_thread().name)
        return real(**kwargs)

    monkeypatch.setattr(refresh_module, "token_files_write", noted)

    def backends() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                           "current_database()")
            return cursor.fetchone()[0]

    before = backends()
    results = dict(services.tokens_refresh_many(account_ids=[a.pk for a in accounts],
                                                actor=ACTOR, now=timezone.now(),
                                                concurrency=2))
    assert {r.outcome for r in results.values()} == {Outcome.REFRESHED}
    assert len(threads) <= 4 and all(t.startswith("refresh-chunk-") for t in threads)
    # A backend leaves pg_stat_activity a moment after its client disconnects (seen in
    # CI: one still listed right after the run), so wait for it; an open connection
    # stays listed and fails this.
    deadline = time.monotonic() + 10
    while backends() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backends() == before


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("cause", ["rate limit below the stop level",
                                   "server error at the stop level",
                                   "answer exactly at the stop level"])
def test_a_pause_holds_the_calls_other_chunks_have_queued(
        postgres, fake, login_app, settings, cause):
    from accounts import selectors
    from tests.fake_instagram import rate_limited, status

    settings.REFRESH_CHUNK_SIZE = 2
    accounts = [make_token(fake, login_app, f"Shop {i}") for i in range(8)]
    stop = settings.USAGE_STOP_PERCENT
    if cause == "rate limit below the stop level":
        low = {"call_count": 10, "total_cputime": 10, "total_time": 10}
        fake.inject(REFRESH, rate_limited(usage=low), rate_limited(usage=low))
    else:
        fake.usage_headers = {
            "X-App-Usage": f'{{"call_count": {stop}, "total_cputime": 1, "total_time": 1}}'}
        if cause == "server error at the stop level":
            fake.inject(REFRESH, status(503), status(503))
    # Four chunks of two at once share two calls in flight: the first answers ask for a
    # pause, and the calls queued behind them are never made (the second call may not
    # have started when the first answer came).
    now = timezone.now()
    results = dict(services.tokens_refresh_many(account_ids=[a.pk for a in accounts],
                                                actor=ACTOR, now=now, concurrency=2))
    calls = len(fake.calls(REFRESH))
    assert calls in (1, 2)
    paused = {a for a, r in results.items() if r.outcome == Outcome.PAUSED}
    assert len(paused) == 8 - calls
    until = selectors.refresh_paused_until(now=now)
    assert until is not None and until > now
    for account_id in paused:
        token = Token.objects.get(account_id=account_id)
        # Not before the pause ends, or (a chunk whose calls were held stored before the
        # chunk that got the answer recorded the pause) left due, with no guessed end: the
        # recorded pause holds it.
        assert token.next_attempt_at in (until, None) and token.refresh_failures == 0
        assert (token.refresh_claim, token.refresh_claimed_until) == ("", None)
        assert results[account_id].retry_in == (
            int((until - now).total_seconds()) if token.next_attempt_at else None)


# --- the batch file export (token_files_write) ----------------------------------------------


def file_state(account: Account) -> tuple[str, str]:
    fresh = Account.objects.get(pk=account.pk)
    return fresh.file_state, fresh.file_error


def test_the_batch_writes_each_file_and_records_the_writes_together(
        fake, login_app, token_dir, settings):
    settings.TOKEN_FILE_MODE = 0o604
    from accounts.models import TokenFile
    from accounts.selectors import FileState

    accounts = [make_token(fake, login_app, f"Shop {i}") for i in range(2)]
    for account in accounts:
        (token_dir / account.username).write_text("stale")
    Account.objects.filter(pk=accounts[0].pk).update(file_error="an old problem",
                                                     file_state=FileState.UNWRITABLE)
    now = timezone.now() + timedelta(minutes=5)
    job = Actor(job="batch")
    written = services.token_files_write(account_ids=[a.pk for a in accounts] + [10**6],
                                         actor=job, now=now)
    assert written == {a.pk: token_dir / a.username for a in accounts}
    for account in accounts:
        path = token_dir / account.username
        assert path.read_text() == account.token.value
        assert path.stat().st_mode & 0o777 == 0o604
        fresh = Account.objects.get(pk=account.pk)
        assert (fresh.file_state, fresh.file_error) == (FileState.IN_SYNC, "")
        assert fresh.file_written_at == fresh.file_checked_at == now
        assert TokenFile.objects.get(account=account).written_at == now
        event = Event.objects.filter(account=account, action="export").latest("pk")
        assert (event.outcome, event.message, event.created_at) == ("ok", f"Wrote {path}.", now)
        assert event.actor_job == "batch"
    assert sorted(p.name for p in token_dir.iterdir()) == sorted(a.username for a in accounts)


def test_the_batch_hands_the_cases_that_are_not_plain_to_the_single_export(
        fake, login_app, token_dir):
    from accounts.models import TokenFile
    from accounts.selectors import FileState

    first = make_token(fake, login_app, "First", export=False)  # no file yet: claims one
    renamed = make_token(fake, login_app, "Renamed")
    Account.objects.filter(pk=renamed.pk).update(token_filename="renamed-feed")
    off = make_token(fake, login_app, "Off")
    Account.objects.filter(pk=off.pk).update(export_enabled=False)
    short = make_token(fake, login_app, "Short")
    Token.objects.filter(account=short).update(kind=Token.Kind.SHORT)
    tokenless = Account.objects.create(app=login_app, label="Tokenless")
    now = timezone.now()
    written = services.token_files_write(
        account_ids=[first.pk, renamed.pk, off.pk, short.pk, tokenless.pk], actor=ACTOR,
        now=now)
    assert written == {first.pk: token_dir / "first", renamed.pk: token_dir / "renamed-feed",
                       off.pk: None, short.pk: None, tokenless.pk: None}
    assert (token_dir / "first").read_text() == first.token.value
    assert (token_dir / "renamed-feed").read_text() == renamed.token.value
    assert TokenFile.objects.get(name="renamed").status == TokenFile.Status.ORPHANED
    assert TokenFile.objects.get(name="off").status == TokenFile.Status.ORPHANED
    assert file_state(off) == (FileState.NOT_EXPORTED, "")


def test_a_file_the_batch_cannot_write_fails_alone_and_is_said_once_to_a_job(
        fake, login_app, token_dir):
    from accounts.selectors import FileState

    good, bad = make_token(fake, login_app, "Good"), make_token(fake, login_app, "Bad")
    with connection.cursor() as cursor:  # raw: the field would encrypt whatever it is given
        cursor.execute("UPDATE accounts_token SET value = %s WHERE account_id = %s",
                       ["not-a-fernet-token", bad.pk])
    (token_dir / "good").write_text("stale")
    for _ in range(2):
        written = services.token_files_write(account_ids=[bad.pk, good.pk], actor=ACTOR,
                                             now=timezone.now())
        assert written == {bad.pk: None, good.pk: token_dir / "good"}
    assert (token_dir / "good").read_text() == good.token.value
    assert (token_dir / "bad").read_text() == bad.token.value  # the old file, untouched
    state, error = file_state(bad)
    assert state == FileState.UNWRITABLE and "cannot be decrypted" in error
    failures = Event.objects.filter(account=bad, action="export", outcome="failed")
    assert failures.count() == 1 and failures.get().message == error
    assert file_state(good) == (FileState.IN_SYNC, "")


@pytest.mark.parametrize("problem", ["directory", "group"])
def test_the_batch_records_why_a_file_could_not_be_written(
        fake, login_app, token_dir, settings, problem):
    from accounts.selectors import FileState

    account = make_token(fake, login_app, "Shop")
    if problem == "directory":
        settings.TOKEN_EXPORT_DIR = token_dir / "shop" / "below-a-file"
        expected = "Token file 'shop' not written: Not a directory."
    else:
        settings.TOKEN_FILE_GROUP = "no-such-group-igregistry"
        expected = ("Token file not written: the group 'no-such-group-igregistry' "
                    "(TOKEN_FILE_GROUP) does not exist.")
    written = services.token_files_write(account_ids=[account.pk], actor=ACTOR,
                                         now=timezone.now())
    assert written == {account.pk: None}
    assert file_state(account) == (FileState.UNWRITABLE, expected)
    assert (token_dir / "shop").read_text() == account.token.value


@pytest.mark.django_db(transaction=True)
def test_one_call_at_a_time_means_one_chunk_at_a_time(postgres, fake, login_app, settings,
                                                       in_flight):

    from tests.fake_instagram import delay

    settings.REFRESH_CHUNK_SIZE = 1
    accounts = [make_token(fake, login_app, f"Shop {i}") for i in range(3)]
    state = in_flight
    fake.inject(REFRESH, *[delay(0.2) for _ in accounts])
    results = dict(services.tokens_refresh_many(account_ids=[a.pk for a in accounts],
                                                actor=ACTOR, now=timezone.now(),
                                                concurrency=1))
    assert {r.outcome for r in results.values()} == {Outcome.REFRESHED}
    assert state["most"] == 1
