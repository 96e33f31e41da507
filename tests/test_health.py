"""/healthz and /metrics."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from accounts.models import Account, Event, InstagramApp, SweepState, Token
from tests.conftest import require_service


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
        "ok": True, "queued": 0, "lag_seconds": 0, "max_lag_seconds": 30 * 60,
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
