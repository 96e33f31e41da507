"""/healthz and /metrics."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from accounts import tasks
from accounts.models import Account, Event, InstagramApp, SweepState, Token
from tests.conftest import require_service
from tests.test_refresh_celery import (
    BASE_DIR,
    broker_at,
    broker_idle,
    in_process_worker,
    make_account,
    purge,
    queued_refresh_ids,
    refreshed,
    wait_for,
)


@pytest.fixture
def swept(transactional_db):
    # Committed: the checks read through their own thread's database connection.
    SweepState.objects.create(pk=1, last_succeeded_at=timezone.now() - timedelta(minutes=5))


def test_healthy(client, swept):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "sweep", "refresh_queue"}
    assert body["checks"]["sweep"]["age_seconds"] >= 300
    assert body["checks"]["refresh_queue"] == {
        "ok": True, "queued": 0, "lag_seconds": 0, "max_lag_seconds": 30 * 60, "unattended": 0,
        "oldest_due_at": None,
    }


def test_stale_sweep(client, transactional_db, settings):
    assert client.get("/healthz").status_code == 503  # never swept
    settings.HEALTH_MAX_SWEEP_AGE_MINUTES = 30
    SweepState.objects.update_or_create(
        pk=1, defaults={"last_succeeded_at": timezone.now() - timedelta(minutes=31)})
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["sweep"]["ok"] is False
    assert response.json()["checks"]["database"]["ok"] is True
    SweepState.objects.filter(pk=1).update(last_succeeded_at=timezone.now())
    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_database_unreachable(client, tmp_path):
    SweepState.objects.create(pk=1, last_succeeded_at=timezone.now())
    settings_dict = connection.settings_dict
    saved_settings, saved_connection = dict(settings_dict), connection.connection
    # Set aside rather than closed: closing would destroy SQLite's in-memory test database.
    connection.connection = None
    if connection.vendor == "sqlite":
        # A file in a directory that does not exist cannot be opened.
        settings_dict["NAME"] = str(tmp_path / "missing" / "db.sqlite3")
    else:
        settings_dict["PORT"] = "1"
    try:
        response = client.get("/healthz")
    finally:
        settings_dict.clear()
        settings_dict.update(saved_settings)
        connection.connection = saved_connection
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == {"ok": False, "error": "OperationalError"}
    assert checks["sweep"]["ok"] is False
    assert checks["broker"]["ok"] is True
    assert client.get("/healthz").status_code == 200  # and back once it answers


def test_broker_unreachable(client, swept, settings):
    settings.CELERY_BROKER_URL = "redis://:not-shown@127.0.0.1:1/0"
    started = time.monotonic()
    response = client.get("/healthz")
    assert time.monotonic() - started < 10
    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["ok"] is False
    assert "not-shown" not in response.content.decode()


def test_broker_on_redis(client, swept, settings):
    url = os.environ.get("REDIS_URL", "")
    require_service("Redis", bool(url), "run with REDIS_URL=redis://127.0.0.1:6379/15")
    settings.CELERY_BROKER_URL = url
    assert client.get("/healthz").json()["checks"]["broker"]["ok"] is True


def test_liveness(client):
    assert client.get("/healthz/live").content == b"ok"


def metrics(text: str) -> dict:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_parse_and_report_the_registry(client, db):
    now = timezone.now()
    app = InstagramApp.objects.create(name="A", flavour="instagram_login", app_id="1",
                                      app_secret="s" * 20, redirect_uri="https://e.com/cb/")
    for label, days in (("Soon", 3), ("Later", 59)):
        account = Account.objects.create(app=app, label=label, status="active")
        Token.objects.create(account=account, value="IGAA" + label, kind="long",
                             obtained_at=now, expires_at=now + timedelta(days=days))
    Account.objects.create(app=app, label="New")
    for outcome in ("ok", "ok", "failed"):
        Event.objects.create(created_at=now, action="refresh", outcome=outcome)
    SweepState.objects.create(pk=1, last_succeeded_at=now)

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    values = metrics(response.content.decode())
    assert values[("igregistry_accounts", (("state", "expiring"),))] == 1
    assert values[("igregistry_accounts", (("state", "healthy"),))] == 1
    assert values[("igregistry_accounts", (("state", "pending"),))] == 1
    assert values[("igregistry_accounts", (("state", "needs_reauth"),))] == 0
    earliest = values[("igregistry_earliest_expiry_seconds", ())]
    assert 3 * 86400 - 120 < earliest <= 3 * 86400
    assert values[("igregistry_refreshes_total", (("outcome", "ok"),))] == 2
    assert values[("igregistry_refreshes_total", (("outcome", "failed"),))] == 1
    assert values[("igregistry_last_sweep_success_timestamp_seconds", ())] == pytest.approx(
        now.timestamp())
    assert "IGAA" not in response.content.decode()


def test_metrics_only_from_allowed_addresses(client, db, settings):
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403
    settings.METRICS_ALLOWED_IPS = ["10.1.2.3"]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200


def test_metrics_bearer_token(client, db, settings):
    settings.METRICS_TOKEN = "scrape-secret-123"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    ok = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret-123",
                    REMOTE_ADDR="203.0.113.9")
    assert ok.status_code == 200


# --- worker liveness through a real broker and worker -----------------------------------


@pytest.fixture
def redis_broker(postgres, redis_url, settings) -> Iterator[redis.Redis]:
    """The Celery app publishing to REDIS_URL and the health checks reading it, with an
    empty queue before and after; yields a client of that Redis database."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    purge(client)
    settings.CELERY_BROKER_URL = redis_url  # what the broker check and the depth gauge use
    with broker_at(redis_url):
        yield client
    purge(client)
    client.close()


def queue_metrics(client) -> dict:
    values = metrics(client.get("/metrics").content.decode())
    return {
        "lag": values[("igregistry_refresh_queue_lag_seconds", ())],
        "queued": values[("igregistry_refreshes_queued", ())],
        "depth": values.get(("igregistry_broker_queue_depth", (("queue", "celery"),))),
    }


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_refreshes_no_worker_takes_fail_refresh_queue_until_a_worker_takes_them(
    redis_broker, fake, login_app, client
):
    due = {}
    for n in range(2):
        account_id, value = make_account(fake, login_app, f"shop_{n}")
        due[account_id] = value
    tasks.refresh_sweep()
    swept_at = timezone.now()
    assert queued_refresh_ids(redis_broker) == sorted(due)

    # Just queued: nobody is late yet.
    response = client.get("/healthz")
    assert response.status_code == 200, response.json()
    checks = response.json()["checks"]
    assert checks["refresh_queue"]["ok"] is True and checks["refresh_queue"]["queued"] == 2
    assert checks["broker"]["queue_depth"] == 1  # one message: the chunk of both

    # No worker: still inside the 30-minute bound, then past it.
    with time_machine.travel(swept_at + timedelta(minutes=29), tick=False):
        assert client.get("/healthz").status_code == 200
    with time_machine.travel(swept_at + timedelta(minutes=31), tick=False):
        response = client.get("/healthz")
        seen = queue_metrics(client)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert [name for name, check in body["checks"].items() if not check["ok"]] == [
        "refresh_queue"]
    queue = body["checks"]["refresh_queue"]
    assert queue["queued"] == 2 and queue["max_lag_seconds"] == 30 * 60
    assert 31 * 60 - 5 <= queue["lag_seconds"] <= 31 * 60 + 5
    assert body["checks"]["broker"]["queue_depth"] == 1
    assert seen["queued"] == 2 and seen["depth"] == 1
    assert seen["lag"] == pytest.approx(31 * 60, abs=5)
    assert "redis://" not in response.content.decode()

    # A worker takes them: healthy again, nothing waits.
    with in_process_worker():
        wait_for(lambda: broker_idle(redis_broker)
                 and all(refreshed(a, v) for a, v in due.items()), 20, "both refreshes")
    response = client.get("/healthz")
    assert response.status_code == 200, response.json()
    checks = response.json()["checks"]
    assert checks["refresh_queue"]["queued"] == 0 and checks["refresh_queue"]["lag_seconds"] == 0
    assert checks["broker"]["queue_depth"] == 0
    assert queue_metrics(client) == {"lag": 0, "queued": 0, "depth": 0}
    assert Token.objects.filter(refresh_queued_for__isnull=False).count() == 0


def test_queue_depth_is_absent_when_the_broker_is_down(client, db, settings):
    settings.CELERY_BROKER_URL = "redis://:not-shown@127.0.0.1:1/0"
    response = client.get("/metrics")
    assert response.status_code == 200
    seen = queue_metrics(client)
    assert seen["depth"] is None and seen["queued"] == 0 and seen["lag"] == 0
    assert "not-shown" not in response.content.decode()


# --- a server that accepts and never answers -------------------------------------------


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never sends a byte; yields
    its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for sock in held:
            sock.close()
        server.close()


# Runs in a fresh process: GET /healthz, then wait for the checks' threads to finish.
_PROBE = """
import json, threading, time
import django
django.setup()
from django.test import Client
started = time.monotonic()
response = Client().get("/healthz")
answered = time.monotonic() - started
for thread in threading.enumerate():
    if thread.name == "health-check":
        thread.join(30)
print(json.dumps({"status": response.status_code, "seconds": answered,
                  "threads_done": time.monotonic() - started,
                  "body": response.content.decode()}))
"""


def probe_healthz(tmp_path: Path, **environment: str) -> dict:
    env = {key: value for key, value in os.environ.items()
           if key not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env |= {"DJANGO_SETTINGS_MODULE": "igregistry.settings_test", "PYTHONPATH": str(BASE_DIR),
            "VAR_DIR": str(tmp_path), "ALLOWED_HOSTS": "testserver", **environment}
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_database_that_never_answers_gives_a_quick_503(tmp_path):
    with black_hole() as port:
        seen = probe_healthz(tmp_path, DATABASE_URL=f"postgres://x:not-shown@127.0.0.1:{port}/x")
    assert seen["status"] == 503
    # HEALTH_CHECK_TIMEOUT_SECONDS (3) and a little: not the 10 s and more it used to take.
    assert seen["seconds"] < 4.5, seen
    # The stuck check gives up by itself too (DATABASE_CONNECT_TIMEOUT, 5 s).
    assert seen["threads_done"] < 7, seen
    checks = json.loads(seen["body"])["checks"]
    assert checks["database"] == {"ok": False, "error": "timeout"}
    assert checks["sweep"]["error"] == checks["refresh_queue"]["error"] == "database unreachable"
    assert checks["broker"]["ok"] is True
    assert str(port) not in seen["body"] and "not-shown" not in seen["body"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_broker_that_never_answers_gives_a_quick_503(tmp_path):
    SweepState.objects.create(pk=1, last_succeeded_at=timezone.now())
    with black_hole() as port:
        seen = probe_healthz(tmp_path, DATABASE_URL=database_url(),
                             CELERY_BROKER_URL=f"redis://:not-shown@127.0.0.1:{port}/0")
    assert seen["status"] == 503
    assert seen["seconds"] < 4.5, seen
    assert seen["threads_done"] < 7, seen  # its socket timeouts end the stuck check
    checks = json.loads(seen["body"])["checks"]
    assert [name for name, check in checks.items() if not check["ok"]] == ["broker"]
    assert checks["broker"]["error"] in {"timeout", "OperationalError"}
    assert str(port) not in seen["body"] and "not-shown" not in seen["body"]


def database_url() -> str:
    """The test database as a DATABASE_URL, for a child process."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "postgres")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"])
    return (f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/"
            f"{db['NAME']}")


# --- manage.py healthcheck --------------------------------------------------------------


def test_healthcheck_command_exits_0_when_healthy(swept):
    out = io.StringIO()
    call_command("healthcheck", stdout=out)
    report = json.loads(out.getvalue())
    assert report["status"] == "ok"
    assert set(report["checks"]) == {"database", "broker", "sweep", "refresh_queue"}
    quiet = io.StringIO()
    call_command("healthcheck", "--quiet", stdout=quiet)
    assert quiet.getvalue() == ""


def test_healthcheck_command_exits_1_when_unhealthy(transactional_db, tmp_path):
    out = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("healthcheck", "--quiet", stdout=out)  # never swept
    assert raised.value.returncode == 1
    assert "sweep" in str(raised.value)
    assert json.loads(out.getvalue())["checks"]["sweep"]["ok"] is False

    # As cron runs it: a real process and its exit status.
    env = {key: value for key, value in os.environ.items() if key != "CELERY_BROKER_URL"}
    env |= {"DJANGO_SETTINGS_MODULE": "igregistry.settings_test", "VAR_DIR": str(tmp_path),
            "DATABASE_URL": "postgres://x:not-shown@127.0.0.1:1/x"}
    done = subprocess.run([sys.executable, "manage.py", "healthcheck"], cwd=BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "fail"
    assert report["checks"]["database"] == {"ok": False, "error": "OperationalError"}
    assert "unhealthy: database, sweep, refresh_queue" in done.stderr
    assert "not-shown" not in done.stdout + done.stderr
