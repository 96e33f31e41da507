"""Alerts: tell staff once when an account's state turns bad, remind them while it lasts,
and say when it is resolved; the same for the refresh workers as a whole.

Each account's last announced state lives in its `AlertState`, the workers' in
`SweepState.workers_alert_state`. A run compares the current states with them and, in one
transaction, writes the new states together with one `AlertDelivery` per configured
channel (the run's one e-mail, the run's one signed webhook body). Only after that commit
does `alert_outbox` send what is due, so a dead mail server or webhook neither undoes the
state writes (no same alert every run) nor loses the message: it is retried with back-off.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.urls import reverse

from .. import selectors
from ..instagram import redact_secrets
from ..models import Account, AlertDelivery, AlertState, SweepState
from ..selectors import State
from ..timeutil import utc_text
from .alert_outbox import SUBJECT_PREFIX, alert_deliveries_send
from .common import advisory_lock

logger = logging.getLogger(__name__)

# Accounts are read in chunks: 10,000 rows never sit in memory at once.
CHUNK_SIZE = 2000
# Serialises concurrent runs on PostgreSQL (a manual run while beat's runs): the second
# waits, then reads the states the first wrote, and has nothing left to say twice.
_LOCK_NAME = b"igregistry.alerts_dispatch"
# last_error is shown to staff already; this only bounds the size of a mail with many items.
_LAST_ERROR_CHARS = 500


class Kind:
    """What an alert item says about its account (or the refresh workers)."""

    ALERT = "alert"  # entered an alerting state
    REMINDER = "reminder"  # still in the same alerting state, ALERT_REMINDER_HOURS later
    RESOLVED = "resolved"  # left the alerting states
    # News that needs no action (an owner authorized through an owner link): queued when
    # it happens, by `alert_notice_queue`, not decided by a run.
    NOTICE = "notice"


class Workers:
    """The refresh workers as a whole: stored states (SweepState.workers_alert_state) and
    the `state` their items carry."""

    OK = "ok"
    STALLED = "stalled"
    ITEM_STATES = {OK: "workers_ok", STALLED: "workers_stalled"}
    LABEL = "Refresh workers"


@dataclass(frozen=True)
class AlertItem:
    """One thing to tell staff about one account or, with `account_id` None, about the
    registry itself (the refresh workers). Holds no token and no secret."""

    kind: str
    account_id: int | None
    label: str
    app: str
    username: str
    state: str
    previous_state: str | None
    expires_at: datetime | None
    last_error: str
    # Absolute (SITE_URL): the reader is in a mailbox or a chat, not on the registry.
    admin_url: str
    # What a system item says, in a sentence ("" for an account).
    message: str = ""

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
            "message": self.message,
            "admin_url": self.admin_url,
        }


@dataclass
class AlertReport:
    """What one run found, queued and sent."""

    alerts: int = 0
    reminders: int = 0
    resolved: int = 0
    items: list[AlertItem] = field(default_factory=list)
    # Channels ("email", "webhook") this run's items were queued for.
    queued: list[str] = field(default_factory=list)
    # The channel of each delivery (this run's or an earlier one's) sent, failed (to be
    # retried) or given up on by this run.
    delivered: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)


def alerts_dispatch(*, now: datetime) -> AlertReport:
    """Compare every account's state, and the refresh workers', with what staff last heard;
    record the new states and queue all alerts, reminders and "resolved" notices of this
    run together (one e-mail, one webhook body) in one transaction; then, after commit,
    send every delivery that is due, this run's and earlier failed ones alike.

    An account is announced once per change into an alerting state, reminded of every
    ALERT_REMINDER_HOURS while it stays there, and announced once more when it leaves.
    The same goes for the refresh workers: stalled when a due refresh handed to the broker
    has waited more than REFRESH_QUEUE_MAX_LAG_MINUTES past its start. That alert needs a
    live worker to run this task; /healthz is what catches "no worker at all".

    With no channel configured nothing is recorded as told (only logged): once a channel
    is configured, every problem that lasts is announced at the next run instead of
    waiting for its reminder. Call it outside any transaction: the sending commits
    delivery by delivery."""
    report = AlertReport()
    with transaction.atomic():
        advisory_lock(name=_LOCK_NAME)
        report.items = _workers_items(now=now) + _compute_and_record(now=now)
        if report.items:
            report.queued = _queue(items=report.items, now=now)
        if not (settings.ALERT_EMAILS or settings.ALERT_WEBHOOK_URL):
            # Nobody was told: forget what this run decided.
            transaction.set_rollback(True)
    for item in report.items:
        if item.kind == Kind.ALERT:
            report.alerts += 1
        elif item.kind == Kind.REMINDER:
            report.reminders += 1
        else:
            report.resolved += 1
    sent = alert_deliveries_send(now=now)
    report.delivered, report.failed, report.abandoned = sent.delivered, sent.failed, sent.abandoned
    return report


# --- deciding ---------------------------------------------------------------------------


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


def _workers_items(*, now: datetime) -> list[AlertItem]:
    """Decide what to say about the refresh workers and record it on the SweepState row
    (caller holds the transaction and the run lock). Two queries when there is no news."""
    backlog = selectors.refresh_backlog(now=now)
    stalled = (backlog.lag_seconds > settings.REFRESH_QUEUE_MAX_LAG_MINUTES * 60
               or backlog.unattended > 0)
    current = Workers.STALLED if stalled else Workers.OK
    sweep = selectors.sweep_state()
    previous, sent_at = sweep.workers_alert_state, sweep.workers_alert_sent_at
    remind_before = now - timedelta(hours=settings.ALERT_REMINDER_HOURS)
    if stalled and previous != Workers.STALLED:
        kind = Kind.ALERT
    elif stalled and (sent_at is None or sent_at <= remind_before):
        kind = Kind.REMINDER
    elif not stalled and previous == Workers.STALLED:
        kind = Kind.RESOLVED
    else:
        return []
    # Only these two columns: the sweep writes the row's others concurrently.
    SweepState.objects.filter(pk=sweep.pk).update(workers_alert_state=current,
                                                  workers_alert_sent_at=now)
    minutes = int(backlog.lag_seconds // 60)
    if stalled and backlog.lag_seconds <= settings.REFRESH_QUEUE_MAX_LAG_MINUTES * 60:
        message = (
            f"Due refreshes are not being queued: {backlog.unattended} due token"
            f"{'s' if backlog.unattended != 1 else ''} waited longer than a sweep interval "
            f"plus {settings.REFRESH_QUEUE_MAX_LAG_MINUTES:g} minutes; check beat and the "
            f"worker processes."
        )
    elif stalled:
        message = (
            f"Refresh workers are not taking refreshes off the queue: {backlog.queued} due "
            f"refresh{'es' if backlog.queued != 1 else ''} waiting, the oldest {minutes} "
            f"minute{'s' if minutes != 1 else ''} past its start; check the worker processes."
        )
    else:
        message = "Refresh workers are taking refreshes off the queue again."
    return [AlertItem(
        kind=kind, account_id=None, label=Workers.LABEL, app="", username="",
        state=Workers.ITEM_STATES[current],
        previous_state=Workers.ITEM_STATES.get(previous, previous),
        expires_at=None, last_error="", message=message,
        admin_url=_absolute(reverse("admin:accounts_account_dashboard")),
    )]


def _absolute(path: str) -> str:
    return f"{settings.SITE_URL}{path}"


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
        admin_url=_absolute(reverse("admin:accounts_account_change", args=[account.pk])),
    )


def alert_notice_queue(*, account: Account, message: str, now: datetime) -> list[str]:
    """Queue one informational notice about `account` (`message`: one sentence, no secret)
    for every configured channel, in the caller's transaction, so it is sent only if what
    it announces commits. The next `alerts_dispatch` run (every ALERT_MINUTES) sends it,
    with the same retries as any alert. Returns the channels it was queued for; with none
    configured it is only logged and nothing is written."""
    row = (selectors.accounts_with_state(now=now)
           .defer("token__value", "app__app_secret")  # the expiry is all it needs
           .get(pk=account.pk))
    item = replace(_item(Kind.NOTICE, account=row, previous=None), message=message)
    return _queue(items=[item], now=now)


# --- queueing ---------------------------------------------------------------------------


def _queue(*, items: list[AlertItem], now: datetime) -> list[str]:
    """Write the run's one delivery per configured channel (caller holds the transaction
    that records the states); return the channels."""
    subject = _subject(items)
    deliveries = []
    if settings.ALERT_EMAILS:
        deliveries.append(AlertDelivery(channel=AlertDelivery.Channel.EMAIL,
                                        subject=subject, body=_body(items, now=now),
                                        created_at=now, next_attempt_at=now))
    if settings.ALERT_WEBHOOK_URL:
        # Serialised once, here: every attempt sends (and signs) exactly these bytes.
        body = json.dumps(
            {"sent_at": now.isoformat(), "items": [item.payload() for item in items]},
            separators=(",", ":"),
        )
        deliveries.append(AlertDelivery(channel=AlertDelivery.Channel.WEBHOOK,
                                        subject=subject, body=body,
                                        created_at=now, next_attempt_at=now))
    if not deliveries:
        logger.warning("alerts: %s to say but neither ALERT_EMAILS nor ALERT_WEBHOOK_URL "
                       "is set: nobody is told", subject.removeprefix(SUBJECT_PREFIX))
    AlertDelivery.objects.bulk_create(deliveries)
    return [delivery.channel for delivery in deliveries]


def _subject(items: list[AlertItem]) -> str:
    notices = [item for item in items if item.kind == Kind.NOTICE]
    if len(notices) == len(items) == 1:
        return f"{SUBJECT_PREFIX}{notices[0].label}: {notices[0].message}"[:300]
    accounts = [item for item in items
                if item.account_id is not None and item.kind != Kind.NOTICE]
    attention = sum(1 for item in accounts if item.kind != Kind.RESOLVED)
    resolved = len(accounts) - attention
    parts = []
    for item in items:
        if item.account_id is None:
            parts.append("refresh workers recovered" if item.kind == Kind.RESOLVED
                         else "refresh workers stalled")
    if attention:
        parts.append(f"{attention} account{'s' if attention != 1 else ''} "
                     f"need{'s' if attention == 1 else ''} attention")
    if resolved:
        parts.append(f"{resolved} account{'s' if resolved != 1 else ''} recovered")
    if notices:
        parts.append(f"{len(notices)} notice{'s' if len(notices) != 1 else ''}")
    return f"{SUBJECT_PREFIX}{', '.join(parts)}"[:300]  # AlertDelivery.subject's length


_HEADINGS = {
    Kind.ALERT: "New problems",
    Kind.REMINDER: "Still unresolved (reminder)",
    Kind.RESOLVED: "Resolved",
    Kind.NOTICE: "For your information",
}


def _body(items: list[AlertItem], *, now: datetime) -> str:
    lines = [f"Account states at {utc_text(now)}.", ""]
    for kind in (Kind.ALERT, Kind.REMINDER, Kind.RESOLVED, Kind.NOTICE):
        group = [item for item in items if item.kind == kind]
        if not group:
            continue
        lines += [f"{_HEADINGS[kind]} ({len(group)}):", ""]
        for item in group:
            if item.account_id is None:
                lines += [f"* {item.label}", f"  {item.message}",
                          f"  Dashboard: {item.admin_url}", ""]
                continue
            if item.kind == Kind.NOTICE:
                username = f", @{item.username}" if item.username else ""
                lines += [f"* {item.label} — app {item.app}{username}", f"  {item.message}",
                          f"  Admin: {item.admin_url}", ""]
                continue
            state = State.LABELS.get(item.state, item.state)
            if item.previous_state:
                state += f" (was: {State.LABELS.get(item.previous_state, item.previous_state)})"
            expiry = f"{utc_text(item.expires_at)}" if item.expires_at else "no token"
            username = f"@{item.username}" if item.username else "(no username yet)"
            lines += [
                f"* {item.label} — app {item.app}, {username}",
                f"  State: {state}",
                f"  Token expires: {expiry}",
            ]
            if item.last_error:
                lines.append(f"  Last error: {item.last_error}")
            lines += [f"  Admin: {item.admin_url}", ""]
    return "\n".join(lines)
