"""API keys for the token API: created (the key shown once), revoked, and each read of a
token recorded, without the token."""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

from ..models import Account, ApiKey, Event, InstagramApp, WebhookDelivery
from ..selectors.api import KEY_PREFIX, api_key_hash
from .common import Actor, FlowError, event_record

logger = logging.getLogger(__name__)

# `last_used_at` is written at most this often per key: a poller every few seconds must
# not turn every read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def api_key_create(
    *,
    name: str,
    accounts: Iterable[Account] = (),
    apps: Iterable[InstagramApp] = (),
    webhook_url: str = "",
    user: AbstractBaseUser | None,
    now: datetime,
) -> tuple[ApiKey, str, str]:
    """Create a key scoped to these accounts and apps. Returns the key row, the key
    itself ("igr_" and 43 URL-safe characters) and the change-webhook secret
    ("whsec_" and base64, the Standard Webhooks form; "" without a webhook URL); both
    are shown once and stored only as a hash and encrypted, respectively. Raises
    FlowError without a scope or with a name in use."""
    accounts, apps = list(accounts), list(apps)
    if not accounts and not apps:
        raise FlowError("Give the key at least one account or app it may read.")
    if ApiKey.objects.filter(name=name).exists():
        raise FlowError(f"There is already a key named {name!r}.")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    webhook_secret = ""
    if webhook_url:
        webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    with transaction.atomic():
        row = ApiKey.objects.create(
            name=name, prefix=key[:12], key_hash=api_key_hash(key), webhook_url=webhook_url,
            webhook_secret=webhook_secret, created_by=user, created_at=now,
        )
        row.accounts.set(accounts)
        row.apps.set(apps)
        event_record(account=None, action="api_key_create", outcome=Event.Outcome.OK,
                     message=f"API key {row} created for {_scope_text(row)}.",
                     actor=Actor(user=user), now=now)
    return row, key, webhook_secret


def api_key_revoke(*, key: ApiKey, user: AbstractBaseUser, now: datetime) -> bool:
    """Revoke the key at once (its next call gets 401). Returns False if it already was."""
    with transaction.atomic():
        changed = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
            revoked_at=now, revoked_by=user)
        if changed:
            # Its consumer is no longer one: change webhooks still queued are dropped.
            WebhookDelivery.objects.filter(
                api_key=key, delivered_at__isnull=True, abandoned_at__isnull=True
            ).update(abandoned_at=now, last_error="the key was revoked")
            event_record(account=None, action="api_key_revoke", outcome=Event.Outcome.OK,
                         message=f"API key {key} revoked.", actor=Actor(user=user), now=now)
    return bool(changed)


def api_read_record(*, key: ApiKey, account: Account, now: datetime) -> None:
    """Record that `key` was given the account's token: an event (which key, never the
    token) and the key's `last_used_at`."""
    event_record(account=account, action="api_read", outcome=Event.Outcome.OK,
                 message=f"Token read through the API by key {key}.",
                 actor=Actor(job=f"api:{key.prefix}"), now=now)
    api_key_touch(key=key, now=now)


def api_key_touch(*, key: ApiKey, now: datetime) -> None:
    """Set the key's `last_used_at` (at most once per LAST_USED_RESOLUTION)."""
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)


def _scope_text(key: ApiKey) -> str:
    parts = [f"account '{a.label}'" for a in key.accounts.all()]
    parts += [f"every account of app '{a.name}'" for a in key.apps.all()]
    return ", ".join(parts)
