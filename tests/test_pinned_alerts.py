"""Behaviours of the alerts and their outbox that no other test pinned down, found by
mutation testing (README, "Mutation testing"; the survivors are classified in
docs/mutation-survivors.md). Each test goes through `alerts_dispatch` (and so the outbox)
with the e-mail backend and a real webhook receiver over HTTP, and fails when the
behaviour changes."""

# The fixtures (app, channels, hook) are those of tests/test_alerts.py, imported below.
# ruff: noqa: F811

from __future__ import annotations

import logging
import socket
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection
from django.urls import reverse

from accounts.models import Account, AlertDelivery, Event, Token
from accounts.selectors import State
from accounts.services import alert_outbox, alert_retry_delay
from tests.test_alerts import (  # noqa: F401 - fixtures
    DAY,
    HOUR,
    MINUTE,
    NOW,
    SECOND,
    SITE_URL,
    app,
    channels,
    hook,
    make_account,
    run,
)
from tests.test_pinned_behaviour import timed


def admin_url(account: Account) -> str:
    return SITE_URL + reverse("admin:accounts_account_change", args=[account.pk])


# --- what a run says ----------------------------------------------------------------------


def test_the_email_lists_each_group_with_its_items(channels, mailoutbox, app):
    expiring = make_account(app, "Expiring", left=3 * DAY, last_error="HTTP 503 at refresh")
    broken = make_account(app, "Broken", status=Account.Status.ERROR)
    assert run().alerts == 2
    Account.objects.filter(pk=broken.pk).update(status=Account.Status.ACTIVE)
    Account.objects.filter(pk=expiring.pk).update(username="")
    later = NOW + 25 * HOUR

    run(later)

    assert mailoutbox[-1].body == "\n".join([
        "Account states at 2025-03-02 13:00 UTC.",
        "",
        "Still unresolved (reminder) (1):",
        "",
        "* Expiring — app Shop app, (no username yet)",
        "  State: Expiring soon (was: Expiring soon)",
        "  Token expires: 2025-03-04 12:00 UTC",
        "  Last error: HTTP 503 at refresh",
        f"  Admin: {admin_url(expiring)}",
        "",
        "Resolved (1):",
        "",
        "* Broken — app Shop app, @broken",
        "  State: Healthy (was: Error)",
        "  Token expires: 2025-04-25 12:00 UTC",
        f"  Admin: {admin_url(broken)}",
        "",
    ])


def test_an_account_needing_authorization_again_without_a_token_is_announced(
        channels, mailoutbox, app):
    account = make_account(app, "Tokenless", left=None)
    Account.objects.filter(pk=account.pk).update(status=Account.Status.NEEDS_REAUTH)

    report = run()

    assert [(item.kind, item.state, item.expires_at) for item in report.items] == [
        ("alert", State.NEEDS_REAUTH, None)]
    assert "  Token expires: no token\n" in mailoutbox[0].body
    [item] = channels.payload()["items"]
    assert (item["account_id"], item["expires_at"]) == (account.pk, None)


def test_several_recovered_accounts_are_counted_in_the_report_and_the_subject(
        channels, mailoutbox, app):
    accounts = [make_account(app, f"Shop {n}", status=Account.Status.ERROR) for n in range(2)]
    run()
    Account.objects.filter(pk__in=[a.pk for a in accounts]).update(
        status=Account.Status.ACTIVE)

    report = run(NOW + HOUR)

    assert (report.alerts, report.reminders, report.resolved) == (0, 0, 2)
    assert mailoutbox[-1].subject == "[igregistry] 2 accounts recovered"


def test_a_token_or_app_secret_no_key_decrypts_does_not_stop_the_alerts(
        channels, mailoutbox, app):
    account = make_account(app, "Shop", status=Account.Status.NEEDS_REAUTH)
    with connection.cursor() as cursor:  # raw: the fields would encrypt whatever they get
        cursor.execute("UPDATE accounts_token SET value = %s WHERE account_id = %s",
                       ["not-a-fernet-token", account.pk])
        cursor.execute("UPDATE accounts_instagramapp SET app_secret = %s WHERE id = %s",
                       ["not-a-fernet-token", app.pk])

    report = run()

    assert [item.account_id for item in report.items] == [account.pk]
    assert report.delivered == ["email", "webhook"]
    assert "* Shop — app Shop app, @shop" in mailoutbox[0].body


def test_the_webhook_delivery_is_recorded_with_what_it_said(channels, settings, app):
    settings.ALERT_EMAILS = []
    make_account(app, "Shop", status=Account.Status.NEEDS_REAUTH)

    assert run().delivered == ["webhook"]

    [delivery] = AlertDelivery.objects.all()
    assert delivery.subject == "[igregistry] 1 account needs attention"
    [sent] = Event.objects.filter(action="alert")
    assert sent.message == "Sent by webhook (attempt 1 of 10): 1 account needs attention."


def test_without_channels_the_warning_says_what_nobody_was_told(app, settings, caplog):
    settings.ALERT_EMAILS = []
    settings.ALERT_WEBHOOK_URL = ""
    make_account(app, "Shop", status=Account.Status.NEEDS_REAUTH)

    with caplog.at_level(logging.WARNING, logger="accounts.services.alerts"):
        run()

    assert [r.getMessage() for r in caplog.records if r.name == "accounts.services.alerts"] == [
        "alerts: 1 account needs attention to say but neither ALERT_EMAILS nor "
        "ALERT_WEBHOOK_URL is set: nobody is told"]


def test_a_reminder_comes_exactly_alert_reminder_hours_later(channels, mailoutbox, app):
    make_account(app, "Shop", status=Account.Status.NEEDS_REAUTH)
    run()

    assert run(NOW + 24 * HOUR - SECOND).items == []
    report = run(NOW + 24 * HOUR)

    assert [(item.kind, item.previous_state) for item in report.items] == [
        ("reminder", State.NEEDS_REAUTH)]


# --- the refresh workers ------------------------------------------------------------------


def queued(account: Account, ago: timedelta) -> None:
    Token.objects.filter(account=account).update(refresh_queued_for=NOW - ago)


def test_workers_are_stalled_only_past_the_allowed_lag(channels, mailoutbox, app):
    due = make_account(app, "Due", left=30 * DAY)
    queued(due, 30 * MINUTE)
    assert run().items == []

    queued(due, 30 * MINUTE + SECOND)
    assert [(i.kind, i.state) for i in run().items] == [("alert", "workers_stalled")]


def test_workers_and_an_account_in_one_email(channels, mailoutbox, app):
    due = make_account(app, "Due", left=30 * DAY)
    queued(due, 45 * MINUTE)
    broken = make_account(app, "Broken", status=Account.Status.ERROR)

    run()

    assert mailoutbox[0].subject == (
        "[igregistry] refresh workers stalled, 1 account needs attention")
    assert mailoutbox[0].body == "\n".join([
        "Account states at 2025-03-01 12:00 UTC.",
        "",
        "New problems (2):",
        "",
        "* Refresh workers",
        "  Refresh workers are not taking refreshes off the queue: 1 due refresh waiting, "
        "the oldest 45 minutes past its start; check the worker processes.",
        f"  Dashboard: {SITE_URL}{reverse('admin:accounts_account_dashboard')}",
        "",
        "* Broken — app Shop app, @broken",
        "  State: Error",
        "  Token expires: 2025-04-25 12:00 UTC",
        f"  Admin: {admin_url(broken)}",
        "",
    ])


def test_one_due_token_no_sweep_queued_stalls_the_workers(channels, mailoutbox, app,
                                                           settings):
    settings.REFRESH_SWEEP_MINUTES = 10
    make_account(app, "Due", left=30 * DAY)

    [item] = run().items

    assert (item.kind, item.state) == ("alert", "workers_stalled")
    assert item.message == (
        "Due refreshes are not being queued: 1 due token waited longer than a sweep "
        "interval plus 30 minutes; check beat and the worker processes.")


def test_two_due_tokens_no_sweep_queued_are_counted(channels, mailoutbox, app, settings):
    settings.REFRESH_SWEEP_MINUTES = 10
    make_account(app, "Due", left=30 * DAY)
    make_account(app, "Also due", left=20 * DAY)

    [item] = run().items

    assert item.message.startswith("Due refreshes are not being queued: 2 due tokens waited ")


@pytest.mark.parametrize(("lag", "says"), [
    (30 * MINUTE, "Due refreshes are not being queued: 1 due token"),
    (30 * MINUTE + SECOND, "Refresh workers are not taking refreshes off the queue: 1 due "
                           "refresh waiting, the oldest 30 minutes past its start"),
])
def test_a_queue_within_its_lag_beside_an_unqueued_token_blames_the_queueing(
        channels, mailoutbox, app, settings, lag, says):
    settings.REFRESH_SWEEP_MINUTES = 10
    make_account(app, "Unqueued", left=30 * DAY)
    queued(make_account(app, "Queued", left=30 * DAY), lag)

    [item] = run().items

    assert item.message.startswith(says)


@pytest.mark.parametrize(("lag", "says"), [
    (90 * SECOND, "the oldest 1 minute past its start"),
    (150 * SECOND, "the oldest 2 minutes past its start"),
])
def test_the_oldest_refresh_waiting_is_counted_in_minutes(channels, mailoutbox, app,
                                                          settings, lag, says):
    settings.REFRESH_QUEUE_MAX_LAG_MINUTES = 1
    queued(make_account(app, "Queued", left=30 * DAY), lag)

    [item] = run().items

    assert says in item.message


# --- the outbox ---------------------------------------------------------------------------


def test_the_back_off_is_between_half_and_all_of_the_doubled_base(settings):
    settings.ALERT_RETRY_BASE_SECONDS = 60
    settings.ALERT_RETRY_MAX_SECONDS = 3600
    for attempts, capped in ((1, 60), (2, 120), (3, 240), (7, 3600), (20, 3600)):
        waits = [alert_retry_delay(attempts=attempts).total_seconds() for _ in range(2000)]
        assert capped / 2 <= min(waits) and max(waits) <= capped


class Receiver:
    """A webhook receiver over real HTTP that answers each POST to `path` with `status`
    (and, for a redirect, a Location pointing at /elsewhere, which accepts anything)."""

    def __init__(self, status: int) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append((self.command, self.path, self.rfile.read(length)))
                elsewhere = self.path == "/elsewhere"
                self.send_response(204 if elsewhere else status)
                if not elsewhere and 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = answer

            def log_message(self, format, *args) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def webhook_only(settings, url: str) -> None:  # noqa: ANN001
    settings.ALERT_EMAILS = []
    settings.ALERT_WEBHOOK_URL = url


@pytest.mark.parametrize(("status", "delivered"), [
    (200, True), (299, True), (300, False), (307, False), (308, False)])
def test_only_a_2xx_answer_delivers_and_a_redirect_is_not_followed(
        channels, settings, app, status, delivered):
    with Receiver(status) as receiver:
        webhook_only(settings, receiver.url)
        make_account(app, "Shop", status=Account.Status.NEEDS_REAUTH)
        report = run()
    assert (report.delivered, report.failed) == (
        (["webhook"], []) if delivered else ([], ["webhook"]))
    assert [(method, path) for method, path, _ in receiver.received] == [("POST", "/hook")]
    row = AlertDelivery.objects.get()
    assert row.last_error == ("" if delivered else f"HTTP {status}")


def test_a_receiver_nobody_answers_at_is_a_connection_error(channels, settings, app):
    with socket.socket() as closed:  # a port nothing listens on once this is closed
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    webhook_only(settings, f"http://127.0.0.1:{port}/hook")
    make_account(app, "Shop", status=Account.Status.NEEDS_REAUTH)

    assert run().failed == ["webhook"]

    assert AlertDelivery.objects.get().last_error == "ConnectionError"


def test_each_attempt_is_recorded_as_the_alerts_job(channels, app):
    make_account(app, "Shop", status=Account.Status.NEEDS_REAUTH)
    run()
    assert set(Event.objects.filter(action="alert").values_list("actor_job", flat=True)) == {
        "alerts"}


def test_a_mail_server_that_never_answers_fails_the_attempt_after_the_mail_timeout(
        channels, settings, app, monkeypatch):
    """Django's SMTP backend would wait forever (EMAIL_TIMEOUT unset): the outbox gives
    the server MAIL_TIMEOUT_SECONDS (here shortened), then counts a failed attempt."""
    monkeypatch.setattr(alert_outbox, "MAIL_TIMEOUT_SECONDS", 0.5)
    settings.ALERT_WEBHOOK_URL = ""
    make_account(app, "Shop", status=Account.Status.NEEDS_REAUTH)
    with socket.socket() as silent:  # accepts the connection, never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", silent.getsockname()[1]
        settings.EMAIL_TIMEOUT = None
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        # Should the run wait on regardless, closing the server ends that wait.
        watchdog = threading.Timer(5, silent.close)
        watchdog.start()
        try:
            report, waited = timed(run)
        finally:
            watchdog.cancel()
    assert report.failed == ["email"]
    assert AlertDelivery.objects.get().last_error == "SMTPServerDisconnected"  # timed out
    assert waited < 5
