"""The alert outbox: send the `AlertDelivery` rows `alerts_dispatch` wrote, retry the ones
that failed with back-off, and give up on one after ALERT_DELIVERY_MAX_ATTEMPTS.

Each delivery is sent inside its own transaction that holds its row lock, taken with
SKIP LOCKED: a second run at the same moment passes over a delivery being sent instead of
sending it again, and a process that dies in the middle leaves the row as it was, due, for
the next run. Delivery is therefore at least once: a webhook receiver that took the body
but answered too late gets the very same bytes and `webhook-id` again (signed anew with
that attempt's timestamp) and can drop them.

Rows are kept once delivered or abandoned: /metrics counts its delivery counters from them,
and a counter must never go down (a few rows a day at most).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db import transaction
from django.utils import timezone

from .. import selectors
from ..models import AlertDelivery, Event, OutboxDelivery
from .common import Actor, event_record
from .signing import standard_webhook_headers, webhook_post

logger = logging.getLogger(__name__)

ACTOR = Actor(job="alerts")
WEBHOOK_TIMEOUT_SECONDS = 5.0
# Django's SMTP backend waits forever by default (EMAIL_TIMEOUT = None); a hung mail server
# must not hold the task past its next run.
MAIL_TIMEOUT_SECONDS = 30.0
SIGNATURE_HEADER = "X-Igregistry-Signature"
SUBJECT_PREFIX = "[igregistry] "
_LAST_ERROR_CHARS = 300  # AlertDelivery.last_error's length


@dataclass
class DeliveryReport:
    """The channel of each delivery a run sent, each that failed (and will be retried),
    and each it gave up on; one entry per delivery, oldest first."""

    delivered: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)


def webhook_signature(*, body: bytes, secret: str) -> str:
    """The X-Igregistry-Signature value for `body`: "sha256=" and the hex HMAC-SHA256 of
    exactly these bytes keyed with `secret`. Receivers recompute it over the raw request
    body and compare with `hmac.compare_digest`."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def alert_retry_delay(*, attempts: int) -> timedelta:
    """How long a delivery that has failed `attempts` times waits before its next try:
    ALERT_RETRY_BASE_SECONDS doubling per failure, capped at ALERT_RETRY_MAX_SECONDS,
    with jitter (between half and all of that)."""
    base = settings.ALERT_RETRY_BASE_SECONDS * 2 ** max(attempts - 1, 0)
    capped = min(base, settings.ALERT_RETRY_MAX_SECONDS)
    return timedelta(seconds=random.uniform(capped / 2, capped))


def alert_deliveries_send(*, now: datetime) -> DeliveryReport:
    """Send every delivery that is due (not delivered, not abandoned, `next_attempt_at`
    reached), oldest first, and record each outcome on its row and in the event log.

    Success sets `delivered_at`. A failure counts the attempt, stores the kind of error
    (never the webhook URL, which can carry a key) and sets the next attempt after a
    back-off; the attempt that reaches ALERT_DELIVERY_MAX_ATTEMPTS abandons the delivery
    and logs an ERROR. Once a channel fails, its other due deliveries wait for the next
    run: a dead mail server costs one timeout per run, not one per waiting message.
    Call it outside any transaction: each delivery commits on its own."""
    report = DeliveryReport()
    tried: list[int] = []
    failing: list[str] = []
    while True:
        with transaction.atomic():
            # The row lock spans the network call: SKIP LOCKED makes a concurrent run
            # take the next delivery instead of this one (or none), never the same.
            delivery = (
                selectors.alert_deliveries_due(now=now)
                .exclude(pk__in=tried)
                .exclude(channel__in=failing)
                .select_for_update(skip_locked=True)
                .first()
            )
            if delivery is None:
                return report
            tried.append(delivery.pk)
            error = _SENDERS[delivery.channel](delivery=delivery)
            outcome = _record(delivery=delivery, error=error, now=now)
        getattr(report, outcome).append(delivery.channel)
        if error is not None:
            failing.append(delivery.channel)


def delivery_attempt_record(*, delivery: OutboxDelivery, error: str | None,
                            now: datetime) -> str:
    """Count one attempt on an outbox row (an alert or a change webhook, locked by the
    caller) and save it: delivered (`error` None), abandoned (the attempt that reaches
    ALERT_DELIVERY_MAX_ATTEMPTS), or failed with its next attempt after the back-off and
    the kind of error kept. Returns "delivered", "abandoned" or "failed"."""
    delivery.attempts += 1
    if error is None:
        delivery.delivered_at = now
        outcome = "delivered"
    elif delivery.attempts >= settings.ALERT_DELIVERY_MAX_ATTEMPTS:
        delivery.abandoned_at = now
        outcome = "abandoned"
    else:
        delivery.next_attempt_at = now + alert_retry_delay(attempts=delivery.attempts)
        outcome = "failed"
    if error is not None:
        delivery.last_error = error[:_LAST_ERROR_CHARS]
    delivery.save(update_fields=["attempts", "delivered_at", "abandoned_at",
                                 "next_attempt_at", "last_error"])
    return outcome


def _record(*, delivery: AlertDelivery, error: str | None, now: datetime) -> str:
    """Write the attempt's outcome on the (locked) row; return the report list it goes to."""
    outcome = delivery_attempt_record(delivery=delivery, error=error, now=now)
    summary = delivery.subject.removeprefix(SUBJECT_PREFIX) or "alerts"
    attempt = f"attempt {delivery.attempts} of {settings.ALERT_DELIVERY_MAX_ATTEMPTS}"
    if outcome == "delivered":
        result = Event.Outcome.OK
        message = f"Sent by {delivery.channel} ({attempt}): {summary}."
    elif outcome == "abandoned":
        result = Event.Outcome.FAILED
        message = (f"Gave up sending by {delivery.channel} ({error}, {attempt}): "
                   f"{summary} not delivered.")
        logger.error("alerts: %s", message)
    else:
        result = Event.Outcome.FAILED
        message = (f"Could not send by {delivery.channel} ({error}, {attempt}); next try "
                   f"after {delivery.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC: {summary}.")
        logger.warning("alerts: %s", message)
    event_record(account=None, action="alert", outcome=result, message=message,
                 actor=ACTOR, now=now)
    return outcome


# --- channels: each returns why it failed (the kind of error only), or None ------------


def _send_email(*, delivery: AlertDelivery) -> str | None:
    if not settings.ALERT_EMAILS:
        return "ALERT_EMAILS is empty"
    message = EmailMessage(
        subject=delivery.subject,
        body=delivery.body,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=list(settings.ALERT_EMAILS),
        connection=get_connection(timeout=settings.EMAIL_TIMEOUT or MAIL_TIMEOUT_SECONDS),
    )
    try:
        message.send()
    except Exception as exc:  # SMTP, socket and backend errors alike: report, do not raise
        # The class name only: SMTP error texts can quote credentials.
        return type(exc).__name__
    return None


def _send_webhook(*, delivery: AlertDelivery) -> str | None:
    url, secret = settings.ALERT_WEBHOOK_URL, settings.ALERT_WEBHOOK_SECRET
    if not url:
        return "ALERT_WEBHOOK_URL is not set"
    if not secret:
        # Settings refuse this combination at start-up; never send an unsigned body anyway.
        return "ALERT_WEBHOOK_SECRET is not set"
    # The stored text: the signatures cover exactly the bytes that are sent, the same
    # bytes at every attempt. Standard Webhooks headers (`signing`), with the delivery's
    # id as `webhook-id` so a receiver drops a repeat; and, for receivers set up before
    # them, the registry's own X-Igregistry-Signature.
    headers = {
        **standard_webhook_headers(msg_id=f"alert_{delivery.pk}", body=delivery.body,
                                   secret=secret, now=timezone.now()),
        SIGNATURE_HEADER: webhook_signature(body=delivery.body.encode(), secret=secret),
    }
    return webhook_post(url=url, body=delivery.body, headers=headers,
                        timeout=WEBHOOK_TIMEOUT_SECONDS)


_SENDERS: dict[str, Callable[..., str | None]] = {
    AlertDelivery.Channel.EMAIL: _send_email,
    AlertDelivery.Channel.WEBHOOK: _send_webhook,
}
