"""Alerts: once per change of state, a daily reminder while it lasts, a "resolved" notice,
all items of a run in one e-mail and one signed webhook call (to a real HTTP server)."""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.mail.backends.base import BaseEmailBackend
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts import services, tasks
from accounts.models import Account, AlertState, Event, InstagramApp, Token
from accounts.selectors import State
from accounts.services import alerts as alerts_module
from accounts.services import webhook_signature

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
APP_SECRET = "app-secret-0f1e2d3c4b5a69788796"
WEBHOOK_SECRET = "webhook-secret-7a6b5c4d3e2f1a0b"
# Chat webhooks carry their key in the path: it must not show up in events or logs.
WEBHOOK_PATH = "/hooks/T0001/B0002/pathkey-5c4d3e2f"
RECIPIENTS = ["ops@example.com", "oncall@example.com"]


# --- a real webhook receiver ------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: Message
    body: bytes


class WebhookServer:
    """A tiny HTTP server in a thread that records each POST's headers and raw body and
    answers `status`, after sleeping `delay` seconds."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status = 204
        self.delay = 0.0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.received.append(Received(self.path, self.headers, body))
                if hook.delay:
                    time.sleep(hook.delay)
                try:
                    self.send_response(hook.status)
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
        ig_user_id=str(17841400000000000 + account.pk),
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

    assert report.alerts == 5
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == RECIPIENTS
    assert mail.subject == "[igregistry] 5 accounts need attention"
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


# --- delivery failures ------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["http_500", "timeout"])
def test_a_dead_webhook_is_logged_and_not_retried_every_run(
    channels, mailoutbox, app, caplog, monkeypatch, failure
):
    if failure == "http_500":
        channels.status = 500
    else:
        monkeypatch.setattr(alerts_module, "WEBHOOK_TIMEOUT_SECONDS", 0.3)
        channels.delay = 1.0
    account = make_account(app, "Shop", status=Account.Status.NEEDS_REAUTH)

    with caplog.at_level("INFO"):
        report = run()

    assert report.alerts == 1
    assert (report.delivered, report.failed) == (["email"], ["webhook"])
    assert len(channels.received) == 1  # it was tried
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "webhook" in errors[0].getMessage()
    failed = Event.objects.get(action="alert", outcome=Event.Outcome.FAILED)
    assert failed.account is None
    assert ("HTTP 500" if failure == "http_500" else "no answer within") in failed.message
    assert WEBHOOK_PATH not in failed.message and WEBHOOK_PATH not in caplog.text
    # The e-mail went out regardless and says so.
    assert len(mailoutbox) == 1
    assert Event.objects.filter(action="alert", outcome=Event.Outcome.OK).count() == 1
    # The state was recorded as announced: the next run has nothing to resend.
    assert (alert_state(account).state, alert_state(account).last_sent_at) == (
        State.NEEDS_REAUTH, NOW)

    channels.status, channels.delay = 204, 0.0
    assert run(NOW + 10 * timedelta(minutes=1)).items == []
    assert len(channels.received) == 1 and len(mailoutbox) == 1
    assert Event.objects.filter(action="alert", outcome=Event.Outcome.FAILED).count() == 1


class BrokenMailBackend(BaseEmailBackend):
    """An SMTP server that hangs up; its error text quotes a secret it should not."""

    def send_messages(self, email_messages) -> int:  # noqa: ANN001
        raise smtplib.SMTPServerDisconnected(f"closed after AUTH PLAIN {WEBHOOK_SECRET}")


def test_a_dead_mail_server_is_logged_and_not_retried(channels, settings, app, caplog):
    settings.EMAIL_BACKEND = f"{__name__}.BrokenMailBackend"
    account = make_account(app, "Shop", left=-HOUR)

    report = run()

    assert (report.delivered, report.failed) == (["webhook"], ["email"])
    assert [r.levelname for r in caplog.records if r.levelname == "ERROR"] == ["ERROR"]
    failed = Event.objects.get(action="alert", outcome=Event.Outcome.FAILED)
    assert "SMTPServerDisconnected" in failed.message
    assert WEBHOOK_SECRET not in failed.message and WEBHOOK_SECRET not in caplog.text
    assert alert_state(account).state == State.EXPIRED
    assert run(NOW + HOUR).items == []
    assert Event.objects.filter(action="alert", outcome=Event.Outcome.FAILED).count() == 1


def test_without_channels_the_states_are_still_recorded(app, settings, mailoutbox, caplog):
    settings.ALERT_EMAILS = []
    settings.ALERT_WEBHOOK_URL = ""
    account = make_account(app, "Shop", status=Account.Status.NEEDS_REAUTH)

    report = run()

    assert report.alerts == 1 and report.delivered == report.failed == []
    assert mailoutbox == []
    assert "neither ALERT_EMAILS nor ALERT_WEBHOOK_URL" in caplog.text
    # Configuring a channel later does not replay this as a new problem.
    assert alert_state(account).state == State.NEEDS_REAUTH


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
    # SQLite: a savepoint, alert states, accounts, one insert, release, two delivery
    # events; PostgreSQL adds the advisory lock. A quiet run only reads.
    assert first_20 <= 8 and quiet_20 <= 5
    # Reading accounts and alert states, the lock, the writes and two delivery events.
    with django_assert_max_num_queries(10):
        report = run(NOW + 27 * HOUR)  # a day after the second batch's alerts
    assert report.reminders == 100
    with django_assert_max_num_queries(5):
        assert run(NOW + 28 * HOUR).items == []
