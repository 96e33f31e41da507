"""Alerts: tell staff once when an account's state turns bad, remind them while it lasts,
and say when it is resolved.

Each account's last announced state lives in its `AlertState`. A run compares every
account's current state with it, writes the new states in one transaction, and only then
sends everything it has to say together: one e-mail to ALERT_EMAILS and one signed
webhook POST. A delivery failure is logged and recorded but does not undo the state
writes, so a dead mail server or webhook never turns into the same alert every run.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import requests
from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db import connection, transaction
from django.urls import reverse

from .. import selectors
from ..instagram import redact_secrets
from ..models import Account, AlertState, Event
from ..selectors import State
from .common import Actor, event_record

logger = logging.getLogger(__name__)

ACTOR = Actor(job="alerts")
WEBHOOK_TIMEOUT_SECONDS = 5.0
# Django's SMTP backend waits forever by default (EMAIL_TIMEOUT = None); a hung mail server
# must not hold the task past its next run.
MAIL_TIMEOUT_SECONDS = 30.0
SIGNATURE_HEADER = "X-Igregistry-Signature"
# Accounts are read in chunks: 10,000 rows never sit in memory at once.
CHUNK_SIZE = 2000
# Serialises concurrent runs on PostgreSQL (a manual run while beat's runs): the second
# waits, then reads the states the first wrote, and has nothing left to say twice.
_ADVISORY_LOCK_KEY = zlib.crc32(b"igregistry.alerts_dispatch")
# last_error is shown to staff already; this only bounds the size of a mail with many items.
_LAST_ERROR_CHARS = 500


class Kind:
    """What an alert item says about its account."""

    ALERT = "alert"  # the account entered an alerting state
    REMINDER = "reminder"  # still in the same alerting state, ALERT_REMINDER_HOURS later
    RESOLVED = "resolved"  # left the alerting states


@dataclass(frozen=True)
class AlertItem:
    """One thing to tell staff about one account. Holds no token and no secret."""

    kind: str
    account_id: int
    label: str
    app: str
    username: str
    state: str
    previous_state: str | None
    expires_at: datetime | None
    last_error: str
    admin_path: str

    def payload(self) -> dict[str, Any]:
        """The item as it appears in the webhook's JSON body."""
        return {
            "kind": self.kind,
            "account_id": self.account_id,
            "label": self.label,
            "app": self.app,
            "username": self.username,
            "state": self.state,
            "previous_state": self.previous_state,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "last_error": self.last_error,
        }


@dataclass
class AlertReport:
    """What one run found and sent."""

    alerts: int = 0
    reminders: int = 0
    resolved: int = 0
    items: list[AlertItem] = field(default_factory=list)
    # Channels ("email", "webhook") that delivered, and those that failed.
    delivered: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def webhook_signature(*, body: bytes, secret: str) -> str:
    """The X-Igregistry-Signature value for `body`: "sha256=" and the hex HMAC-SHA256 of
    exactly these bytes keyed with `secret`. Receivers recompute it over the raw request
    body and compare with `hmac.compare_digest`."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def alerts_dispatch(*, now: datetime) -> AlertReport:
    """Compare every account's state with the one staff last heard about; record the new
    states; then send all alerts, reminders and "resolved" notices of this run together
    (one e-mail, one webhook call), or nothing at all when there is nothing to say.

    An account is announced once per change into an alerting state, reminded of every
    ALERT_REMINDER_HOURS while it stays there, and announced once more when it leaves.
    A failed delivery is logged and recorded as an event; it is not retried, so a rerun
    right after sends nothing new."""
    report = AlertReport()
    with transaction.atomic():
        _lock_run()
        report.items = _compute_and_record(now=now)
    for item in report.items:
        if item.kind == Kind.ALERT:
            report.alerts += 1
        elif item.kind == Kind.REMINDER:
            report.reminders += 1
        else:
            report.resolved += 1
    if report.items:
        _deliver(report=report, now=now)
    return report


# --- deciding ---------------------------------------------------------------------------


def _lock_run() -> None:
    # SQLite already lets one writer at a time; elsewhere there is no portable lock.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK_KEY])


_SAME_PROBLEM = {State.EXPIRED, State.NEEDS_REAUTH}


def _compute_and_record(*, now: datetime) -> list[AlertItem]:
    """Decide what to say about each account and write the AlertState changes (caller holds
    the transaction). Three queries plus the batched writes, however many accounts."""
    remind_before = now - timedelta(hours=settings.ALERT_REMINDER_HOURS)
    known = {alert.account_id: alert for alert in AlertState.objects.all()}
    accounts = (
        selectors.accounts_with_state(now=now)
        # Never decrypt 10,000 secrets just to read the expiry next to them.
        .defer("token__value", "app__app_secret")
        .iterator(chunk_size=CHUNK_SIZE)
    )
    items: list[AlertItem] = []
    created: list[AlertState] = []
    updated: list[AlertState] = []
    for account in accounts:
        current = account.state
        alerting = current in State.ALERTING
        alert = known.get(account.pk)
        if alert is None:
            created.append(
                AlertState(account_id=account.pk, state=current, changed_at=now,
                           last_sent_at=now if alerting else None)
            )
            if alerting:
                items.append(_item(Kind.ALERT, account=account, previous=None))
            continue
        previous = alert.state
        if {current, previous} == _SAME_PROBLEM:
            # The sweep files an expired token under "needs re-authorization": same news.
            alert.state = current
            updated.append(alert)
        elif current != previous:
            alert.state, alert.changed_at = current, now
            if alerting:
                items.append(_item(Kind.ALERT, account=account, previous=previous))
                alert.last_sent_at = now
            elif previous in State.ALERTING:
                items.append(_item(Kind.RESOLVED, account=account, previous=previous))
                alert.last_sent_at = now
            updated.append(alert)
        elif alerting and (alert.last_sent_at is None or alert.last_sent_at <= remind_before):
            items.append(_item(Kind.REMINDER, account=account, previous=previous))
            alert.last_sent_at = now
            updated.append(alert)
    if created:
        AlertState.objects.bulk_create(created, batch_size=CHUNK_SIZE)
    if updated:
        AlertState.objects.bulk_update(
            updated, ["state", "changed_at", "last_sent_at"], batch_size=CHUNK_SIZE
        )
    return items


def _item(kind: str, *, account: Account, previous: str | None) -> AlertItem:
    token = getattr(account, "token", None)
    return AlertItem(
        kind=kind,
        account_id=account.pk,
        label=account.label,
        app=account.app.name,
        username=account.username,
        state=account.state,
        previous_state=previous,
        expires_at=token.expires_at if token is not None else None,
        # Errors are written without secrets; masking again costs nothing and guards the
        # one place where text leaves the registry for a mailbox or a third party.
        last_error=redact_secrets(account.last_error)[:_LAST_ERROR_CHARS],
        admin_path=reverse("admin:accounts_account_change", args=[account.pk]),
    )


# --- sending ----------------------------------------------------------------------------


def _deliver(*, report: AlertReport, now: datetime) -> None:
    counts = (
        f"{report.alerts} alert(s), {report.reminders} reminder(s), "
        f"{report.resolved} resolved"
    )
    channels = []
    if settings.ALERT_EMAILS:
        channels.append(("email", _send_email))
    if settings.ALERT_WEBHOOK_URL:
        channels.append(("webhook", _send_webhook))
    if not channels:
        # The states are recorded anyway: configuring a channel later must not replay
        # every old problem as new.
        logger.warning("alerts: %s to say but neither ALERT_EMAILS nor ALERT_WEBHOOK_URL "
                       "is set", counts)
    for name, send in channels:
        # Failure messages name the kind of error only: a webhook URL can itself be a
        # secret (chat webhooks carry their key in the path) and requests' errors quote it.
        failure = send(items=report.items, now=now)
        if failure is None:
            report.delivered.append(name)
            event_record(account=None, action="alert", outcome=Event.Outcome.OK,
                         message=f"Sent by {name}: {counts}.", actor=ACTOR, now=now)
        else:
            report.failed.append(name)
            message = f"Could not send by {name} ({failure}): {counts} not delivered."
            logger.error("alerts: %s", message)
            event_record(account=None, action="alert", outcome=Event.Outcome.FAILED,
                         message=message, actor=ACTOR, now=now)


def _send_email(*, items: list[AlertItem], now: datetime) -> str | None:
    """Send the run's one e-mail; return why it failed, or None."""
    message = EmailMessage(
        subject=_subject(items),
        body=_body(items, now=now),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=list(settings.ALERT_EMAILS),
        connection=get_connection(timeout=settings.EMAIL_TIMEOUT or MAIL_TIMEOUT_SECONDS),
    )
    try:
        message.send()
    except Exception as exc:  # SMTP, socket and backend errors alike: report, do not raise
        return type(exc).__name__
    return None


def _send_webhook(*, items: list[AlertItem], now: datetime) -> str | None:
    """POST the run's items, signed; return why it failed, or None."""
    secret = settings.ALERT_WEBHOOK_SECRET
    if not secret:
        # Settings refuse this combination at start-up; never send an unsigned body anyway.
        return "ALERT_WEBHOOK_SECRET is not set"
    # Serialised once: the signature covers exactly the bytes that are sent.
    body = json.dumps(
        {"sent_at": now.isoformat(), "items": [item.payload() for item in items]},
        separators=(",", ":"),
    ).encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: webhook_signature(body=body, secret=secret),
    }
    try:
        response = requests.post(
            settings.ALERT_WEBHOOK_URL, data=body, headers=headers,
            timeout=WEBHOOK_TIMEOUT_SECONDS,
            # A redirect would be followed as a GET without the body: count it as a failure.
            allow_redirects=False,
        )
    except requests.Timeout:
        return f"no answer within {WEBHOOK_TIMEOUT_SECONDS:g} s"
    except requests.RequestException as exc:
        return type(exc).__name__
    if not 200 <= response.status_code < 300:
        return f"HTTP {response.status_code}"
    return None


def _subject(items: list[AlertItem]) -> str:
    attention = sum(1 for item in items if item.kind != Kind.RESOLVED)
    resolved = len(items) - attention
    parts = []
    if attention:
        parts.append(f"{attention} account{'s' if attention != 1 else ''} "
                     f"need{'s' if attention == 1 else ''} attention")
    if resolved:
        parts.append(f"{resolved} account{'s' if resolved != 1 else ''} recovered")
    return f"[igregistry] {', '.join(parts)}"


_HEADINGS = {
    Kind.ALERT: "New problems",
    Kind.REMINDER: "Still unresolved (reminder)",
    Kind.RESOLVED: "Resolved",
}


def _body(items: list[AlertItem], *, now: datetime) -> str:
    lines = [f"Account states at {now:%Y-%m-%d %H:%M} UTC.", ""]
    for kind in (Kind.ALERT, Kind.REMINDER, Kind.RESOLVED):
        group = [item for item in items if item.kind == kind]
        if not group:
            continue
        lines += [f"{_HEADINGS[kind]} ({len(group)}):", ""]
        for item in group:
            state = State.LABELS.get(item.state, item.state)
            if item.previous_state:
                state += f" (was: {State.LABELS.get(item.previous_state, item.previous_state)})"
            expiry = f"{item.expires_at:%Y-%m-%d %H:%M} UTC" if item.expires_at else "no token"
            username = f"@{item.username}" if item.username else "(no username yet)"
            lines += [
                f"* {item.label} — app {item.app}, {username}",
                f"  State: {state}",
                f"  Token expires: {expiry}",
            ]
            if item.last_error:
                lines.append(f"  Last error: {item.last_error}")
            lines += [f"  Admin: {item.admin_path}", ""]
    return "\n".join(lines)
