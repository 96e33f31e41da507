"""Every read the admin, views, commands and tasks need."""

from __future__ import annotations

import grp
import json
import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import (
    Case,
    CharField,
    Count,
    DateField,
    Exists,
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
from django.db.models.functions import Lower, TruncDate

from ..crypto import DecryptionError
from ..identity import InstagramIds
from ..models import (
    Account,
    AlertDelivery,
    Event,
    InstagramApp,
    PendingToken,
    SweepState,
    Token,
    TokenFile,
    WebhookDelivery,
    validate_token_filename,
)
from ..timeutil import utc_text
from .meta_callbacks import (  # noqa: F401  (re-exported: every read is selectors.<name>)
    MetaCallbackUrls,
    account_last_granted_at,
    data_deletion_request_find,
    data_deletion_status_url,
    instagram_app_for_callback,
    meta_callback_urls,
)
from .onboarding import (  # noqa: F401  (the onboarding reads, re-exported)
    MetaSetup,
    OnboardingStep,
    account_onboarding,
    account_role_confirmation,
    callback_url,
    meta_dashboard_url,
    meta_setup,
)
from .owner_links import (  # noqa: F401  (the owner links' reads, re-exported)
    OWNER_LINK_PARAM,
    OwnerLinkState,
    oauth_state_of_owner_link,
    owner_link_completes_here,
    owner_link_find,
    owner_link_state,
    owner_link_url,
    owner_links_with_state,
    owner_page_account,
    secret_hash,
)


def account_get(*, account_id: int) -> Account:
    """One account with its app and token loaded (raises Account.DoesNotExist)."""
    return Account.objects.select_related("app", "token").get(pk=account_id)


def account_find(*, key: str) -> Account:
    """An account by primary key or exact label (raises Account.DoesNotExist or
    Account.MultipleObjectsReturned)."""
    queryset = Account.objects.select_related("app", "token")
    if key.isascii() and key.isdigit():
        return queryset.get(pk=int(key))
    return queryset.get(label=key)


def accounts_of_instagram_user(*, app_id: int, instagram_id: str) -> QuerySet[Account]:
    """The app's accounts that know `instagram_id` under any of their three ids (/me's
    `id` and `user_id`, the code exchange's `user_id`): whom a signed_request from Meta,
    which names one id, is about. Usually one account; empty for an unknown id."""
    return accounts_of_instagram_ids(app_id=app_id, instagram_ids=[instagram_id])


def accounts_of_instagram_ids(*, app_id: int,
                              instagram_ids: Collection[str]) -> QuerySet[Account]:
    """The app's accounts that know any of `instagram_ids` under any of their three ids,
    in one query; empty when no id is given (empty ids are ignored)."""
    ids = sorted({i for i in instagram_ids if i})
    if not ids:
        return Account.objects.none()
    return Account.objects.filter(
        Q(ig_id__in=ids) | Q(ig_user_id__in=ids) | Q(ig_exchange_user_id__in=ids),
        app_id=app_id,
    )


def account_instagram_ids(account: Account) -> InstagramIds:
    """The ids the registry knows for the account."""
    return InstagramIds(id=account.ig_id, user_id=account.ig_user_id,
                        exchange_user_id=account.ig_exchange_user_id)


@dataclass(frozen=True)
class AccountSummary:
    """What staff are told after authorizing or importing: `text`, and whether the token
    file serves the website (`file_ok` False: show it as a warning, never a success)."""

    text: str
    file_ok: bool


def account_summary(*, account_id: int, verb: str) -> AccountSummary:
    """The account, its username, when its token expires (UTC) and its token file."""
    account = account_get(account_id=account_id)
    token: Token | None = getattr(account, "token", None)
    text = f"{account.label}: {verb} as @{account.username}."
    if token is not None:
        text += f" The token expires on {utc_text(token.expires_at)}."
    file_ok = True
    if account.export_enabled and token is not None and token.kind == Token.Kind.LONG:
        if account.file_error or account.file_state in FileState.PROBLEMS:
            file_ok = False
            text += " " + (account.file_error or "The token file is "
                           f"{FileState.LABELS[account.file_state]}.")
        elif account.file_written_at:
            text += f" Token file '{token_file_name(account=account)}' written."
    return AccountSummary(text=text, file_ok=file_ok)


def token_file_current(*, account: Account) -> TokenFile | None:
    """The token file the account owns now (None before its first export)."""
    return TokenFile.objects.filter(account=account, status=TokenFile.Status.CURRENT).first()


def token_files_current_for(*, accounts: list[Account]) -> dict[int, TokenFile]:
    """The current token file of each of these accounts, by account id (one query)."""
    files = TokenFile.objects.filter(
        account__in=[a.pk for a in accounts], status=TokenFile.Status.CURRENT
    )
    return {record.account_id: record for record in files}


def token_file_name(*, account: Account) -> str:
    """The name the account's token file has or will have ('' when it has none yet).

    An explicit *token file name* wins. Otherwise the name claimed at the first export
    stays, whatever Instagram later says the username is: the website reads that file.
    Before any export, the Instagram username."""
    if account.token_filename:
        return account.token_filename
    return token_file_name_given(account=account, current=token_file_current(account=account))


def token_file_name_given(*, account: Account, current: TokenFile | None) -> str:
    """`token_file_name` when the account's current file record is already loaded."""
    return token_file_name_of(account=account,
                              current_name=current.name if current is not None else None)


def token_file_name_of(*, account: Account, current_name: str | None) -> str:
    """`token_file_name` when the name of the account's current file (None: it has no
    file yet) is already known."""
    if account.token_filename:
        return account.token_filename
    return current_name if current_name is not None else account.username


def current_file_name_expression() -> Subquery:
    """For `.annotate(current_file_name=...)`: the name of the account's current token
    file, None before its first export (a subquery, no query of its own)."""
    return Subquery(
        TokenFile.objects.filter(account=OuterRef("pk"), status=TokenFile.Status.CURRENT)
        .order_by().values("name")[:1]  # at most one (a unique constraint)
    )


def token_file_blocker(*, account: Account, name: str) -> TokenFile | None:
    """The record of another account (or of a deleted one) that owns `name`, if any.
    `account` may be unsaved (an account being added): then any owner blocks."""
    records = TokenFile.objects.filter(name=name).select_related("account")
    if account.pk is not None:
        records = records.filter(Q(account__isnull=True) | ~Q(account=account))
    return records.first()


def token_files_orphaned() -> QuerySet[TokenFile]:
    """Files no account writes any more: renamed away, or left by a deleted account."""
    return TokenFile.objects.filter(
        Q(status=TokenFile.Status.ORPHANED) | Q(account__isnull=True)
    )


# --- refresh policy -------------------------------------------------------------------

# Instagram refuses to refresh a token younger than this (shared/instagram-api.md, 4).
REFRESH_MIN_AGE = timedelta(hours=24)


def tokens_refreshable(*, now: datetime, claim: str = "") -> QuerySet[Token]:
    """Long-lived tokens Instagram would accept for a refresh now: at least 24 hours old,
    not expired, of an account that is not waiting for its owner, and not being refreshed
    by a worker right now (no live claim, unless it is `claim`: the same task, delivered
    again after its worker died)."""
    # The account's status is read per token (a subquery on the account's primary key),
    # not through a join: PostgreSQL would hash-join every account to find the few due
    # tokens' (at 100,000 accounts, a 22 ms sequential scan; README, "Refresh benchmark").
    account_status = Subquery(
        Account.objects.filter(pk=OuterRef("account_id")).order_by().values("status")[:1]
    )
    return Token.objects.alias(account_status=account_status).filter(
        kind=Token.Kind.LONG,
        account_status__in=[Account.Status.ACTIVE, Account.Status.ERROR],
        expires_at__gt=now,
        obtained_at__lte=now - REFRESH_MIN_AGE,
    ).filter(Q(refresh_claimed_until__isnull=True) | Q(refresh_claimed_until__lte=now)
             | (Q(refresh_claim=claim) if claim else Q(pk__in=[])))


def tokens_claimed(*, now: datetime) -> QuerySet[Token]:
    """Tokens a worker or run is refreshing right now (a live claim)."""
    return Token.objects.filter(refresh_claimed_until__gt=now)


def tokens_due_pages(*, now: datetime, size: int) -> Iterator[list[int]]:
    """The account ids of `tokens_due`, `size` at a time, soonest expiry first: one query
    read through the expires_at index and fetched `size` rows at a time (a server-side
    cursor on PostgreSQL), so memory stays flat however many are due."""
    page: list[int] = []
    for account_id in tokens_due(now=now).values_list("account_id", flat=True).iterator(
            chunk_size=size):
        page.append(account_id)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page


def tokens_due(*, now: datetime, claim: str = "") -> QuerySet[Token]:
    """Refreshable tokens whose remaining life fell under the threshold and that are not
    backing off after a temporary failure, nor held after a failure no retry can fix
    (staff's *Refresh now* still tries those); soonest expiry first (expires_at index)."""
    threshold = timedelta(days=settings.REFRESH_THRESHOLD_DAYS)
    return (
        tokens_refreshable(now=now, claim=claim)
        .filter(expires_at__lte=now + threshold, refresh_held_since__isnull=True)
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
    """Due refreshes no worker has attempted.

    `queued`: due tokens whose task was handed to the broker and not yet attempted;
    `oldest_due_at`: when the longest waiting of them was due to start (UTC), None when
    none waits; `lag_seconds`: how far past that start `now` is (0 when none is late);
    `unattended`: due tokens that no sweep has even queued for longer than a sweep
    interval plus the lag bound (beat sweeps but no worker runs the sweep, or nothing
    sweeps at all)."""

    queued: int
    oldest_due_at: datetime | None
    lag_seconds: float
    unattended: int = 0


def refresh_backlog(*, now: datetime) -> Backlog:
    """Due tokens whose refresh task was enqueued (or scheduled for a retry) and not yet
    attempted, and due tokens left unqueued for too long. A marker left on a token that is
    no longer due (another worker or cron refreshed it) does not count; nothing counts as
    unattended while a rate-limit pause holds. Two aggregate queries."""
    threshold = timedelta(days=settings.REFRESH_THRESHOLD_DAYS)
    row = (
        tokens_refreshable(now=now)
        .filter(refresh_queued_for__isnull=False, expires_at__lte=now + threshold)
        .aggregate(queued=Count("pk"), oldest=Min("refresh_queued_for"))
    )
    oldest = row["oldest"]
    lag = max((now - oldest).total_seconds(), 0.0) if oldest else 0.0
    unattended = 0
    if refresh_paused_until(now=now) is None:
        # Due since before the cutoff: every reason it became due lies before it.
        cutoff = now - timedelta(minutes=settings.REFRESH_SWEEP_MINUTES
                                 + settings.REFRESH_QUEUE_MAX_LAG_MINUTES)
        unattended = (
            tokens_due(now=now)
            .filter(refresh_queued_for__isnull=True, expires_at__lt=cutoff + threshold,
                    obtained_at__lt=cutoff - REFRESH_MIN_AGE)
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lt=cutoff))
            .order_by()
            .count()
        )
    return Backlog(queued=row["queued"], oldest_due_at=oldest, lag_seconds=lag,
                   unattended=unattended)


def sweep_state() -> SweepState:
    """The single sweep bookkeeping row (created on first use)."""
    state, _ = SweepState.objects.get_or_create(pk=1)
    return state


def refresh_paused_until(*, now: datetime) -> datetime | None:
    """The end (UTC) of the rate-limit pause Instagram asked for, or None when no pause
    holds. Every refresh checks it before calling Instagram, whatever started it."""
    until = (
        SweepState.objects.filter(pk=1, throttled_until__gt=now)
        .values_list("throttled_until", flat=True)
        .first()
    )
    return until


def usage_percent(*, now: datetime) -> int:
    """The last usage Instagram reported (percent of quota), or 0 when that reading is
    older than USAGE_READING_MAX_AGE_MINUTES (answers stop carrying it once usage is low)."""
    fresh_after = now - timedelta(minutes=settings.USAGE_READING_MAX_AGE_MINUTES)
    percent = (
        SweepState.objects.filter(pk=1, usage_recorded_at__gt=fresh_after)
        .values_list("usage_percent", flat=True)
        .first()
    )
    return percent or 0


def token_files_to_check() -> QuerySet[Account]:
    """Accounts whose long-lived token should have a file. The token's value is loaded
    (decrypted) only when used, one account at a time: a value no key decrypts stops
    that account, not every other."""
    return (
        Account.objects.filter(export_enabled=True, token__kind=Token.Kind.LONG)
        .select_related("token")
        .defer("token__value")
    )


# --- token files ----------------------------------------------------------------------


# The token is dead: only an authorization (by the owner) brings a new one.
DEAD_TOKEN_STATUSES = frozenset({Account.Status.NEEDS_REAUTH, Account.Status.DEAUTHORIZED})


def token_file_content(*, account: Account, token: Token | None) -> str:
    """What the account's token file holds: the bare token, or a JSON document.

    Once the token is dead (the account needs re-authorization, or its owner
    deauthorized the app) the file keeps the last token by default
    (TOKEN_FILE_DEAD_TOKEN=keep: the website's calls fail as they would anyway, and the
    dashboard flags it); with TOKEN_FILE_DEAD_TOKEN=empty the text file is emptied and
    the JSON file holds `"access_token": null` and `"status"`. With `token` None (the
    token row is gone: Meta's deauthorize callback deletes it) the content is the
    emptied one, `"expires_at": null` in JSON."""
    dead = account.status in DEAD_TOKEN_STATUSES
    empty = token is None or (dead and settings.TOKEN_FILE_DEAD_TOKEN == "empty")
    if account.export_format == Account.ExportFormat.JSON:
        document = {
            "access_token": None if empty or token is None else token.value,
            "expires_at": token.expires_at.isoformat() if token is not None else None,
            # Each id as /me names it (README, "Token files"); null when not known.
            "id": account.ig_id or None,
            "user_id": account.ig_user_id or None,
            "username": account.username,
        }
        if empty:
            document["status"] = account.status
        return json.dumps(document, indent=2) + "\n"
    # Exactly the token: the PHP page reads the file as-is into a URL.
    return "" if empty or token is None else token.value


class FileState:
    """How an account's token file compares with the database."""

    IN_SYNC = "in_sync"
    MISSING = "missing"
    STALE = "stale"  # holds another token (or format)
    WRONG_MODE = "wrong_mode"
    WRONG_GROUP = "wrong_group"
    UNWRITABLE = "unwritable"  # the last write failed (directory, group, disk, bad name)
    NAME_TAKEN = "name_taken"  # another account owns the file name
    NOT_EXPORTED = "not_exported"  # export off, or no long-lived token

    LABELS = {
        IN_SYNC: "in sync",
        MISSING: "missing",
        STALE: "stale",
        WRONG_MODE: "wrong mode",
        WRONG_GROUP: "wrong group",
        UNWRITABLE: "not writable",
        NAME_TAKEN: "name taken",
        NOT_EXPORTED: "—",
    }
    # A file in one of these states does not serve the website what the registry holds.
    PROBLEMS = frozenset({MISSING, STALE, WRONG_MODE, WRONG_GROUP, UNWRITABLE, NAME_TAKEN})

    @classmethod
    def shown(cls, *, account: Account, token: Token | None) -> str:
        """The state a page shows: the stored one when the file is exported (export on
        and a long-lived token to write), else NOT_EXPORTED."""
        exported = account.export_enabled and token is not None and token.kind == "long"
        return account.file_state if exported else cls.NOT_EXPORTED

    @classmethod
    def describe(cls, state: str, *, export_enabled: bool) -> str:
        """The state in words for a page (never the raw `not_exported`): `export off`,
        `not written yet` (export on, no long-lived token to write), or the label."""
        if not export_enabled:
            return "export off"
        if state == cls.NOT_EXPORTED:
            return "not written yet"
        return cls.LABELS.get(state, state.replace("_", " "))


def token_file_path(*, account: Account) -> Path | None:
    """Where the account's token file is or goes, or None without a usable name."""
    name = token_file_name(account=account)
    if not name:
        return None
    try:
        validate_token_filename(name)
    except ValidationError:
        return None
    return Path(settings.TOKEN_EXPORT_DIR) / name


def token_file_state(*, account: Account) -> str:
    """Compare the token file on disk with what the database says it should hold.

    Reads the disk: the account's stored `file_state` is this answer as of the last write
    or reconcile run."""
    token = getattr(account, "token", None)
    if not account.export_enabled or token is None or token.kind != Token.Kind.LONG:
        return FileState.NOT_EXPORTED
    current = token_file_current(account=account)
    name = token_file_name_given(account=account, current=current)
    if current is None or current.name != name:
        # Not written under this name yet: whether it can be depends on who owns it.
        if name and token_file_blocker(account=account, name=name) is not None:
            return FileState.NAME_TAKEN
        if current is None:
            return FileState.MISSING if name else FileState.UNWRITABLE
    path = token_file_path(account=account)
    if path is None:
        return FileState.UNWRITABLE
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


def _file_state_or_unwritable(account: Account) -> str:
    try:
        return token_file_state(account=account)
    except DecryptionError:
        return FileState.UNWRITABLE


def token_status_rows() -> list[dict]:
    """One JSON-ready row per account (token_status --json; format in README)."""
    rows = []
    accounts = (Account.objects.select_related("app", "token").defer("token__value")
                .order_by("app__name", "label"))
    for account in accounts:
        token = getattr(account, "token", None)
        path = token_file_path(account=account)
        rows.append({
            "id": account.pk,
            "app": account.app.name,
            "label": account.label,
            "username": account.username or None,
            "ig_id": account.ig_id or None,
            "ig_user_id": account.ig_user_id or None,
            "ig_exchange_user_id": account.ig_exchange_user_id or None,
            "status": account.status,
            "expires_at": token.expires_at.isoformat() if token else None,
            "last_refreshed_at": (token.last_refreshed_at.isoformat()
                                  if token and token.last_refreshed_at else None),
            "last_error": account.last_error or None,
            "token_file": str(path) if path and account.export_enabled else None,
            "file_state": _file_state_or_unwritable(account),
            "file_error": account.file_error or None,
        })
    return rows


# --- account states (dashboard, alerts, metrics) --------------------------------------


class State:
    """An account's state as staff see it, most urgent first."""

    EXPIRED = "expired"
    NEEDS_REAUTH = "needs_reauth"
    # The owner removed the app or had their data deleted (Meta's callbacks): no token.
    DEAUTHORIZED = "deauthorized"
    ERROR = "error"
    FILE_PROBLEM = "file_problem"
    EXPIRING = "expiring"
    REFRESH_DUE = "refresh_due"
    PENDING = "pending"
    HEALTHY = "healthy"

    ORDER = [EXPIRED, NEEDS_REAUTH, DEAUTHORIZED, ERROR, FILE_PROBLEM, EXPIRING, REFRESH_DUE,
             PENDING, HEALTHY]
    LABELS = {
        EXPIRED: "Expired",
        NEEDS_REAUTH: "Needs re-authorization",
        DEAUTHORIZED: "Deauthorized by its owner",
        ERROR: "Error",
        FILE_PROBLEM: "File problem",
        EXPIRING: "Expiring soon",
        REFRESH_DUE: "Refresh due",
        PENDING: "Waiting for authorization",
        HEALTHY: "Healthy",
    }
    # What a human must hear about (alerts).
    ALERTING = frozenset({EXPIRED, NEEDS_REAUTH, DEAUTHORIZED, ERROR, FILE_PROBLEM, EXPIRING})
    # What staff must do, where the sweep alone will not put it right.
    ACTIONS = {
        EXPIRED: "Authorize again",
        NEEDS_REAUTH: "Authorize again",
        DEAUTHORIZED: "Only the owner can authorize again",
        ERROR: "Read the last error",
        FILE_PROBLEM: "Fix the token file",
        PENDING: "Authorize",
    }


def _state_conditions(*, now: datetime) -> list[tuple[Q, str]]:
    """Which state an account is in: the first condition it meets, else healthy."""
    expiring = now + timedelta(days=settings.ALERT_EXPIRY_DAYS)
    due = now + timedelta(days=settings.REFRESH_THRESHOLD_DAYS)
    return [
        (Q(status=Account.Status.NEEDS_REAUTH), State.NEEDS_REAUTH),
        # Before "pending": a deauthorized account has no token either.
        (Q(status=Account.Status.DEAUTHORIZED), State.DEAUTHORIZED),
        (Q(token__isnull=True), State.PENDING),
        (Q(token__expires_at__lte=now), State.EXPIRED),
        (Q(status=Account.Status.ERROR)
         | Q(token__refresh_failures__gte=settings.ALERT_FAILURES_THRESHOLD), State.ERROR),
        # The file the website reads is missing, stale, unwritable or someone else's.
        (Q(export_enabled=True, token__kind=Token.Kind.LONG,
           file_state__in=FileState.PROBLEMS), State.FILE_PROBLEM),
        (Q(token__expires_at__lte=expiring), State.EXPIRING),
        (Q(token__expires_at__lte=due), State.REFRESH_DUE),
    ]


def _state_expression(*, now: datetime) -> Case:
    return Case(
        *[When(condition, then=Value(state)) for condition, state in _state_conditions(now=now)],
        default=Value(State.HEALTHY),
        output_field=CharField(),
    )


def _urgency_expression(*, now: datetime) -> Case:
    """The state as its place in State.ORDER (0 = most urgent): the same conditions as
    `_state_expression`, evaluated once per row rather than once per state compared."""
    return Case(
        *[When(condition, then=Value(State.ORDER.index(state)))
          for condition, state in _state_conditions(now=now)],
        default=Value(State.ORDER.index(State.HEALTHY)),
        output_field=IntegerField(),
    )


_URGENCY_ORDER = ("urgency", F("token__expires_at").asc(nulls_last=True), "label", "pk")


def accounts_with_state(*, now: datetime) -> QuerySet[Account]:
    """Accounts annotated with `state`, `urgency` (0 = most urgent) and the outcome and
    time of their last refresh attempt; ordered most urgent first, then soonest expiry.
    One query however many accounts there are."""
    return _accounts_by_urgency(now=now).annotate(state=_state_expression(now=now))


def _accounts_by_urgency(*, now: datetime) -> QuerySet[Account]:
    """`accounts_with_state` without `state` (it is State.ORDER[urgency])."""
    last_refresh = Event.objects.filter(account=OuterRef("pk"), action="refresh").order_by(
        "-created_at", "-id"
    )
    return (
        Account.objects.select_related("app", "token")
        # Pages and alerts never show a token or a secret: never decrypt them here.
        .defer("token__value", "app__app_secret")
        .annotate(
            urgency=_urgency_expression(now=now),
            last_refresh_outcome=Subquery(last_refresh.values("outcome")[:1]),
            last_refresh_at=Subquery(last_refresh.values("created_at")[:1]),
        )
        .order_by(*_URGENCY_ORDER)
    )


def state_counts(*, now: datetime, queryset: QuerySet[Account] | None = None) -> dict[str, int]:
    """How many accounts are in each state (every state present, zero or not)."""
    queryset = queryset if queryset is not None else Account.objects.all()
    rows = (
        queryset.annotate(urgency=_urgency_expression(now=now))
        .values("urgency")
        .annotate(n=Count("pk"))
        .order_by()
    )
    counts = dict.fromkeys(State.ORDER, 0)
    counts.update({State.ORDER[row["urgency"]]: row["n"] for row in rows})
    return counts


class _DateOf(TruncDate):
    """TruncDate (the date in the current time zone). On SQLite in UTC, where Django
    stores datetimes as UTC text, SQLite's own date(): Django's general version is a
    function written in Python, called once per row (~100 ms for 10,000 rows)."""

    def as_sqlite(self, compiler, connection, **extra_context):  # noqa: ANN001, ANN003, ANN201
        if self.get_tzname() == "UTC":
            sql, params = compiler.compile(self.lhs)
            return f"date({sql})", params
        return self.as_sql(compiler, connection, **extra_context)


@dataclass(frozen=True)
class DashboardSummary:
    """The dashboard's figures for a set of accounts: how many are in each state (every
    state present), how many tokens expire on each of the next days (zeros included,
    today first) and, for each day with expiries, how many of them are in each state."""

    counts: dict[str, int]
    timeline: list[tuple[date, int]]
    day_states: dict[date, dict[str, int]] = field(default_factory=dict)


def dashboard_search(*, queryset: QuerySet[Account], search: str) -> QuerySet[Account]:
    """The accounts whose label, Instagram username or token file name (the explicit one,
    or the name of the file it writes now) contains `search`, case-insensitively; all of
    them for an empty `search`. A filter within the same query (no extra query)."""
    search = search.strip()
    if not search:
        return queryset
    writes_file = TokenFile.objects.filter(account=OuterRef("pk"),
                                           status=TokenFile.Status.CURRENT,
                                           name__icontains=search)
    return queryset.filter(Q(label__icontains=search) | Q(username__icontains=search.lstrip("@"))
                           | Q(token_filename__icontains=search) | Exists(writes_file))


def _dashboard_accounts_filtered(*, app_id: int | None, search: str) -> QuerySet[Account]:
    accounts = Account.objects.all()
    if app_id is not None:
        accounts = accounts.filter(app_id=app_id)
    return dashboard_search(queryset=accounts, search=search)


def dashboard_summary(*, now: datetime, app_id: int | None = None, days: int = 60,
                      search: str = "") -> DashboardSummary:
    """Counts per state and the expiry timeline of every account (of one app, with
    `app_id`; matching `search`, see `dashboard_search`). One aggregate query: a single
    pass over the accounts, grouped by state and by the day of expiry within the next
    `days` days."""
    accounts = _dashboard_accounts_filtered(app_id=app_id, search=search)
    rows = (
        accounts.annotate(
            urgency=_urgency_expression(now=now),
            day=Case(
                When(token__expires_at__gt=now,
                     token__expires_at__lte=now + timedelta(days=days),
                     then=_DateOf("token__expires_at")),
                default=None,
                output_field=DateField(),
            ),
        )
        .values("urgency", "day")
        .annotate(n=Count("pk"))
        .order_by()
    )
    counts = dict.fromkeys(State.ORDER, 0)
    per_day: dict[date, int] = {}
    day_states: dict[date, dict[str, int]] = {}
    for row in rows:
        state = State.ORDER[row["urgency"]]
        counts[state] += row["n"]
        if row["day"] is not None:
            per_day[row["day"]] = per_day.get(row["day"], 0) + row["n"]
            of_day = day_states.setdefault(row["day"], {})
            of_day[state] = of_day.get(state, 0) + row["n"]
    start = now.date()
    timeline = [(start + timedelta(days=i), per_day.get(start + timedelta(days=i), 0))
                for i in range(days + 1)]
    return DashboardSummary(counts=counts, timeline=timeline, day_states=day_states)


_EXPIRY_ASC = F("token__expires_at").asc(nulls_last=True)
_EXPIRY_DESC = F("token__expires_at").desc(nulls_last=True)
# The dashboard's sort orders (`?o=`), each ending in the primary key so that pages
# neither skip nor repeat a row. "state" is the default: most urgent first.
DASHBOARD_ORDERS: dict[str, tuple] = {
    "state": _URGENCY_ORDER,
    "-state": (F("urgency").desc(), _EXPIRY_ASC, Lower("label"), "pk"),
    "label": (Lower("label"), "pk"),
    "-label": (Lower("label").desc(), "-pk"),
    "expires": (_EXPIRY_ASC, Lower("label"), "pk"),
    "-expires": (_EXPIRY_DESC, Lower("label"), "pk"),
    "app": (Lower("app__name"), *_URGENCY_ORDER),
    "-app": (Lower("app__name").desc(), *_URGENCY_ORDER),
}


def dashboard_accounts(*, now: datetime, app_id: int | None, state: str | None,
                       offset: int, limit: int, search: str = "",
                       order: str = "state") -> list[Account]:
    """One page (`offset`, `limit`) of `accounts_with_state`, of one app and one state
    when given, matching `search` (`dashboard_search`), sorted by `order` (a key of
    DASHBOARD_ORDERS; by default most urgent first), each also annotated with
    `current_file_name` (the name of its current token file, None before its first
    export). One query: the page's ids are chosen by a subquery that sorts on the state
    and expiry alone, so the last refresh and the file are looked up for the page's rows
    only, not for every account."""
    ordering = DASHBOARD_ORDERS[order]
    ids = _dashboard_accounts_filtered(app_id=app_id, search=search).alias(
        urgency=_urgency_expression(now=now))
    if state is not None:
        ids = ids.filter(urgency=State.ORDER.index(state))
    page_ids = ids.order_by(*ordering).values("pk")[offset:offset + limit]
    accounts = list(
        _accounts_by_urgency(now=now)
        .filter(pk__in=page_ids)
        .annotate(current_file_name=current_file_name_expression())
        .order_by(*ordering)
    )
    for account in accounts:
        # What accounts_with_state's CASE would say, without building and running it.
        account.state = State.ORDER[account.urgency]
    return accounts


def instagram_apps_named() -> QuerySet[InstagramApp]:
    """Every app's id and name, by name (for filters: no secret is loaded)."""
    return InstagramApp.objects.order_by("name").only("pk", "name")


def next_refresh_at(*, account: Account, now: datetime,
                    paused_until: datetime | None = None) -> datetime | None:
    """When the sweep will next try to refresh the account's token (UTC), or None when it
    never will on its own: no long-lived token, expired, or the account waits for its
    owner (needs re-authorization, never authorized) or for staff (a refresh failure no
    retry can fix)."""
    token: Token | None = getattr(account, "token", None)
    if token is None or token.kind != Token.Kind.LONG or token.expires_at <= now:
        return None
    if token.refresh_held_since is not None:
        return None
    if account.status not in (Account.Status.ACTIVE, Account.Status.ERROR):
        return None
    threshold = timedelta(days=settings.REFRESH_THRESHOLD_DAYS)
    candidates = [token.obtained_at + REFRESH_MIN_AGE, token.expires_at - threshold, now]
    if paused_until is not None:
        candidates.append(paused_until)
    if token.next_attempt_at:
        candidates.append(token.next_attempt_at)
    when = max(candidates)
    return when if when < token.expires_at else None


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


def _delivery_counts(row: dict) -> DeliveryCounts:
    return DeliveryCounts(delivered=row["delivered"], abandoned=row["abandoned"],
                          failed_attempts=(row["attempts"] or 0) - row["delivered"],
                          pending=row["pending"])


_DELIVERY_AGGREGATES = {
    "delivered": Count("pk", filter=Q(delivered_at__isnull=False)),
    "abandoned": Count("pk", filter=Q(abandoned_at__isnull=False)),
    "pending": Count("pk", filter=Q(delivered_at__isnull=True, abandoned_at__isnull=True)),
    "attempts": Sum("attempts"),
}


def webhook_delivery_counts() -> DeliveryCounts:
    """The change webhooks' outbox (`WebhookDelivery`), counted as `alert_delivery_counts`
    counts a channel. One query."""
    return _delivery_counts(WebhookDelivery.objects.aggregate(**_DELIVERY_AGGREGATES))


def alert_delivery_counts() -> dict[str, DeliveryCounts]:
    """DeliveryCounts per channel, every channel present (for metrics). One query.

    A delivered row's last attempt is its one success, so its other attempts failed;
    every attempt of the other rows failed."""
    rows = AlertDelivery.objects.values("channel").annotate(**_DELIVERY_AGGREGATES).order_by()
    counts = {channel: DeliveryCounts() for channel in AlertDelivery.Channel.values}
    for row in rows:
        counts[row["channel"]] = _delivery_counts(row)
    return counts

