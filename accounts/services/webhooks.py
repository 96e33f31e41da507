"""Change webhooks: each consumer (an API key with a webhook URL) is told, once per change,
that a token it may read changed, so it can fetch it again from the token API. Signed and
posted as the alert webhook is (`signing`).

Both follow the Standard Webhooks convention (https://www.standardwebhooks.com/): headers
`webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature` ("v1," and the
base64 HMAC-SHA256 of "<id>.<timestamp>.<body>"), made with the `standardwebhooks`
library, so a consumer verifies them with that library in its own language. The body is
JSON `{"type", "timestamp", "data"}` and holds no token.

Changes are found by comparing a fingerprint of each token row the key may read (which
token, its expiry, the account's status) with the one last announced (`WebhookState`):
one place that sees every change, whichever path made it (authorize, refresh, import,
deauthorize). Deliveries are an outbox (`WebhookDelivery`), sent and retried like alerts,
at least once: a repeat has the same `webhook-id`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from ..models import Account, ApiKey, Event, WebhookDelivery, WebhookState
from .alert_outbox import DeliveryReport, delivery_attempt_record
from .common import Actor, advisory_lock, event_record
from .signing import new_msg_id, standard_webhook_headers, webhook_post

logger = logging.getLogger(__name__)

ACTOR = Actor(job="webhooks")
TIMEOUT_SECONDS = 5.0
TOKEN_CHANGED = "token.changed"
_LOCK_NAME = b"igregistry.token_changes_queue"


# --- finding changes ------------------------------------------------------------------


def _fingerprint(row: dict) -> str:
    text = "|".join(str(row[k]) for k in ("token__pk", "token__obtained_at",
                                          "token__expires_at", "token__last_refreshed_at",
                                          "status"))
    return hashlib.sha256(text.encode()).hexdigest()


def token_changes_queue(*, now: datetime) -> int:
    """Queue a `token.changed` delivery to every consumer whose key may read an account
    whose token row changed since it was last told (a new token, a refresh, a new status,
    the token gone). An account a key sees for the first time is announced only if it was
    added after the key (a new account of a key's app); the others the consumer fetched
    when it started. One run at a time (an advisory lock on PostgreSQL), so two runs never
    announce one change twice. Returns the number of deliveries queued."""
    queued = 0
    with transaction.atomic():
        advisory_lock(name=_LOCK_NAME)
        keys = ApiKey.objects.filter(revoked_at__isnull=True).exclude(webhook_url="")
        for key in keys.prefetch_related("accounts", "apps"):
            in_scope = Account.objects.filter(Q(pk__in=[a.pk for a in key.accounts.all()])
                                              | Q(app__in=[a.pk for a in key.apps.all()]))
            rows = in_scope.values("pk", "status", "created_at", "token__pk",
                                   "token__obtained_at", "token__expires_at",
                                   "token__last_refreshed_at")
            known = dict(WebhookState.objects.filter(api_key=key)
                         .values_list("account_id", "fingerprint"))
            for row in rows:
                fingerprint = _fingerprint(row)
                if known.get(row["pk"]) == fingerprint:
                    continue
                WebhookState.objects.update_or_create(
                    api_key=key, account_id=row["pk"],
                    defaults={"fingerprint": fingerprint, "changed_at": now})
                if row["pk"] in known or row["created_at"] > key.created_at:
                    _queue(key=key, row=row, now=now)
                    queued += 1
    return queued


def _queue(*, key: ApiKey, row: dict, now: datetime) -> None:
    api_url = settings.SITE_URL.rstrip("/") + reverse("api-token", args=[row["pk"]])
    expires_at = row["token__expires_at"]
    body = {
        "type": TOKEN_CHANGED,
        "timestamp": now.isoformat(),
        "data": {
            "account": row["pk"],
            "status": row["status"],
            "has_token": row["token__pk"] is not None,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "url": api_url,
        },
    }
    WebhookDelivery.objects.create(
        api_key=key, account_id=row["pk"], msg_id=new_msg_id(), event_type=TOKEN_CHANGED,
        body=json.dumps(body, separators=(",", ":")), created_at=now, next_attempt_at=now)


# --- sending ------------------------------------------------------------------------


# What a run did, by consumer name: the alert outbox's report.
WebhookReport = DeliveryReport


def webhook_deliveries_send(*, now: datetime) -> WebhookReport:
    """Send every due delivery (oldest first), one transaction each holding its row lock
    (SKIP LOCKED: a concurrent run takes another). A consumer that fails waits for the
    next run, so a dead endpoint costs one timeout per run; others are not held up.
    Failures are retried after ALERT_RETRY_* back-off, abandoned at
    ALERT_DELIVERY_MAX_ATTEMPTS (an event, an ERROR line). Call outside a transaction."""
    report = WebhookReport()
    tried: list[int] = []
    failing: list[int] = []
    while True:
        with transaction.atomic():
            delivery = (
                WebhookDelivery.objects.filter(delivered_at__isnull=True,
                                               abandoned_at__isnull=True,
                                               next_attempt_at__lte=now)
                .exclude(pk__in=tried).exclude(api_key__in=failing)
                .select_related("api_key", "account").order_by("created_at", "pk")
                .select_for_update(skip_locked=True, of=("self",)).first()
            )
            if delivery is None:
                return report
            tried.append(delivery.pk)
            error = _post(delivery=delivery)
            outcome = _record(delivery=delivery, error=error, now=now)
        getattr(report, outcome).append(delivery.api_key.name)
        if error is not None:
            failing.append(delivery.api_key_id)


def _post(*, delivery: WebhookDelivery) -> str | None:
    key = delivery.api_key
    if key.revoked_at is not None:  # revoked while this run was sending
        return "the key was revoked"
    # Signed as it leaves, not when the run began: a consumer checks the timestamp.
    headers = standard_webhook_headers(msg_id=delivery.msg_id, body=delivery.body,
                                       secret=key.webhook_secret, now=timezone.now())
    return webhook_post(url=key.webhook_url, body=delivery.body, headers=headers,
                        timeout=TIMEOUT_SECONDS)


def _record(*, delivery: WebhookDelivery, error: str | None, now: datetime) -> str:
    outcome = delivery_attempt_record(delivery=delivery, error=error, now=now)
    attempt = f"attempt {delivery.attempts} of {settings.ALERT_DELIVERY_MAX_ATTEMPTS}"
    who = f"key {delivery.api_key}"
    if outcome == "delivered":
        result, message = Event.Outcome.OK, f"Change webhook delivered to {who} ({attempt})."
    elif outcome == "abandoned":
        result = Event.Outcome.FAILED
        message = f"Gave up the change webhook to {who} ({error}, {attempt})."
        logger.error("webhooks: %s", message)
    else:
        result = Event.Outcome.FAILED
        message = (f"Change webhook to {who} failed ({error}, {attempt}); next try after "
                   f"{delivery.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC.")
        logger.warning("webhooks: %s", message)
    event_record(account=delivery.account, action="webhook", outcome=result, message=message,
                 actor=ACTOR, now=now)
    return outcome


def token_webhooks_dispatch(*, now: datetime) -> tuple[int, WebhookReport]:
    """One run of the `send_webhooks` task: queue what changed, then send what is due."""
    queued = token_changes_queue(now=now)
    return queued, webhook_deliveries_send(now=now)
