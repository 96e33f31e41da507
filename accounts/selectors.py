"""Every read the admin, views, commands and tasks need."""

from __future__ import annotations

import grp
import json
import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import (
    Case,
    CharField,
    Count,
    F,
    IntegerField,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import TruncDate

from .models import (
    Account,
    AlertDelivery,
    Event,
    PendingToken,
    SweepState,
    Token,
    validate_token_filename,
)


def account_get(*, account_id: int) -> Account:
    """One account with its app and token loaded (raises Account.DoesNotExist)."""
    return Account.objects.select_related("app", "token").get(pk=account_id)


def account_find(*, key: str) -> Account:
    """An account by primary key or exact label (raises Account.DoesNotExist or
    Account.MultipleObjectsReturned)."""
    queryset = Account.objects.select_related("app", "token")
    if key.isdigit():
        return queryset.get(pk=int(key))
    return queryset.get(label=key)


def account_summary(*, account_id: int, verb: str) -> str:
    """One sentence for staff: the account, its username and when its token expires."""
    account = account_get(account_id=account_id)
    token: Token | None = getattr(account, "token", None)
    text = f"{account.label}: {verb} as @{account.username}."
    if token is not None:
        text += f" The token expires on {token.expires_at:%Y-%m-%d %H:%M} UTC."
    if account.file_error:
        text += f" {account.file_error}"
    elif account.export_enabled and account.file_written_at:
        text += f" Token file '{account.export_filename}' written."
    return text


def account_owning_filename(*, account: Account) -> Account | None:
    """Another account with a prior claim on this account's token file name.

    A name set explicitly beats a name that falls back to the username; between two
    fallbacks (the same Instagram user in two apps) the older account keeps the file."""
    name = account.export_filename
    claims = Q(token_filename=name)
    if not account.token_filename:
        claims |= Q(token_filename="", username=name, pk__lt=account.pk)
    return Account.objects.filter(claims).exclude(pk=account.pk).first()


# --- refresh policy -------------------------------------------------------------------

# Instagram refuses to refresh a token younger than this (shared/instagram-api.md, 4).
REFRESH_MIN_AGE = timedelta(hours=24)


def tokens_refreshable(*, now: datetime) -> QuerySet[Token]:
    """Long-lived tokens Instagram would accept for a refresh now: at least 24 hours old,
    not expired, of an account that is not waiting for its owner."""
    return Token.objects.filter(
        kind=Token.Kind.LONG,
        account__status__in=[Account.Status.ACTIVE, Account.Status.ERROR],
        expires_at__gt=now,
        obtained_at__lte=now - REFRESH_MIN_AGE,
    )


def tokens_due(*, now: datetime) -> QuerySet[Token]:
    """Refreshable tokens whose remaining life fell under the threshold and that are not
    backing off after a temporary failure; soonest expiry first (expires_at index)."""
    threshold = timedelta(days=settings.REFRESH_THRESHOLD_DAYS)
    return (
        tokens_refreshable(now=now)
        .filter(expires_at__lte=now + threshold)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by("expires_at")
    )


def tokens_expired_unflagged(*, now: datetime) -> QuerySet[Token]:
    """Tokens past their expiry whose account still looks alive."""
    return Token.objects.filter(
        expires_at__lte=now,
        account__status__in=[Account.Status.ACTIVE, Account.Status.ERROR],
    )


def pending_tokens(*, now: datetime) -> QuerySet[PendingToken]:
    """Short-lived tokens left by an interrupted flow that can still be swapped."""
    return PendingToken.objects.filter(expires_at__gt=now)


def pending_tokens_expired(*, now: datetime) -> QuerySet[PendingToken]:
    """Short-lived tokens that expired before their swap."""
    return PendingToken.objects.filter(expires_at__lte=now)


@dataclass(frozen=True)
class Backlog:
    """Refresh tasks handed to the broker that no worker has attempted yet.

    `queued`: how many due tokens wait for their task; `oldest_due_at`: when the longest
    waiting of them was due to start (UTC), None when none waits; `lag_seconds`: how far
    past that start time `now` is (0 when none is late)."""

    queued: int
    oldest_due_at: datetime | None
    lag_seconds: float


def refresh_backlog(*, now: datetime) -> Backlog:
    """Due tokens whose refresh task was enqueued (or scheduled for a retry) and not yet
    attempted. A marker left on a token that is no longer due (another worker or cron
    refreshed it) does not count. One aggregate query."""
    threshold = timedelta(days=settings.REFRESH_THRESHOLD_DAYS)
    row = (
        tokens_refreshable(now=now)
        .filter(refresh_queued_for__isnull=False, expires_at__lte=now + threshold)
        .aggregate(queued=Count("pk"), oldest=Min("refresh_queued_for"))
    )
    oldest = row["oldest"]
    lag = max((now - oldest).total_seconds(), 0.0) if oldest else 0.0
    return Backlog(queued=row["queued"], oldest_due_at=oldest, lag_seconds=lag)


def sweep_state() -> SweepState:
    """The single sweep bookkeeping row (created on first use)."""
    state, _ = SweepState.objects.get_or_create(pk=1)
    return state


def token_files_to_check() -> QuerySet[Account]:
    """Accounts whose long-lived token should have a file."""
    return Account.objects.filter(export_enabled=True, token__kind=Token.Kind.LONG).select_related(
        "token"
    )


# --- token files ----------------------------------------------------------------------


def token_file_content(*, account: Account, token: Token) -> str:
    """What the account's token file holds: the bare token, or a JSON document."""
    if account.export_format == Account.ExportFormat.JSON:
        document = {
            "access_token": token.value,
            "expires_at": token.expires_at.isoformat(),
            "user_id": account.ig_user_id,
            "username": account.username,
        }
        return json.dumps(document, indent=2) + "\n"
    # Exactly the token: the PHP page reads the file as-is into a URL.
    return token.value


class FileState:
    """How an account's token file compares with the database."""

    IN_SYNC = "in_sync"
    MISSING = "missing"
    STALE = "stale"  # holds another token (or format)
    WRONG_MODE = "wrong_mode"
    WRONG_GROUP = "wrong_group"
    NOT_EXPORTED = "not_exported"  # export off, no long-lived token, or no usable name

    LABELS = {
        IN_SYNC: "in sync",
        MISSING: "missing",
        STALE: "stale",
        WRONG_MODE: "wrong mode",
        WRONG_GROUP: "wrong group",
        NOT_EXPORTED: "—",
    }


def token_file_path(*, account: Account) -> Path | None:
    """Where the account's token file goes, or None without a usable name."""
    name = account.export_filename
    if not name:
        return None
    try:
        validate_token_filename(name)
    except ValidationError:
        return None
    return Path(settings.TOKEN_EXPORT_DIR) / name


def token_file_state(*, account: Account) -> str:
    """Compare the token file on disk with what the database says it should hold."""
    token = getattr(account, "token", None)
    path = token_file_path(account=account)
    if not account.export_enabled or token is None or token.kind != Token.Kind.LONG or not path:
        return FileState.NOT_EXPORTED
    try:
        info = os.stat(path)
        with open(path, encoding="utf-8") as handle:
            content = handle.read()
    except FileNotFoundError:
        return FileState.MISSING
    except (OSError, UnicodeDecodeError):
        return FileState.STALE
    if content != token_file_content(account=account, token=token):
        return FileState.STALE
    if info.st_mode & 0o7777 != settings.TOKEN_FILE_MODE:
        return FileState.WRONG_MODE
    if settings.TOKEN_FILE_GROUP:
        try:
            gid = grp.getgrnam(settings.TOKEN_FILE_GROUP).gr_gid
        except KeyError:
            return FileState.WRONG_GROUP
        if info.st_gid != gid:
            return FileState.WRONG_GROUP
    return FileState.IN_SYNC


def token_status_rows() -> list[dict]:
    """One JSON-ready row per account (token_status --json; format in README)."""
    rows = []
    accounts = Account.objects.select_related("app", "token").order_by("app__name", "label")
    for account in accounts:
        token = getattr(account, "token", None)
        path = token_file_path(account=account)
        rows.append({
            "id": account.pk,
            "app": account.app.name,
            "label": account.label,
            "username": account.username or None,
            "ig_user_id": account.ig_user_id or None,
            "status": account.status,
            "expires_at": token.expires_at.isoformat() if token else None,
            "last_refreshed_at": (token.last_refreshed_at.isoformat()
                                  if token and token.last_refreshed_at else None),
            "last_error": account.last_error or None,
            "token_file": str(path) if path and account.export_enabled else None,
            "file_state": token_file_state(account=account),
            "file_error": account.file_error or None,
        })
    return rows


# --- account states (dashboard, alerts, metrics) --------------------------------------


class State:
    """An account's state as staff see it, most urgent first."""

    EXPIRED = "expired"
    NEEDS_REAUTH = "needs_reauth"
    ERROR = "error"
    EXPIRING = "expiring"
    REFRESH_DUE = "refresh_due"
    PENDING = "pending"
    HEALTHY = "healthy"

    ORDER = [EXPIRED, NEEDS_REAUTH, ERROR, EXPIRING, REFRESH_DUE, PENDING, HEALTHY]
    LABELS = {
        EXPIRED: "Expired",
        NEEDS_REAUTH: "Needs re-authorization",
        ERROR: "Error",
        EXPIRING: "Expiring soon",
        REFRESH_DUE: "Refresh due",
        PENDING: "Waiting for authorization",
        HEALTHY: "Healthy",
    }
    # What a human must hear about (alerts).
    ALERTING = frozenset({EXPIRED, NEEDS_REAUTH, ERROR, EXPIRING})


def _state_expression(*, now: datetime) -> Case:
    expiring = now + timedelta(days=settings.ALERT_EXPIRY_DAYS)
    due = now + timedelta(days=settings.REFRESH_THRESHOLD_DAYS)
    return Case(
        When(status=Account.Status.NEEDS_REAUTH, then=Value(State.NEEDS_REAUTH)),
        When(token__isnull=True, then=Value(State.PENDING)),
        When(token__expires_at__lte=now, then=Value(State.EXPIRED)),
        When(
            Q(status=Account.Status.ERROR)
            | Q(token__refresh_failures__gte=settings.ALERT_FAILURES_THRESHOLD),
            then=Value(State.ERROR),
        ),
        When(token__expires_at__lte=expiring, then=Value(State.EXPIRING)),
        When(token__expires_at__lte=due, then=Value(State.REFRESH_DUE)),
        default=Value(State.HEALTHY),
        output_field=CharField(),
    )


def accounts_with_state(*, now: datetime) -> QuerySet[Account]:
    """Accounts annotated with `state`, `urgency` (0 = most urgent) and the outcome and
    time of their last refresh attempt; ordered most urgent first, then soonest expiry.
    One query however many accounts there are."""
    last_refresh = Event.objects.filter(account=OuterRef("pk"), action="refresh").order_by(
        "-created_at", "-id"
    )
    urgency = Case(
        *[When(state=value, then=Value(i)) for i, value in enumerate(State.ORDER)],
        output_field=IntegerField(),
    )
    return (
        Account.objects.select_related("app", "token")
        .annotate(state=_state_expression(now=now))
        .annotate(
            urgency=urgency,
            last_refresh_outcome=Subquery(last_refresh.values("outcome")[:1]),
            last_refresh_at=Subquery(last_refresh.values("created_at")[:1]),
        )
        .order_by("urgency", F("token__expires_at").asc(nulls_last=True), "label")
    )


def state_counts(*, now: datetime, queryset: QuerySet[Account] | None = None) -> dict[str, int]:
    """How many accounts are in each state (every state present, zero or not)."""
    queryset = queryset if queryset is not None else Account.objects.all()
    rows = (
        queryset.annotate(state=_state_expression(now=now))
        .values("state")
        .annotate(n=Count("pk"))
        .order_by()
    )
    counts = dict.fromkeys(State.ORDER, 0)
    counts.update({row["state"]: row["n"] for row in rows})
    return counts


def next_refresh_at(*, token: Token | None, now: datetime) -> datetime | None:
    """When the sweep will next try to refresh this token (None: never, it is dead)."""
    if token is None or token.kind != Token.Kind.LONG or token.expires_at <= now:
        return None
    threshold = timedelta(days=settings.REFRESH_THRESHOLD_DAYS)
    candidates = [token.obtained_at + REFRESH_MIN_AGE, token.expires_at - threshold, now]
    if token.next_attempt_at:
        candidates.append(token.next_attempt_at)
    when = max(candidates)
    return when if when < token.expires_at else None


def expiry_timeline(*, now: datetime, days: int = 60, queryset: QuerySet[Account] | None = None
                    ) -> list[tuple[date, int]]:
    """How many tokens expire on each of the next `days` days (zeros included)."""
    queryset = queryset if queryset is not None else Account.objects.all()
    rows = (
        Token.objects.filter(account__in=queryset.values("pk"), expires_at__gt=now,
                             expires_at__lte=now + timedelta(days=days))
        .annotate(day=TruncDate("expires_at"))
        .values("day")
        .annotate(n=Count("pk"))
        .order_by()
    )
    per_day = {row["day"]: row["n"] for row in rows}
    start = now.date()
    return [(start + timedelta(days=i), per_day.get(start + timedelta(days=i), 0))
            for i in range(days + 1)]


def earliest_expiry(*, now: datetime) -> datetime | None:
    """The soonest expiry among live tokens (for metrics)."""
    return (
        Token.objects.filter(expires_at__gt=now, account__status__in=[
            Account.Status.ACTIVE, Account.Status.ERROR])
        .order_by("expires_at").values_list("expires_at", flat=True).first()
    )


def refresh_outcome_counts() -> dict[str, int]:
    """Refresh attempts ever made, by outcome (the event log is append-only)."""
    rows = Event.objects.filter(action="refresh").values("outcome").annotate(n=Count("pk"))
    return {row["outcome"]: row["n"] for row in rows.order_by()}


# --- alert outbox ---------------------------------------------------------------------


def alert_deliveries_due(*, now: datetime) -> QuerySet[AlertDelivery]:
    """Alert deliveries to send now: neither delivered nor abandoned, their next attempt
    reached; oldest first."""
    return AlertDelivery.objects.filter(
        delivered_at__isnull=True, abandoned_at__isnull=True, next_attempt_at__lte=now
    ).order_by("created_at", "id")


@dataclass(frozen=True)
class DeliveryCounts:
    """One channel's alert deliveries: delivered and abandoned ones, failed attempts (of
    every delivery, delivered ones included) and those still waiting to be sent."""

    delivered: int = 0
    abandoned: int = 0
    failed_attempts: int = 0
    pending: int = 0


def alert_delivery_counts() -> dict[str, DeliveryCounts]:
    """DeliveryCounts per channel, every channel present (for metrics). One query.

    A delivered row's last attempt is its one success, so its other attempts failed;
    every attempt of the other rows failed."""
    rows = (
        AlertDelivery.objects.values("channel")
        .annotate(
            delivered=Count("pk", filter=Q(delivered_at__isnull=False)),
            abandoned=Count("pk", filter=Q(abandoned_at__isnull=False)),
            pending=Count("pk", filter=Q(delivered_at__isnull=True, abandoned_at__isnull=True)),
            attempts=Sum("attempts"),
        )
        .order_by()
    )
    counts = {channel: DeliveryCounts() for channel in AlertDelivery.Channel.values}
    for row in rows:
        counts[row["channel"]] = DeliveryCounts(
            delivered=row["delivered"],
            abandoned=row["abandoned"],
            failed_attempts=(row["attempts"] or 0) - row["delivered"],
            pending=row["pending"],
        )
    return counts
