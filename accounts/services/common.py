"""Shared pieces of the services: errors, actors, the Instagram client, the event log."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser

from .. import instagram
from ..instagram import InstagramClient
from ..models import Account, Event

logger = logging.getLogger(__name__)

# A long-lived token lives 60 days (shared/instagram-api.md, section 3).
LONG_LIVED_LIFETIME = timedelta(days=60)
# Said in the event when Instagram's answer carried a token but no usable expiry: the token
# is kept (it may have replaced the old one) with the documented 60 days.
ASSUMED_EXPIRY_NOTE = (" Instagram's answer gave no usable expiry: the documented 60 days are "
                       "assumed.")


class FlowError(Exception):
    """A step the staff user asked for could not be done; `message` says why (no secrets)."""

    def __init__(self, message: str, *, account: Account | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.account = account


@dataclass(frozen=True)
class Actor:
    """Who did it: a staff user, or a named job (task or command)."""

    user: AbstractBaseUser | None = None
    job: str = ""


# --- plumbing -------------------------------------------------------------------------


def instagram_client() -> InstagramClient:
    """The Instagram client for the configured hosts (one session per process)."""
    return _client_for(
        settings.INSTAGRAM_API_URL,
        settings.INSTAGRAM_WWW_URL,
        settings.INSTAGRAM_GRAPH_URL,
        settings.INSTAGRAM_CONNECT_TIMEOUT,
        settings.INSTAGRAM_READ_TIMEOUT,
        settings.INSTAGRAM_DEADLINE_SECONDS,
    )


@lru_cache(maxsize=4)
def _client_for(api: str, www: str, graph: str, connect: float, read: float,
                deadline: float) -> InstagramClient:
    return InstagramClient(
        api_url=api, www_url=www, graph_url=graph, connect_timeout=connect, read_timeout=read,
        deadline=deadline,
    )


def profile_fields(flavour: str) -> tuple[str, ...]:
    """The /me fields to ask for: `user_id` exists only in the Instagram Login flavour."""
    if flavour == instagram.Flavour.INSTAGRAM_LOGIN:
        return ("id", "user_id", "username")
    return ("id", "username")


def event_record(
    *,
    account: Account | None,
    action: str,
    outcome: str,
    message: str = "",
    actor: Actor | None = None,
    now: datetime,
) -> Event:
    """Append one event to the log (and to the application log, without secrets)."""
    actor = actor or Actor()
    # Text from outside (Instagram's words, labels) may hold NUL, newlines or escape
    # sequences: PostgreSQL refuses NUL, and a newline would forge a log line.
    message = "".join(c if c.isprintable() else " " for c in message[:2000])
    user = actor.user if actor.user is not None and actor.user.is_authenticated else None
    event = Event.objects.create(
        created_at=now,
        account=account,
        account_label=str(account) if account else "",
        action=action,
        outcome=outcome,
        message=message[:2000],
        actor_user=user,
        actor_job=actor.job,
    )
    logger.info(
        "event action=%s outcome=%s account=%s actor=%s %s",
        action,
        outcome,
        account.pk if account else "-",
        getattr(user, "username", None) or actor.job or "-",
        message,
    )
    return event

