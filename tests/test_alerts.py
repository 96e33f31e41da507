"""Alerts: once per change of state, a daily reminder while it lasts, a "resolved" notice,
all items of a run in one e-mail and one signed webhook call (to a real HTTP server)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import smtplib
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.fernet import Fernet
from django.conf import settings as django_settings
from django.core.mail.backends.base import BaseEmailBackend
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from accounts import selectors, services, tasks
from accounts.health import RegistryCollector
from accounts.models import (
    Account,
    AlertDelivery,
    AlertState,
    Event,
    InstagramApp,
    SweepState,
    Token,
)
from accounts.selectors import State
from accounts.services import alert_outbox, webhook_signature
from tests.test_refresh_celery import run_in_threads

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
APP_SECRET = "app-secret-0f1e2d3c4b5a69788796"
WEBHOOK_SECRET = "webhook-secret-7a6b5c4d3e2f1a0b"
# Chat webhooks carry their key in the path: it must not show up in events or logs.
WEBHOOK_PATH = "/hooks/T0001/B0002/pathkey-5c4d3e2f"
RECIPIENTS = ["ops@example.com", "oncall@example.com"]
REPO_ROOT = django_settings.BASE_DIR
SITE_URL = "https://registry.example.org/igregistry"


# --- a real webhook receiver ------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: Message
    body: bytes


class WebhookServer:
    """A tiny HTTP server in a thread that records each POST's headers and raw body and
    answers `status` (or, while `script` holds any, the next status from it), after
    sleeping `delay` seconds."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status = 204
        self.script: list[int] = []
        self.delay = 0.0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.received.append(Received(self.path, self.headers, body))
                status = hook.script.pop(0) if hook.script else hook.status
                if hook.delay:
                    time.sleep(hook.delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the client gave up waiting: that is the point of `delay`

            def log_message(self, format, *args) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{WEBHOOK_PATH}"
        # A short poll keeps shutdown() quick: it waits for the loop's next turn.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    def __enter__(self) -> WebhookServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def payload(self, index: int = -1) -> dict:
        return json.loads(self.received[index].body)


@pytest.fixture
def hook():
    with WebhookServer() as server:
        yield server


@pytest.fixture
def channels(db, settings, hook, mailoutbox):
    """Both channels on, and the alert thresholds pinned (whatever the environment says).

    `db` comes first on purpose: Django's test case set-up replaces `mail.outbox`, so a
    `mailoutbox` taken before it would be a list nobody writes to."""
    settings.ALERT_EMAILS = RECIPIENTS
    settings.ALERT_WEBHOOK_URL = hook.url
    settings.ALERT_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.ALERT_EXPIRY_DAYS = 7
    settings.ALERT_FAILURES_THRESHOLD = 3
    settings.ALERT_REMINDER_HOURS = 24
    settings.REFRESH_THRESHOLD_DAYS = 50
    settings.REFRESH_QUEUE_MAX_LAG_MINUTES = 30
    # These accounts were made due without any sweep: the check for due tokens no sweep
    # queued would call that stalled. Tests of it set a sweep interval of their own.
    settings.REFRESH_SWEEP_MINUTES = 10**7
    settings.SITE_URL = SITE_URL
    settings.ALERT_RETRY_BASE_SECONDS = 60
    settings.ALERT_RETRY_MAX_SECONDS = 3600
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 10
    return hook


# --- accounts ---------------------------------------------------------------------------


@pytest.fixture
def app(db) -> InstagramApp:
    return InstagramApp.objects.create(
        name="Shop app", app_id="1000000000000009", app_secret=APP_SECRET,
        redirect_uri="https://example.com/oauth/callback/",
    )


def token_value(account: Account) -> str:
    return f"IGAA{account.pk:04d}secret-token-value-zyxw"


def make_account(app: InstagramApp, label: str, *, left: timedelta | None = 55 * DAY,
                 status: str = Account.Status.ACTIVE, failures: int = 0,
                 last_error: str = "", now: datetime = NOW) -> Account:
    """An account whose long-lived token expires `left` after `now` (None: no token yet)."""
    account = Account.objects.create(app=app, label=label)
    Account.objects.filter(pk=account.pk).update(
        status=status if left is not None else Account.Status.PENDING,
        username=label.lower().replace(" ", "_"),
        ig_id=str(17841400000000000 + account.pk),
        last_error=last_error,
    )
    if left is not None:
        Token.objects.create(account=account, value=token_value(account), kind=Token.Kind.LONG,
                             obtained_at=now - 5 * DAY, expires_at=now + left,
                             refresh_failures=failures)
    account.refresh_from_db()
    return account


# Each way an account turns bad, and the state staff are told about.
SITUATIONS = {
    "needs_reauth": ({"status": Account.Status.NEEDS_REAUTH}, State.NEEDS_REAUTH),
    # Meta's deauthorize callback (tests/test_meta_callbacks.py: the token is deleted too).
    "deauthorized": ({"status": Account.Status.DEAUTHORIZED}, State.DEAUTHORIZED),
    "expired": ({"left": -HOUR}, State.EXPIRED),
    "failing_refreshes": ({"failures": 3}, State.ERROR),
    "status_error": ({"status": Account.Status.ERROR}, State.ERROR),
    "expiring": ({"left": 3 * DAY}, State.EXPIRING),
}


def run(now: datetime = NOW) -> services.AlertReport:
    return services.alerts_dispatch(now=now)


def alert_state(account: Account) -> AlertState:
    return AlertState.objects.get(account=account)


# --- once per change --------------------------------------------------------------------


@pytest.mark.parametrize("situation", SITUATIONS)
def test_each_alerting_situation_is_announced_once(channels, mailoutbox, app, situation):
    kwargs, state = SITUATIONS[situation]
    make_account(app, "Healthy shop")
    bad = make_account(app, "Bad shop", **kwargs)

    report = run()

    assert (report.alerts, report.reminders, report.resolved) == (1, 0, 0)
    assert [(item.account_id, item.state) for item in report.items] == [(bad.pk, state)]
    assert len(mailoutbox) == 1
    assert "Bad shop" in mailoutbox[0].body and State.LABELS[state] in mailoutbox[0].body
    assert "Healthy shop" not in mailoutbox[0].body
    assert len(channels.received) == 1
    assert [(i["account_id"], i["kind"], i["state"]) for i in channels.payload()["items"]] == [
        (bad.pk, "alert", state)
    ]
    assert alert_state(bad).state == state and alert_state(bad).last_sent_at == NOW

    # Right after (the next beat tick): nothing new to say, so nothing is sent.
    again = run(NOW + 10 * timedelta(minutes=1))
    assert (again.alerts, again.reminders, again.resolved, again.items) == (0, 0, 0, [])
    assert len(mailoutbox) == 1
    assert len(channels.received) == 1


def test_healthy_pending_and_refresh_due_never_alert(channels, mailoutbox, app):
    healthy = make_account(app, "Healthy", left=55 * DAY)
    pending = make_account(app, "Pending", left=None)
    due = make_account(app, "Due", left=30 * DAY)

    for when in (NOW, NOW + HOUR, NOW + 25 * HOUR):
        report = run(when)
        assert report.items == []

    assert mailoutbox == [] and channels.received == []
    assert not Event.objects.filter(action="alert").exists()
    # Recorded silently, so a later problem is compared with the right state.
    assert {a.account_id: (a.state, a.last_sent_at) for a in AlertState.objects.all()} == {
        healthy.pk: (State.HEALTHY, None),
        pending.pk: (State.PENDING, None),
        due.pk: (State.REFRESH_DUE, None),
    }

    # A move between harmless states is recorded without a word.
    Token.objects.filter(account=healthy).update(expires_at=NOW + 20 * DAY)
    assert run(NOW + 26 * HOUR).items == []
    assert mailoutbox == [] and channels.received == []
    assert (alert_state(healthy).state, alert_state(healthy).changed_at) == (
        State.REFRESH_DUE, NOW + 26 * HOUR)


# --- one message per run ----------------------------------------------------------------


def test_many_accounts_turning_bad_make_one_email_and_one_webhook_call(
    channels, mailoutbox, app
):
    bad = [make_account(app, f"Shop {n}", **SITUATIONS[name][0])
           for n, name in enumerate(SITUATIONS, start=1)]

    report = run()

    assert report.alerts == len(SITUATIONS) == 6
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == RECIPIENTS
    assert mail.subject == "[igregistry] 6 accounts need attention"
    for account in bad:
        state = alert_state(account).state
        assert f"* {account.label} — app Shop app, @{account.username}" in mail.body
        assert reverse("admin:accounts_account_change", args=[account.pk]) in mail.body
        assert State.LABELS[state] in mail.body
    assert "Token expires: 2025-03-04 12:00 UTC" in mail.body  # the expiring one
    assert len(channels.received) == 1
    assert sorted(i["account_id"] for i in channels.payload()["items"]) == sorted(
        a.pk for a in bad)


def test_a_single_account_gets_a_singular_subject(channels, mailoutbox, app):
    make_account(app, "Lonely", status=Account.Status.NEEDS_REAUTH)
    run()
    assert mailoutbox[0].subject == "[igregistry] 1 account needs attention"


def test_webhook_body_is_signed_over_its_exact_bytes(channels, app):
    account = make_account(app, "Signed shop", left=2 * DAY, failures=1,
                           last_error="Temporary failure, attempt 1: HTTP 503.")

    run()

    (request,) = channels.received
    assert request.path == WEBHOOK_PATH
    assert request.headers["Content-Type"] == "application/json"
    signature = request.headers["X-Igregistry-Signature"]
    expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), request.body,
                                    hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, expected)
    assert hmac.compare_digest(signature,
                               webhook_signature(body=request.body, secret=WEBHOOK_SECRET))
    assert not hmac.compare_digest(signature,
                                   webhook_signature(body=request.body, secret="other"))
    # The same document serialised differently is other bytes: receivers must verify the
    # raw body, and so must we have signed exactly what we sent.
    reserialised = json.dumps(json.loads(request.body), indent=2).encode()
    assert not hmac.compare_digest(signature,
                                   webhook_signature(body=reserialised, secret=WEBHOOK_SECRET))

    assert json.loads(request.body) == {
        "sent_at": NOW.isoformat(),
        "items": [{
            "kind": "alert",
            "account_id": account.pk,
            "label": "Signed shop",
            "app": "Shop app",
            "username": "signed_shop",
            "state": State.EXPIRING,
            "previous_state": None,
            "expires_at": (NOW + 2 * DAY).isoformat(),
            "last_error": "Temporary failure, attempt 1: HTTP 503.",
            "message": "",
            "admin_url": SITE_URL + reverse("admin:accounts_account_change", args=[account.pk]),
        }],
    }


# --- reminders and recovery -------------------------------------------------------------


def test_daily_reminder_while_a_problem_lasts(channels, mailoutbox, app):
    expiring = make_account(app, "Expiring", left=3 * DAY)
    reauth = make_account(app, "Reauth", status=Account.Status.NEEDS_REAUTH)
    broken = make_account(app, "Broken", status=Account.Status.ERROR)
    assert run().alerts == 3

    # An hour later the problems last, but staff heard about them an hour ago.
    assert run(NOW + HOUR).items == []
    assert len(mailoutbox) == 1 and len(channels.received) == 1

    # One of them got fixed in the meantime: it is resolved, not reminded of.
    Account.objects.filter(pk=broken.pk).update(status=Account.Status.ACTIVE)
    later = NOW + 25 * HOUR  # ALERT_REMINDER_HOURS + 1 h
    report = run(later)
    assert (report.alerts, report.reminders, report.resolved) == (0, 2, 1)
    assert {(i.account_id, i.kind) for i in report.items} == {
        (expiring.pk, "reminder"), (reauth.pk, "reminder"), (broken.pk, "resolved")}
    assert len(mailoutbox) == 2
    assert mailoutbox[1].subject == (
        "[igregistry] 2 accounts need attention, 1 account recovered")
    assert "Still unresolved (reminder) (2):" in mailoutbox[1].body
    assert [i["kind"] for i in channels.payload()["items"]].count("reminder") == 2
    assert alert_state(expiring).last_sent_at == later
    assert alert_state(expiring).changed_at == NOW  # a reminder is not a change

    assert run(later + HOUR).items == []
    assert len(mailoutbox) == 2 and len(channels.received) == 2
    # And the next day again.
    assert run(later + 25 * HOUR).reminders == 2


def test_recovery_is_announced_once(channels, mailoutbox, app):
    account = make_account(app, "Recovering", left=3 * DAY)
    run()

    # The refresh succeeded: sixty fresh days.
    Token.objects.filter(account=account).update(expires_at=NOW + 60 * DAY)
    report = run(NOW + HOUR)

    assert (report.alerts, report.reminders, report.resolved) == (0, 0, 1)
    (item,) = channels.payload()["items"]
    assert (item["kind"], item["state"], item["previous_state"]) == (
        "resolved", State.HEALTHY, State.EXPIRING)
    assert mailoutbox[-1].subject == "[igregistry] 1 account recovered"
    assert "Resolved (1):" in mailoutbox[-1].body
    assert "was: Expiring soon" in mailoutbox[-1].body

    for when in (NOW + 2 * HOUR, NOW + 30 * HOUR):
        assert run(when).items == []
    assert len(mailoutbox) == 2 and len(channels.received) == 2


def test_a_change_between_alerting_states_is_a_new_alert(channels, mailoutbox, app):
    account = make_account(app, "Shop", left=3 * DAY)
    run()

    Account.objects.filter(pk=account.pk).update(status=Account.Status.NEEDS_REAUTH)
    report = run(NOW + HOUR)

    assert (report.alerts, report.reminders) == (1, 0)
    (item,) = channels.payload()["items"]
    assert (item["kind"], item["state"], item["previous_state"]) == (
        "alert", State.NEEDS_REAUTH, State.EXPIRING)
    assert "Needs re-authorization (was: Expiring soon)" in mailoutbox[-1].body
    assert (alert_state(account).changed_at, alert_state(account).last_sent_at) == (
        NOW + HOUR, NOW + HOUR)
    assert run(NOW + 2 * HOUR).items == []


def test_an_expired_token_filed_as_needs_reauth_is_not_news_again(channels, mailoutbox, app):
    account = make_account(app, "Shop", left=-HOUR)
    assert run().alerts == 1
    # The sweep then moves the expired token's account to "needs re-authorization".
    Account.objects.filter(pk=account.pk).update(status=Account.Status.NEEDS_REAUTH)
    assert run(NOW + HOUR).items == []
    assert len(mailoutbox) == 1
    assert alert_state(account).state == State.NEEDS_REAUTH
    # The daily reminder still comes.
    assert run(NOW + 25 * HOUR).reminders == 1


# --- absolute links ---------------------------------------------------------------------


def test_email_and_webhook_link_to_the_admin_under_site_url(channels, mailoutbox, app, settings):
    settings.SITE_URL = "https://alerts.example.net:8443/registry"
    account = make_account(app, "Shop", status=Account.Status.NEEDS_REAUTH)

    run()

    url = f"https://alerts.example.net:8443/registry/admin/accounts/account/{account.pk}/change/"
    assert f"  Admin: {url}\n" in mailoutbox[0].body
    (item,) = channels.payload()["items"]
    assert item["admin_url"] == url


def _settings_in_production(tmp_path, site_url: str | None) -> subprocess.CompletedProcess:
    """Load the real settings with DEBUG off in a fresh interpreter; print SITE_URL."""
    if (REPO_ROOT / ".env").exists():
        pytest.skip(f"{REPO_ROOT / '.env'} would feed the settings")
    env = {k: v for k, v in os.environ.items() if k not in {"SITE_URL", "DJANGO_SETTINGS_MODULE"}}
    env |= {"DEBUG": "false", "VAR_DIR": str(tmp_path / "var"),
            "SECRET_KEY": "production-secret-key-for-test",
            "ENCRYPTION_KEYS": Fernet.generate_key().decode()}
    if site_url is not None:
        env["SITE_URL"] = site_url
    code = ("import os, django; os.environ['DJANGO_SETTINGS_MODULE'] = 'igregistry.settings'; "
            "django.setup(); from django.conf import settings; print(settings.SITE_URL)")
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("site_url", "error"), [
    (None, "SITE_URL must be set when DEBUG is off"),
    ("registry.example.com", "SITE_URL must be an absolute http(s) URL"),
    ("ftp://registry.example.com", "SITE_URL must be an absolute http(s) URL"),
    ("https://admin:hunter2@registry.example.com", "SITE_URL must be an absolute http(s) URL"),
])
def test_production_refuses_a_missing_or_unusable_site_url(tmp_path, site_url, error):
    result = _settings_in_production(tmp_path, site_url)
    assert result.returncode != 0
    assert error in result.stderr
    assert "hunter2" not in result.stderr


def test_production_takes_site_url_without_its_trailing_slash(tmp_path):
    result = _settings_in_production(tmp_path, "https://registry.example.com/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "https://registry.example.com"


# --- delivery failures: the outbox ------------------------------------------------------


def delivery(channel: str) -> AlertDelivery:
    """The newest delivery of `channel`."""
    return AlertDelivery.objects.filter(channel=channel).latest("created_at", "id")


SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)


@pytest.mark.parametrize("failure", ["http_500", "timeout"])
def test_a_failed_webhook_is_retried_after_its_back_off_with_the_same_signed_bytes(
    channels, mailoutbox, app, caplog, monkeypatch, failure
):
    caplog.set_level("INFO")
    if failure == "http_500":
        channels.status = 500
    else:
        monkeypatch.setattr(alert_outbox, "WEBHOOK_TIMEOUT_SECONDS", 0.3)
        channels.delay = 1.0
    account = make_account(app, "Shop", status=Account.Status.NEEDS_REAUTH)

    report = run()

    assert report.alerts == 1
    assert (report.queued, report.delivered, report.failed) == (
        ["email", "webhook"], ["email"], ["webhook"])
    assert len(channels.received) == 1  # it was tried
    # One failure is not yet a human's business (a warning); giving up is (see below).
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r for r in caplog.records
            if r.levelname == "WARNING" and "Could not send by webhook" in r.getMessage()]
    reason = "HTTP 500" if failure == "http_500" else "no answer within 0.3 s"
    failed = Event.objects.get(action="alert", outcome=Event.Outcome.FAILED)
    assert failed.account is None and reason in failed.message
    row = delivery("webhook")
    assert (row.attempts, row.last_error, row.delivered_at) == (1, reason, None)
    # Between half and all of ALERT_RETRY_BASE_SECONDS (jitter).
    assert NOW + 30 * SECOND <= row.next_attempt_at <= NOW + 60 * SECOND
    # The e-mail went out regardless, once.
    assert len(mailoutbox) == 1 and delivery("email").delivered_at == NOW
    # The state was recorded as announced: the retry is not a new alert.
    assert (alert_state(account).state, alert_state(account).last_sent_at) == (
        State.NEEDS_REAUTH, NOW)

    channels.status, channels.delay = 204, 0.0
    retry_at = row.next_attempt_at
    early = run(retry_at - SECOND)
    assert (early.items, early.delivered, early.failed) == ([], [], [])
    assert len(channels.received) == 1
    due = run(retry_at)
    assert (due.items, due.delivered) == ([], ["webhook"])
    assert len(channels.received) == 2 and len(mailoutbox) == 1
    first, second = channels.received
    # Exactly the stored bytes, both times, signed as they are.
    assert first.body == second.body == delivery("webhook").body.encode()
    assert (second.headers["X-Igregistry-Signature"] == first.headers["X-Igregistry-Signature"]
            == webhook_signature(body=first.body, secret=WEBHOOK_SECRET))
    row.refresh_from_db()
    assert (row.attempts, row.delivered_at) == (2, retry_at)
    assert run(retry_at + HOUR).delivered == []
    assert len(channels.received) == 2

    # A chat webhook's key is in its path: never in an event, a log line or the row.
    texts = list(Event.objects.values_list("message", flat=True)) + [caplog.text]
    texts += list(AlertDelivery.objects.values_list("last_error", flat=True))
    for text in texts:
        assert WEBHOOK_PATH not in text and "pathkey" not in text


def test_a_webhook_failing_twice_is_delivered_by_the_third_run_not_before_its_back_off(
    channels, mailoutbox, app
):
    channels.script = [500, 503]  # then 204
    make_account(app, "Shop", left=-HOUR)

    assert run().failed == ["webhook"]
    first_wait = delivery("webhook").next_attempt_at
    assert NOW + 30 * SECOND <= first_wait <= NOW + 60 * SECOND
    # Runs (every ALERT_MINUTES) before the back-off is over leave it alone.
    for when in (NOW + 10 * SECOND, first_wait - SECOND):
        assert run(when).failed == []
    assert len(channels.received) == 1

    assert run(first_wait).failed == ["webhook"]
    row = delivery("webhook")
    assert (row.attempts, row.last_error, row.delivered_at) == (2, "HTTP 503", None)
    # Doubled: between 60 and 120 seconds after the second attempt.
    second_wait = row.next_attempt_at
    assert first_wait + 60 * SECOND <= second_wait <= first_wait + 120 * SECOND
    assert run(second_wait - SECOND).delivered == []
    assert len(channels.received) == 2

    report = run(second_wait)

    assert (report.items, report.delivered, report.failed) == ([], ["webhook"], [])
    assert len(channels.received) == 3
    assert len({request.body for request in channels.received}) == 1
    row.refresh_from_db()
    assert (row.attempts, row.delivered_at, row.abandoned_at) == (3, second_wait, None)
    messages = list(Event.objects.filter(action="alert", message__contains="webhook")
                    .order_by("id").values_list("outcome", "message"))
    assert [outcome for outcome, _ in messages] == ["failed", "failed", "ok"]
    assert "attempt 3 of 10" in messages[-1][1]
    assert len(mailoutbox) == 1  # the e-mail went out at once, and only once


def test_a_dead_webhook_costs_one_attempt_per_run_and_keeps_its_messages_in_order(
    channels, mailoutbox, app
):
    channels.status = 500
    make_account(app, "First", left=-HOUR)
    run()
    make_account(app, "Second", status=Account.Status.NEEDS_REAUTH)

    for hours, attempts in ((1, [2, 0]), (2, [3, 0])):
        report = run(NOW + hours * HOUR)
        # The oldest is tried again; once it fails the newer one waits for the next run.
        assert report.failed == ["webhook"]
        assert list(AlertDelivery.objects.filter(channel="webhook").order_by("id")
                    .values_list("attempts", flat=True)) == attempts
    assert len(channels.received) == 3

    channels.status = 204
    assert run(NOW + 3 * HOUR).delivered == ["webhook", "webhook"]
    first, second = (json.loads(request.body) for request in channels.received[-2:])
    assert (first["sent_at"], second["sent_at"]) == (NOW.isoformat(), (NOW + HOUR).isoformat())
    assert len(mailoutbox) == 2


class BrokenMailBackend(BaseEmailBackend):
    """An SMTP server that hangs up on every message; its error text quotes a secret it
    should not. Counts the attempts."""

    calls = 0

    def send_messages(self, email_messages) -> int:  # noqa: ANN001
        type(self).calls += 1
        raise smtplib.SMTPServerDisconnected(f"closed after AUTH PLAIN {WEBHOOK_SECRET}")


def test_a_failing_mail_server_is_retried_then_abandoned(
    channels, settings, mailoutbox, app, caplog, monkeypatch
):
    caplog.set_level("INFO")
    settings.EMAIL_BACKEND = f"{__name__}.BrokenMailBackend"
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 3
    monkeypatch.setattr(BrokenMailBackend, "calls", 0)
    account = make_account(app, "Shop", left=-HOUR)

    report = run()
    assert (report.delivered, report.failed) == (["webhook"], ["email"])
    for attempt in (2, 3):
        row = delivery("email")
        assert (row.attempts, row.abandoned_at) == (attempt - 1, None)
        assert run(row.next_attempt_at - SECOND).failed == []  # not before its time
        last = row.next_attempt_at
        report = run(last)

    assert (report.failed, report.abandoned) == ([], ["email"])
    row = delivery("email")
    assert (row.attempts, row.abandoned_at, row.delivered_at, row.last_error) == (
        3, last, None, "SMTPServerDisconnected")
    assert BrokenMailBackend.calls == 3
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "Gave up sending by email" in errors[0]
    failed = list(Event.objects.filter(action="alert", outcome=Event.Outcome.FAILED)
                  .order_by("id").values_list("message", flat=True))
    assert len(failed) == 3 and failed[-1].startswith("Gave up sending by email")
    assert all("SMTPServerDisconnected" in message for message in failed)

    # Abandoned is final: even with the mail server back, later runs leave it alone.
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert run(last + HOUR).delivered == []
    assert mailoutbox == [] and BrokenMailBackend.calls == 3
    assert alert_state(account).state == State.EXPIRED
    for text in [caplog.text, *failed, row.last_error]:
        assert WEBHOOK_SECRET not in text


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_never_send_a_delivery_twice(postgres, channels, mailoutbox, app):
    channels.status = 500
    make_account(app, "First", left=-HOUR)
    assert run().failed == ["webhook"]
    retry_at = delivery("webhook").next_attempt_at
    make_account(app, "Second", status=Account.Status.NEEDS_REAUTH)
    # A slow receiver: the two runs are sending at the same time.
    channels.status, channels.delay = 204, 0.5

    reports = run_in_threads(2, lambda: run(retry_at))

    # The earlier webhook's retry, and this run's e-mail and webhook: each exactly once.
    assert sorted(reports[0].delivered + reports[1].delivered) == ["email", "webhook", "webhook"]
    assert sorted(len(report.items) for report in reports) == [0, 1]
    bodies = [request.body for request in channels.received]
    assert len(bodies) == 3
    # The first body twice (its failed attempt and the retry), the second run's once.
    assert bodies.count(bodies[0]) == 2 and len(set(bodies)) == 2
    assert len(mailoutbox) == 2
    assert sorted(AlertDelivery.objects.values_list("channel", "attempts")) == [
        ("email", 1), ("email", 1), ("webhook", 1), ("webhook", 2)]
    assert not AlertDelivery.objects.filter(delivered_at__isnull=True).exists()


class ProcessKilled(BaseException):
    """A worker killed mid-task, as seen from inside: nothing catches it."""


@pytest.mark.django_db(transaction=True)
def test_a_run_killed_before_it_sends_leaves_its_messages_to_the_next_run(
    channels, mailoutbox, app, monkeypatch
):
    def killed(**kwargs) -> None:  # noqa: ANN003
        raise ProcessKilled

    monkeypatch.setitem(alert_outbox._SENDERS, AlertDelivery.Channel.EMAIL, killed)
    monkeypatch.setitem(alert_outbox._SENDERS, AlertDelivery.Channel.WEBHOOK, killed)
    account = make_account(app, "Shop", status=Account.Status.NEEDS_REAUTH)

    with pytest.raises(ProcessKilled):
        run()

    # The states and the messages announcing them were committed together.
    assert alert_state(account).state == State.NEEDS_REAUTH
    assert sorted(AlertDelivery.objects.filter(delivered_at__isnull=True, attempts=0)
                  .values_list("channel", flat=True)) == ["email", "webhook"]
    assert mailoutbox == [] and channels.received == []

    monkeypatch.undo()
    report = run(NOW + 10 * MINUTE)

    assert report.items == []  # nothing new to say...
    assert report.delivered == ["email", "webhook"]  # ...but the earlier run's message goes
    assert len(mailoutbox) == 1 and "Shop" in mailoutbox[0].body
    assert channels.payload()["sent_at"] == NOW.isoformat()
    assert [i["account_id"] for i in channels.payload()["items"]] == [account.pk]


def test_without_channels_nothing_counts_as_told(app, settings, mailoutbox, caplog):
    settings.ALERT_EMAILS = []
    settings.ALERT_WEBHOOK_URL = ""
    account = make_account(app, "Shop", status=Account.Status.NEEDS_REAUTH)

    report = run()

    assert report.alerts == 1 and report.queued == report.delivered == report.failed == []
    assert mailoutbox == []
    assert not AlertDelivery.objects.exists()
    assert "neither ALERT_EMAILS nor ALERT_WEBHOOK_URL" in caplog.text
    assert not AlertState.objects.filter(account=account).exists()
    # Configured later, the channel hears of the problem that lasts at the next run.
    settings.ALERT_EMAILS = RECIPIENTS
    assert run().alerts == 1
    assert len(mailoutbox) == 1 and "Shop" in mailoutbox[0].body
    assert alert_state(account).state == State.NEEDS_REAUTH


# --- metrics ----------------------------------------------------------------------------


def scrape(client) -> dict:  # noqa: ANN001
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_metrics_count_deliveries_failed_attempts_and_pending(channels, settings, client, app):
    settings.EMAIL_BACKEND = f"{__name__}.BrokenMailBackend"
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 2
    channels.script = [500]
    make_account(app, "First", left=-HOUR)
    run()  # e-mail and webhook fail once
    run(NOW + HOUR)  # the e-mail fails again and is abandoned; the webhook goes through
    channels.status = 500
    make_account(app, "Second", status=Account.Status.NEEDS_REAUTH)
    run(NOW + 2 * HOUR)  # both of this run's fail once and wait

    values = scrape(client)

    def value(name: str, **labels: str) -> float:
        return values[(name, tuple(sorted(labels.items())))]

    total = "igregistry_alert_deliveries_total"
    assert value(total, channel="email", outcome="delivered") == 0
    assert value(total, channel="email", outcome="abandoned") == 1
    assert value(total, channel="webhook", outcome="delivered") == 1
    assert value(total, channel="webhook", outcome="abandoned") == 0
    failures = "igregistry_alert_delivery_failures_total"
    assert value(failures, channel="email") == 3
    assert value(failures, channel="webhook") == 2
    pending = "igregistry_alert_deliveries_pending"
    assert value(pending, channel="email") == 1
    assert value(pending, channel="webhook") == 1

    # One query, however many deliveries there are.
    with CaptureQueriesContext(connection) as queries:
        list(RegistryCollector()._alert_delivery_metrics())
    assert len(queries) == 1


# --- the refresh workers ----------------------------------------------------------------


def test_stalled_refresh_workers_are_announced_once_reminded_and_resolved(
    channels, mailoutbox, app
):
    dashboard = SITE_URL + reverse("admin:accounts_account_dashboard")
    due = make_account(app, "Due shop", left=30 * DAY)
    late = make_account(app, "Late shop", left=20 * DAY)
    Token.objects.filter(account=due).update(refresh_queued_for=NOW - 29 * MINUTE)
    # Within REFRESH_QUEUE_MAX_LAG_MINUTES: a busy queue is no news.
    assert run().items == []

    Token.objects.filter(account=late).update(refresh_queued_for=NOW - 45 * MINUTE)
    report = run(NOW + MINUTE)

    (item,) = report.items
    assert (report.alerts, item.kind, item.account_id, item.state) == (
        1, "alert", None, "workers_stalled")
    mail = mailoutbox[-1]
    assert mail.subject == "[igregistry] refresh workers stalled"
    assert ("Refresh workers are not taking refreshes off the queue: 2 due refreshes waiting, "
            "the oldest 46 minutes past its start; check the worker processes.") in mail.body
    assert f"Dashboard: {dashboard}" in mail.body
    (payload,) = channels.payload()["items"]
    assert payload == {
        "kind": "alert", "account_id": None, "label": "Refresh workers", "app": "",
        "username": "", "state": "workers_stalled", "previous_state": "workers_ok",
        "expires_at": None, "last_error": "", "message": item.message,
        "admin_url": dashboard,
    }
    sweep = SweepState.objects.get()
    assert (sweep.workers_alert_state, sweep.workers_alert_sent_at) == ("stalled", NOW + MINUTE)

    # Still stalled an hour later: staff know already.
    assert run(NOW + HOUR).items == []
    # Reminded every ALERT_REMINDER_HOURS while it lasts.
    reminder = run(NOW + MINUTE + 24 * HOUR)
    assert [(i.kind, i.state) for i in reminder.items] == [("reminder", "workers_stalled")]
    assert mailoutbox[-1].subject == "[igregistry] refresh workers stalled"
    assert "Still unresolved (reminder) (1):" in mailoutbox[-1].body
    assert run(NOW + 25 * HOUR).items == []

    # The workers are back (each attempt clears its marker), while an account broke: one
    # message says both.
    Token.objects.update(refresh_queued_for=None)
    broken = make_account(app, "Broken shop", status=Account.Status.ERROR)
    resolved = run(NOW + 26 * HOUR)

    assert [(i.kind, i.account_id, i.state) for i in resolved.items] == [
        ("resolved", None, "workers_ok"), ("alert", broken.pk, State.ERROR)]
    assert mailoutbox[-1].subject == (
        "[igregistry] refresh workers recovered, 1 account needs attention")
    assert "Refresh workers are taking refreshes off the queue again." in mailoutbox[-1].body
    assert [(i["kind"], i["account_id"], i["previous_state"])
            for i in channels.payload()["items"]] == [
        ("resolved", None, "workers_stalled"), ("alert", broken.pk, None)]
    assert SweepState.objects.get().workers_alert_state == "ok"
    for when in (NOW + 27 * HOUR, NOW + 60 * HOUR):
        assert all(i.account_id is not None for i in run(when).items)
    assert len(mailoutbox) == 4 and len(channels.received) == 4
    # The accounts waiting for their refresh were never alerting themselves.
    assert {alert_state(due).state, alert_state(late).state} == {State.REFRESH_DUE}


# --- secrets ----------------------------------------------------------------------------


def test_no_token_or_secret_leaves_in_any_message(channels, mailoutbox, app, caplog):
    leaky = make_account(app, "Leaky", status=Account.Status.ERROR)
    # An error text that (wrongly) quotes a token: masked before it leaves the registry.
    Account.objects.filter(pk=leaky.pk).update(
        last_error=f"GET /refresh_access_token?access_token={token_value(leaky)} failed")
    accounts = [leaky] + [make_account(app, f"Shop {n}", **SITUATIONS[name][0])
                          for n, name in enumerate(SITUATIONS)]
    secrets = [APP_SECRET, WEBHOOK_SECRET] + [token_value(a) for a in accounts]

    with caplog.at_level("DEBUG"):
        run()
        Account.objects.filter(pk=leaky.pk).update(status=Account.Status.ACTIVE)
        run(NOW + 25 * HOUR)  # reminders and a "resolved"

    assert len(mailoutbox) == 2 and len(channels.received) == 2
    texts = [m.subject + m.body for m in mailoutbox]
    texts += [r.body.decode() for r in channels.received]
    texts += [str(dict(r.headers)) for r in channels.received]
    texts += list(Event.objects.values_list("message", flat=True))
    # The outbox rows stay in the database for good.
    texts += [d.subject + d.body + d.last_error for d in AlertDelivery.objects.all()]
    texts.append(caplog.text)
    for secret in secrets:
        for text in texts:
            assert secret not in text
    assert "access_token=[redacted]" in mailoutbox[0].body


# --- the task ---------------------------------------------------------------------------


def test_the_celery_task_returns_the_counts(channels, mailoutbox, app):
    now = timezone.now()
    make_account(app, "Reauth", status=Account.Status.NEEDS_REAUTH, now=now)
    make_account(app, "Expiring", left=2 * DAY, now=now)
    make_account(app, "Healthy", now=now)

    assert tasks.send_alerts() == {"alerts": 2, "reminders": 0, "resolved": 0}
    assert len(mailoutbox) == 1
    assert tasks.send_alerts() == {"alerts": 0, "reminders": 0, "resolved": 0}
    assert len(mailoutbox) == 1


# --- cost -------------------------------------------------------------------------------


def add_accounts(app: InstagramApp, count: int, start: int) -> None:
    """`count` accounts in bulk, every other one expiring."""
    accounts = Account.objects.bulk_create(
        [Account(app=app, label=f"Bulk {start + n}", status=Account.Status.ACTIVE)
         for n in range(count)])
    Token.objects.bulk_create(
        [Token(account=account, value=f"IGAA-bulk-{account.pk}", kind=Token.Kind.LONG,
               obtained_at=NOW - 5 * DAY,
               expires_at=NOW + (3 * DAY if n % 2 else 55 * DAY))
         for n, account in enumerate(accounts)])


def count_queries(now: datetime) -> tuple[int, services.AlertReport]:
    with CaptureQueriesContext(connection) as queries:
        report = run(now)
    return len(queries), report


def test_queries_do_not_grow_with_accounts(channels, mailoutbox, app,
                                           django_assert_max_num_queries):
    # The sweep's bookkeeping row exists once any sweep ran; creating it costs a first run
    # three more queries.
    selectors.sweep_state()
    add_accounts(app, 20, start=0)
    first_20, report = count_queries(NOW)
    assert report.alerts == 10
    quiet_20, report = count_queries(NOW + HOUR)
    assert report.items == []

    add_accounts(app, 180, start=20)
    first_200, report = count_queries(NOW + 2 * HOUR)
    assert report.alerts == 90  # only the new ones: the 10 old alerts are not repeated
    quiet_200, report = count_queries(NOW + 3 * HOUR)
    assert report.items == []

    assert first_200 == first_20
    assert quiet_200 == quiet_20
    # Deciding (in one transaction): the advisory lock (PostgreSQL only), the refresh
    # backlog (queued, the pause, unattended), the sweep row, alert states, accounts, the
    # state writes, the deliveries' insert. Sending, per delivery: a transaction with its
    # locked read, its update and its event; then one read that finds nothing more. A quiet
    # run only reads.
    assert first_20 <= 24 and quiet_20 <= 12
    with django_assert_max_num_queries(24):
        report = run(NOW + 27 * HOUR)  # a day after the second batch's alerts
    assert report.reminders == 100
    with django_assert_max_num_queries(12):
        assert run(NOW + 28 * HOUR).items == []
