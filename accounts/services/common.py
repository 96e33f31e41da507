"""Shared pieces of the services: errors, actors, the Instagram client, the event log."""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection

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
    """A step the staff user asked for could not be done; `message` says why (no secrets),
    `advice` what to do about it when the failure is a known one (`instagram.guidance`)."""

    def __init__(self, message: str, *, account: Account | None = None,
                 advice: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.account = account
        self.advice = advice

    @property
    def full_text(self) -> str:
        """The message followed by the advice (for events, alerts, one-line reports)."""
        return f"{self.message} {self.advice}" if self.advice else self.message


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


@dataclass(frozen=True)
class EventEntry:
    """One event to append with `events_record` (the actor and time are the batch's)."""

    account: Account | None
    action: str
    outcome: str
    message: str = ""


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
    [event] = events_record(entries=[EventEntry(account=account, action=action,
                                                outcome=outcome, message=message)],
                            actor=actor, now=now)
    return event


def events_record(*, entries: list[EventEntry], actor: Actor | None = None,
                  now: datetime) -> list[Event]:
    """Append these events to the log in one statement (and each to the application log,
    without secrets). `now` is their time (UTC)."""
    actor = actor or Actor()
    user = actor.user if actor.user is not None and actor.user.is_authenticated else None
    who = getattr(user, "username", None) or actor.job or "-"
    events = []
    for entry in entries:
        # Text from outside (Instagram's words, labels) may hold NUL, newlines or escape
        # sequences: PostgreSQL refuses NUL, and a newline would forge a log line.
        message = "".join(c if c.isprintable() else " " for c in entry.message[:2000])
        events.append(Event(
            created_at=now,
            account=entry.account,
            account_label=str(entry.account) if entry.account else "",
            action=entry.action,
            outcome=entry.outcome,
            message=message,
            actor_user=user,
            actor_job=actor.job,
        ))
        logger.info("event action=%s outcome=%s account=%s actor=%s %s", entry.action,
                    entry.outcome, entry.account.pk if entry.account else "-", who, message)
    if len(events) == 1:
        events[0].save()  # one row: the plain insert, its id read back on every database
    elif events:
        Event.objects.bulk_create(events)
    return events


def advisory_lock(*, name: bytes) -> None:
    """Hold a PostgreSQL advisory lock named `name` until the caller's transaction ends,
    so two runs of one periodic job (two workers, or a slow run meeting the next) decide
    one after the other. SQLite already admits one writer at a time."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [zlib.crc32(name)])
