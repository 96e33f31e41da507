"""Automatic refresh through Celery, against the real Redis and PostgreSQL.

The beat schedule, the sweep's choice of accounts, exactly-once refreshes under
concurrent sweeps, redelivery after a worker is killed mid-refresh, a broker outage,
and retries of temporary failures through a real worker. The fake Instagram counts the
refresh calls: "exactly once" is counted where it matters, at Instagram.

Needs DATABASE_URL (PostgreSQL) and REDIS_URL: skipped locally without them, failing in
CI (CI=true), through `tests.conftest.require_service`.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import kombu.pools
import pytest
import redis
from celery.contrib.testing.worker import start_worker
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone
from kombu.exceptions import OperationalError

from accounts import services, tasks
from accounts.models import Account, Event, InstagramApp, SweepState, Token
from accounts.services import Actor, Outcome
from igregistry.celery import app
from tests.conftest import require_service
from tests.fake_instagram import (
    FakeInstagram,
    delay,
    disconnect,
    garbage,
    graph_error,
    rate_limited,
    status,
)

BASE_DIR = Path(__file__).resolve().parent.parent
QUEUE = "celery"  # Celery's default queue: a Redis list of that name
UNACKED = ("unacked", "unacked_index", "unacked_mutex")  # kombu's redelivery bookkeeping
REFRESH = "/refresh_access_token"
REFRESH_TASK = "accounts.tasks.refresh_account"
CHUNK_TASK = "accounts.tasks.refresh_accounts"

_user_ids = itertools.count(17841400000000001)


# --- helpers ----------------------------------------------------------------------------


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             detail: Callable[[], str] = lambda: "") -> object:
    """Poll until `predicate()` is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n{detail()}")
        time.sleep(0.05)


def make_account(fake: FakeInstagram, ig_app: InstagramApp, username: str, *,
                 age: timedelta = timedelta(days=50), expires_in: timedelta = timedelta(days=10),
                 status: str = Account.Status.ACTIVE, **token_fields) -> tuple[int, str]:
    """An account with a long-lived token minted at the fake `age` ago. The defaults make
    it due (50 days old, 10 days left). Returns (account id, token value)."""
    now = timezone.now()
    value = fake.mint_token(client_id=ig_app.app_id, username=username, kind="long", age=age)
    account = Account.objects.create(app=ig_app, label=f"Feed of {username}")
    Token.objects.create(account=account, value=value, kind=Token.Kind.LONG,
                         obtained_at=now - age, expires_at=now + expires_in, **token_fields)
    Account.objects.filter(pk=account.pk).update(
        status=status, username=username, ig_id=str(next(_user_ids))
    )
    return account.pk, value


def newest_fake_token(fake: FakeInstagram, username: str) -> str:
    """The token the fake issued last for this user."""
    with fake._state.lock:
        issued = [t for t in fake._state.tokens.values() if t.username == username]
    return max(issued, key=lambda t: t.issued_at).value


def run_in_threads(count: int, target: Callable[[], object]) -> list:
    """Start `count` threads at once (barrier) running `target`; return their results."""
    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = target()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()  # each thread has its own database connection

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a thread did not finish within 30 s"
    assert not errors, errors
    return results


def call_bounded(target: Callable[[], object], timeout: float) -> object:
    """Run `target` in a thread; its result or exception, failing if it outlives
    `timeout` seconds (a hung call must not hang the suite)."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(target())
        except BaseException as exc:
            outcome.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"{target} still running after {timeout} s")
    return outcome[0]


def queued_messages(client: redis.Redis) -> list[dict]:
    """The messages waiting in Celery's queue: task name, args, and the raw bytes (with
    the body decoded, since kombu base64-encodes it)."""
    messages = []
    for raw in client.lrange(QUEUE, 0, -1):
        envelope = json.loads(raw)
        body = envelope["body"]
        if envelope["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body).decode()
        args = json.loads(body)[0]
        messages.append({"task": envelope["headers"]["task"], "args": args,
                         "argsrepr": envelope["headers"].get("argsrepr"),
                         "raw": raw.decode() + body})
    return messages


def queued_refresh_ids(client: redis.Redis) -> list[int]:
    """The account ids of the queued refreshes: one per `refresh_account` message, a
    chunk per `refresh_accounts` message (ids only, never a token)."""
    messages = queued_messages(client)
    assert {m["task"] for m in messages} <= {REFRESH_TASK, CHUNK_TASK}, messages
    ids = []
    for message in messages:
        assert message["argsrepr"] == repr(tuple(message["args"]))
        first = message["args"][0]
        ids += first if message["task"] == CHUNK_TASK else [first]
        assert all(isinstance(i, int) for i in ids)
    return sorted(ids)


def broker_idle(client: redis.Redis) -> bool:
    """Nothing waiting and nothing delivered but unacknowledged."""
    return client.llen(QUEUE) == 0 and client.hlen("unacked") == 0


def purge(client: redis.Redis) -> None:
    client.delete(QUEUE, *UNACKED)


def _drop_broker_connections() -> None:
    """Forget pooled broker connections and producers, so the next publish connects to
    whatever `app.conf.broker_url` says now."""
    kombu.pools.reset()  # closes and forgets every kombu connection and producer pool
    app._pool = None
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None


@contextlib.contextmanager
def broker_at(url: str) -> Iterator[None]:
    """Point the project's Celery app at a Redis broker for the duration."""
    saved = (app.conf.broker_url, app.conf.broker_transport_options)
    app.conf.broker_url = url
    app.conf.broker_transport_options = {"visibility_timeout": 3600}
    _drop_broker_connections()
    try:
        yield
    finally:
        app.conf.broker_url, app.conf.broker_transport_options = saved
        _drop_broker_connections()


@contextlib.contextmanager
def in_process_worker(concurrency: int = 2) -> Iterator[None]:
    """A real Celery worker (threads pool) of the project's app, in this process."""
    # Celery's test worker sets up logging (root level ERROR): put it back for later tests.
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        with start_worker(app, pool="threads", concurrency=concurrency,
                          perform_ping_check=False, shutdown_timeout=15):
            yield
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers


def refreshed(account_id: int, old_value: str) -> bool:
    return Token.objects.get(account_id=account_id).value != old_value


def refresh_events(account_id: int) -> list[str]:
    return list(
        Event.objects.filter(account_id=account_id, action="refresh")
        .order_by("created_at", "id")
        .values_list("outcome", flat=True)
    )


def file_of(token_dir: Path, username: str) -> str:
    return (Path(token_dir) / username).read_text(encoding="utf-8")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL, wait: float = 10) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def broker(postgres, redis_url) -> Iterator[redis.Redis]:
    """The Celery app publishing to REDIS_URL, with an empty queue before and after;
    yields a client of that Redis database."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    purge(client)
    with broker_at(redis_url):
        yield client
    purge(client)
    client.close()


# --- 1. beat schedule -------------------------------------------------------------------


def test_beat_schedule_runs_the_sweep_and_the_reconcile_at_the_configured_intervals(tmp_path):
    schedule = {entry["task"]: entry for entry in app.conf.beat_schedule.values()}
    assert schedule["accounts.tasks.refresh_sweep"]["schedule"] == timedelta(
        minutes=django_settings.REFRESH_SWEEP_MINUTES
    )
    assert schedule["accounts.tasks.reconcile_token_files"]["schedule"] == timedelta(
        minutes=django_settings.RECONCILE_MINUTES
    )
    # What beat and a worker see in a fresh process: the intervals come from the
    # environment and the tasks are found by autodiscovery (not by this test's imports).
    probe = (
        "import json, django; django.setup()\n"
        "from igregistry.celery import app\n"
        "app.loader.import_default_modules()\n"
        "print(json.dumps({'tasks': sorted(app.tasks), 'schedule': {e['task']: "
        "e['schedule'].total_seconds() for e in app.conf.beat_schedule.values()}}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env |= {"DJANGO_SETTINGS_MODULE": "igregistry.settings_test", "PYTHONPATH": str(BASE_DIR),
            "VAR_DIR": str(tmp_path), "REFRESH_SWEEP_MINUTES": "7", "RECONCILE_MINUTES": "3"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["schedule"]["accounts.tasks.refresh_sweep"] == 7 * 60
    assert seen["schedule"]["accounts.tasks.reconcile_token_files"] == 3 * 60
    for name in ("accounts.tasks.refresh_sweep", "accounts.tasks.reconcile_token_files",
                 REFRESH_TASK):
        assert name in seen["tasks"]
        assert name in app.tasks


# --- 2. the sweep picks exactly the due accounts ----------------------------------------


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db
def test_sweep_enqueues_exactly_the_due_accounts_by_id_only(broker, fake, login_app):
    now = timezone.now()
    due, due_value = make_account(fake, login_app, "due_shop")
    erring, erring_value = make_account(fake, login_app, "erring_shop",
                                        status=Account.Status.ERROR)
    backoff_over, _ = make_account(fake, login_app, "retry_now_shop", refresh_failures=2,
                                   next_attempt_at=now - timedelta(minutes=1))
    others = {
        "not due": make_account(fake, login_app, "fresh_shop", age=timedelta(days=2),
                                expires_in=timedelta(days=58)),
        "too young": make_account(fake, login_app, "young_shop", age=timedelta(hours=12),
                                  expires_in=timedelta(days=10)),
        "expired": make_account(fake, login_app, "expired_shop", age=timedelta(days=61),
                                expires_in=-timedelta(hours=1)),
        "needs reauth": make_account(fake, login_app, "revoked_shop",
                                     status=Account.Status.NEEDS_REAUTH),
        "backing off": make_account(fake, login_app, "backoff_shop", refresh_failures=1,
                                    next_attempt_at=now + timedelta(hours=1)),
    }

    result = tasks.refresh_sweep()

    assert queued_refresh_ids(broker) == sorted([due, erring, backoff_over])
    assert result == {"refresh": 3, "swap": 0, "flagged": 1}
    expired_id = others["expired"][0]
    assert Account.objects.get(pk=expired_id).status == Account.Status.NEEDS_REAUTH
    assert refresh_events(expired_id) == [Event.Outcome.FAILED]
    for label, (account_id, _) in others.items():
        if label != "expired":
            assert refresh_events(account_id) == [], label
    # Ids only: no token ever travels through the broker.
    values = [due_value, erring_value] + [value for _, value in others.values()]
    for message in queued_messages(broker):
        for value in values:
            assert value not in message["raw"]
    state = SweepState.objects.get(pk=1)
    assert state.last_succeeded_at is not None and state.last_enqueued == 3
    # Nothing was refreshed by the sweep itself.
    assert fake.calls(REFRESH) == []


# --- 3. exactly once --------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_sweeps_and_a_worker_refresh_each_due_token_exactly_once(
    broker, fake, login_app, token_dir
):
    due = dict(make_account(fake, login_app, f"shop_{n}") for n in range(5))
    usernames = {account_id: f"shop_{n}" for n, account_id in enumerate(due)}
    fresh_id, fresh_value = make_account(fake, login_app, "fresh_shop", age=timedelta(days=2),
                                         expires_in=timedelta(days=58))

    run_in_threads(2, tasks.refresh_sweep)
    assert queued_refresh_ids(broker) == sorted(list(due) * 2)

    # Slow refreshes: the two messages of an account run side by side in the worker.
    fake.inject(REFRESH, *[delay(0.5)] * len(due))
    with in_process_worker(concurrency=4):
        wait_for(lambda: broker_idle(broker) and all(refreshed(a, v) for a, v in due.items()),
                 30, "all ten messages to be handled")
    calls = fake.calls(REFRESH)
    assert len(calls) == len(due)
    assert Counter(c.query["access_token"] for c in calls) == Counter(due.values())
    for account_id, old_value in due.items():
        token = Token.objects.get(account_id=account_id)
        assert token.value != old_value
        assert token.value == newest_fake_token(fake, usernames[account_id])
        assert file_of(token_dir, usernames[account_id]) == token.value
        assert refresh_events(account_id) == [Event.Outcome.OK]
    assert Token.objects.get(account_id=fresh_id).value == fresh_value


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_eight_simultaneous_refreshes_of_one_account_call_instagram_once(
    postgres, fake, login_app, token_dir
):
    account_id, old_value = make_account(fake, login_app, "busy_shop")
    fake.inject(REFRESH, delay(1))

    results = run_in_threads(8, lambda: services.token_refresh(
        account_id=account_id, actor=Actor(job="test"), now=timezone.now()
    ))

    outcomes = Counter(r.outcome for r in results)
    assert outcomes[Outcome.REFRESHED] == 1, outcomes
    assert set(outcomes) <= {Outcome.REFRESHED, Outcome.BUSY, Outcome.NOT_DUE}, outcomes
    assert len(fake.calls(REFRESH)) == 1
    token = Token.objects.get(account_id=account_id)
    assert token.value == newest_fake_token(fake, "busy_shop") != old_value
    assert file_of(token_dir, "busy_shop") == token.value
    assert refresh_events(account_id) == [Event.Outcome.OK]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_database_session_lost_after_instagram_answered_keeps_the_new_token(
    postgres, fake, login_app, token_dir
):
    """Found by bench/soak.py: a worker's PostgreSQL session ended (pg_terminate_backend)
    while its refresh call was out. Instagram answered with a new token, the store failed,
    and the account was refreshed a second time later. The worker now stores what
    Instagram gave on a new session: one refresh at Instagram, the new token kept."""
    account_id, old_value = make_account(fake, login_app, "session_shop")
    fake.inject(REFRESH, delay(1))
    backend: list[int] = []

    def refresh() -> object:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend.append(cursor.fetchone()[0])
        return services.token_refresh(account_id=account_id, actor=Actor(job="test"),
                                      now=timezone.now())

    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(call_bounded(refresh, 20)))
    thread.start()
    wait_for(lambda: fake.calls(REFRESH), 10, "the refresh call")
    with connection.cursor() as cursor:  # the session ends while Instagram "thinks"
        cursor.execute("SELECT pg_terminate_backend(%s)", backend)
        assert cursor.fetchone()[0] is True
    thread.join(30)

    [result] = outcome
    assert not isinstance(result, BaseException), repr(result)
    assert result.outcome == Outcome.REFRESHED
    token = Token.objects.get(account_id=account_id)
    assert token.value == newest_fake_token(fake, "session_shop") != old_value
    assert len(fake.calls(REFRESH)) == 1
    assert abs(token.expires_at - (timezone.now() + timedelta(days=60))) < timedelta(minutes=2)
    assert file_of(token_dir, "session_shop") == token.value
    assert refresh_events(account_id) == [Event.Outcome.OK]


# --- 4. a worker killed mid-refresh -----------------------------------------------------


def _worker_env(redis_url: str, fake: FakeInstagram, token_dir: Path, var_dir: Path) -> dict:
    db = connection.settings_dict
    credentials = quote(db["USER"] or "postgres")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"])
    env = dict(os.environ)  # keeps settings_test's fixed ENCRYPTION_KEYS and SECRET_KEY
    env.update({
        "DJANGO_SETTINGS_MODULE": "igregistry.settings_test",
        "PYTHONPATH": str(BASE_DIR),
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:"
                        f"{db['PORT'] or 5432}/{db['NAME']}",
        "CELERY_BROKER_URL": redis_url,
        "CELERY_VISIBILITY_TIMEOUT": "3",
        "REFRESH_RETRY_BASE_SECONDS": "1",
        "REFRESH_RETRY_MAX_SECONDS": "1",
        "INSTAGRAM_API_URL": fake.url,
        "INSTAGRAM_WWW_URL": fake.url,
        "INSTAGRAM_GRAPH_URL": fake.url,
        "TOKEN_EXPORT_DIR": str(token_dir),
        "VAR_DIR": str(var_dir),
    })
    return env


def _start_worker_process(env: dict, name: str, log: Path) -> subprocess.Popen:
    """`celery worker` as in production (prefork pool), one child. Not the solo pool: it
    runs tasks inside the event loop, which then sends even an early ack only after the
    task, so a killed solo worker would keep its message with or without acks_late."""
    celery = Path(sys.executable).with_name("celery")
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(celery), "-A", "igregistry", "worker", "--pool=prefork", "--concurrency=1",
             "--loglevel=INFO", "--without-mingle", "--without-gossip", "-n", f"{name}@%h"],
            cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )


def _children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        return "worker log:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-40:])
    return ""


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_worker_killed_mid_refresh_loses_nothing_and_the_redelivery_completes_it(
    broker, redis_url, fake, login_app, token_dir, tmp_path
):
    account_id, old_value = make_account(fake, login_app, "killed_shop")
    fake.inject(REFRESH, delay(30))  # the first worker dies while Instagram "thinks"
    tasks.refresh_account.delay(account_id)
    assert queued_refresh_ids(broker) == [account_id]
    env = _worker_env(redis_url, fake, token_dir, tmp_path / "var")

    first_log = tmp_path / "worker1.log"
    first = _start_worker_process(env, "first", first_log)
    try:
        wait_for(lambda: fake.calls(REFRESH) or first.poll() is not None, 30,
                 "the first worker's refresh call", lambda: _tail(first_log))
        assert first.poll() is None, _tail(first_log)
        kill_group(first)  # SIGKILL: no warm shutdown, no requeue by the worker itself
    finally:
        kill_group(first)
    [(_, delivered_at)] = broker.zrange("unacked_index", 0, -1, withscores=True)

    # Nothing changed, nothing flagged, and the message is still owed (delivered, unacked).
    token = Token.objects.get(account_id=account_id)
    assert token.value == old_value
    assert token.refresh_failures == 0 and token.next_attempt_at is None
    account = Account.objects.get(pk=account_id)
    assert account.status == Account.Status.ACTIVE and account.last_error == ""
    assert broker.llen(QUEUE) == 0 and broker.hlen("unacked") == 1
    assert not (token_dir / "killed_shop").exists()

    # kombu looks for abandoned messages when a worker starts, then only every ~100 s
    # (unacked_restore_interval 10 s x unacked_restore_throttle 10): start the next worker
    # once the visibility timeout (3 s here) has passed, as a restarted service would.
    wait_for(lambda: time.time() > delivered_at + 3.5, 10, "the visibility timeout to pass")
    second_log = tmp_path / "worker2.log"
    second = _start_worker_process(env, "second", second_log)
    try:
        wait_for(lambda: refreshed(account_id, old_value), 30,
                 "the redelivered refresh to complete", lambda: _tail(second_log))
        newest = newest_fake_token(fake, "killed_shop")
        wait_for(lambda: broker_idle(broker), 10, "the redelivered message to be acknowledged",
                 lambda: _tail(second_log))
    finally:
        kill_group(second, signal.SIGTERM)

    token = Token.objects.get(account_id=account_id)
    assert token.value == newest
    assert abs(token.expires_at - (timezone.now() + timedelta(days=60))) < timedelta(minutes=2)
    assert token.refresh_failures == 0
    assert Account.objects.get(pk=account_id).status == Account.Status.ACTIVE
    assert file_of(token_dir, "killed_shop") == newest
    assert [c.query["access_token"] for c in fake.calls(REFRESH)] == [old_value, old_value]
    assert refresh_events(account_id) == [Event.Outcome.OK]


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_pool_child_killed_mid_refresh_is_requeued_and_the_same_worker_completes_it(
    broker, redis_url, fake, login_app, token_dir, tmp_path
):
    """The OOM killer takes the pool process, not the worker: acks_late plus
    reject_on_worker_lost put the message back at once, and the refresh completes."""
    account_id, old_value = make_account(fake, login_app, "oom_shop")
    fake.inject(REFRESH, delay(30))
    tasks.refresh_account.delay(account_id)
    log = tmp_path / "worker.log"
    worker = _start_worker_process(
        _worker_env(redis_url, fake, token_dir, tmp_path / "var"), "oom", log
    )
    try:
        wait_for(lambda: fake.calls(REFRESH) or worker.poll() is not None, 30,
                 "the pool process's refresh call", lambda: _tail(log))
        [child] = _children(worker.pid)
        os.kill(child, signal.SIGKILL)
        wait_for(lambda: refreshed(account_id, old_value), 20,
                 "the requeued refresh to complete", lambda: _tail(log))
        newest = newest_fake_token(fake, "oom_shop")
        wait_for(lambda: broker_idle(broker), 10, "the message to be acknowledged",
                 lambda: _tail(log))
        assert worker.poll() is None, _tail(log)
    finally:
        kill_group(worker, signal.SIGTERM)

    token = Token.objects.get(account_id=account_id)
    assert token.value == newest and token.refresh_failures == 0
    assert Account.objects.get(pk=account_id).status == Account.Status.ACTIVE
    assert file_of(token_dir, "oom_shop") == newest
    assert [c.query["access_token"] for c in fake.calls(REFRESH)] == [old_value, old_value]
    assert refresh_events(account_id) == [Event.Outcome.OK]


# --- 5. Redis down ----------------------------------------------------------------------


@contextlib.contextmanager
def throwaway_redis(port: int, directory: Path) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--daemonize", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    client = redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=2)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return proc.poll() is not None

    try:
        wait_for(answers, 10, f"redis-server on port {port}")
        assert proc.poll() is None, f"redis-server on port {port} exited"
        yield proc
    finally:
        client.close()
        kill_group(proc, signal.SIGTERM)


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_sweep_with_redis_down_fails_loudly_and_the_next_run_catches_up(
    postgres, redis_url, fake, login_app, tmp_path, caplog
):
    require_service("redis-server", shutil.which("redis-server") is not None,
                    "install redis-server (a throwaway one is started on a free port)")
    due = sorted(make_account(fake, login_app, f"shop_{n}")[0] for n in range(2))
    make_account(fake, login_app, "fresh_shop", age=timedelta(days=2),
                 expires_in=timedelta(days=58))
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis(port=port, socket_timeout=5)
    with broker_at(url):
        with throwaway_redis(port, tmp_path):
            tasks.refresh_sweep()  # a first run leaves pooled connections to the broker
            assert queued_refresh_ids(client) == due
        before = SweepState.objects.get(pk=1).last_succeeded_at
        assert before is not None

        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="accounts.tasks"):
            started = time.monotonic()
            outcome = call_bounded(tasks.refresh_sweep, timeout=20)
            elapsed = time.monotonic() - started
        assert elapsed < 15, f"the sweep took {elapsed:.1f} s to give up"
        assert isinstance(outcome, OperationalError), outcome
        errors = [r for r in caplog.records
                  if r.name == "accounts.tasks" and r.levelno >= logging.ERROR]
        assert errors and "broker" in errors[0].getMessage()
        assert SweepState.objects.get(pk=1).last_succeeded_at == before

        with throwaway_redis(port, tmp_path):
            result = tasks.refresh_sweep()
            assert queued_refresh_ids(client) == due
        client.close()
    assert result["refresh"] == len(due)
    state = SweepState.objects.get(pk=1)
    assert state.last_succeeded_at > before and state.last_enqueued == len(due)
    assert fake.calls(REFRESH) == []


# --- 6. retries through the real worker -------------------------------------------------

_QUICK = {"estimated_time_to_regain_access": 0}  # a long regain time would defer the retry

RETRIED = [
    pytest.param(status(500), id="http-500"),
    pytest.param(rate_limited(http_status=429, code=4, usage=_QUICK), id="rate-limited-429"),
    pytest.param(rate_limited(http_status=400, code=4, usage=_QUICK), id="rate-limited-400"),
    pytest.param(delay(3), id="read-timeout"),
    pytest.param(garbage(), id="garbage"),
    pytest.param(disconnect(), id="disconnect"),
]


@pytest.fixture
def quick_retries(settings) -> None:
    settings.REFRESH_RETRY_BASE_SECONDS = 1
    settings.REFRESH_RETRY_MAX_SECONDS = 2
    settings.INSTAGRAM_READ_TIMEOUT = 1


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fault", RETRIED)
def test_temporary_failure_is_retried_by_the_worker_and_then_succeeds(
    fault, broker, fake, login_app, token_dir, quick_retries
):
    account_id, old_value = make_account(fake, login_app, "flaky_shop")
    fake.inject(REFRESH, fault)

    tasks.refresh_account.delay(account_id)
    with in_process_worker():
        wait_for(lambda: refreshed(account_id, old_value), 15, "the retried refresh")
        wait_for(lambda: broker_idle(broker), 10, "the retry message to be acknowledged")

    token = Token.objects.get(account_id=account_id)
    # Not necessarily the newest: a timed-out request may still be answered after the retry.
    info = fake.token_info(token.value)
    assert token.value != old_value and info is not None and info["username"] == "flaky_shop"
    assert abs(info["issued_at"] - timezone.now()) < timedelta(minutes=1)
    assert abs(token.expires_at - (timezone.now() + timedelta(days=60))) < timedelta(minutes=2)
    assert token.refresh_failures == 0 and token.next_attempt_at is None
    account = Account.objects.get(pk=account_id)
    assert account.status == Account.Status.ACTIVE and account.last_error == ""
    assert len(fake.calls(REFRESH)) == 2
    assert refresh_events(account_id) == [Event.Outcome.FAILED, Event.Outcome.OK]
    assert file_of(token_dir, "flaky_shop") == token.value


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_revoked_token_needs_reauth_after_one_call_and_is_not_retried(
    broker, fake, login_app, token_dir, quick_retries
):
    account_id, old_value = make_account(fake, login_app, "revoked_shop")
    fake.inject(REFRESH, graph_error(190, 460))

    tasks.refresh_account.delay(account_id)
    with in_process_worker():
        wait_for(lambda: Account.objects.get(pk=account_id).status
                 == Account.Status.NEEDS_REAUTH, 15, "the account to need re-authorization")
        wait_for(lambda: broker_idle(broker), 10, "the message to be acknowledged")
        time.sleep(2.5)  # longer than any retry countdown with these settings
        assert broker_idle(broker)
        assert len(fake.calls(REFRESH)) == 1

    token = Token.objects.get(account_id=account_id)
    assert token.value == old_value and token.next_attempt_at is None
    assert refresh_events(account_id) == [Event.Outcome.FAILED]
    assert not (token_dir / "revoked_shop").exists()


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_refreshes_queued_before_a_rate_limit_wait_out_the_pause_without_calling_instagram(
    broker, fake, login_app, token_dir, quick_retries
):
    """The first refresh fails for a moment (a retry is scheduled), the second is
    rate-limited (Instagram says: 5 minutes). The refreshes still on the queue and the
    first one's retry meet the pause: they do not call Instagram, count no failure, and
    wait for the first sweep after it."""
    ids = [make_account(fake, login_app, f"queued_shop_{i}")[0] for i in range(4)]
    fake.inject(REFRESH, status(503), rate_limited())

    assert tasks.refresh_sweep()["refresh"] == 4
    assert queued_refresh_ids(broker) == sorted(ids)
    with in_process_worker(concurrency=1):
        wait_for(lambda: broker_idle(broker), 20, "every queued refresh to be taken")
        time.sleep(2.5)  # longer than any retry countdown with these settings
        assert broker_idle(broker)

    assert len(fake.calls(REFRESH)) == 2
    pause_end = SweepState.objects.get(pk=1).throttled_until
    assert pause_end > timezone.now() + timedelta(minutes=4)
    tokens = Token.objects.filter(account_id__in=ids)
    assert sorted(t.refresh_failures for t in tokens) == [0, 0, 1, 1]
    assert all(t.next_attempt_at >= pause_end - timedelta(seconds=1) for t in tokens)
    assert all(t.refresh_queued_for is None for t in tokens)  # every task was attempted
    assert Event.objects.filter(action="refresh", outcome="failed").count() == 2
    # The sweep itself holds off until the pause ends.
    assert tasks.refresh_sweep()["refresh"] == 0
