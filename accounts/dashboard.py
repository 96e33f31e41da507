"""The expiry dashboard's page model: rows, counts, filters and the timeline chart.

Reads only (through selectors); the admin view that renders it stays thin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.paginator import Page, Paginator
from django.http import QueryDict
from django.urls import reverse

from . import selectors
from .models import Account, InstagramApp
from .selectors import State
from .timeutil import days_text, local_text

PAGE_SIZE = 50
CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 720, 160, 24


@dataclass(frozen=True)
class Row:
    """One account's line. `next_refresh_at` only where the sweep will refresh on its own;
    `action_needed` says what staff must do where it will not. `file_state` is the state
    recorded at the last write or reconcile run (the one that counts and alerts)."""

    account: Account
    state: str
    state_label: str
    next_refresh_at: datetime | None
    action_needed: str
    file_state: str
    file_name: str
    # Made here rather than by template tags and filters, 50 times a page: the links, and
    # the times as every page shows them (timeutil.local_text; '' when there is none).
    change_url: str = ""
    authorize_url: str = ""
    expires_text: str = ""
    time_left: str = ""
    last_refresh_text: str = ""
    next_refresh_text: str = ""

    @property
    def file_label(self) -> str:
        label = selectors.FileState.LABELS.get(self.file_state, self.file_state)
        dead = (self.file_state == selectors.FileState.IN_SYNC
                and self.account.status == Account.Status.NEEDS_REAUTH)
        # Meta's deauthorize callback deleted the token but left the file it wrote (a data
        # deletion removes the file and its record: no current file any more).
        deauthorized = (self.account.status == Account.Status.DEAUTHORIZED
                        and getattr(self.account, "current_file_name", None) is not None)
        if dead or deauthorized:
            if settings.TOKEN_FILE_DEAD_TOKEN == "empty":
                return "emptied (dead token)"
            return "holds the last, dead token"
        return label


@dataclass(frozen=True)
class Bar:
    """One day's bar; its place and size as the SVG takes them (one decimal)."""

    x: str
    y: str
    width: str
    height: str
    day: date
    count: int


@dataclass(frozen=True)
class Dashboard:
    rows: list[Row]
    page: Page
    counts: list[tuple[str, str, int]]
    total: int
    apps: list[InstagramApp]
    app_id: int | None
    state: str | None
    bars: list[Bar]
    chart_max: int
    chart_ticks: list[tuple[str, str]]
    querystring: str


class _PageWindow:
    """The accounts of the dashboard as the paginator sees them: their number is known
    (from the counts), and a slice is one query for that page's rows."""

    def __init__(self, total: int, rows: Callable[[int, int], list[Account]]) -> None:
        self._total, self._rows = total, rows

    def __len__(self) -> int:
        return self._total

    def __getitem__(self, window: slice) -> list[Account]:
        offset, stop = window.start or 0, min(window.stop, self._total)
        return self._rows(offset, stop - offset) if stop > offset else []


def build(*, params: QueryDict, now: datetime) -> Dashboard:
    """The dashboard for these GET parameters (`app`, `state`, `page`). A constant number
    of queries: the counts and timeline in one, the page's rows in one, the apps and the
    rate-limit pause in one each."""
    app_id = _int_or_none(params.get("app"))
    state = params.get("state") if params.get("state") in State.ORDER else None
    summary = selectors.dashboard_summary(now=now, app_id=app_id)
    counts = summary.counts
    total = sum(counts.values())
    window = _PageWindow(
        counts[state] if state is not None else total,
        lambda offset, limit: selectors.dashboard_accounts(
            now=now, app_id=app_id, state=state, offset=offset, limit=limit),
    )
    page = Paginator(window, PAGE_SIZE).get_page(params.get("page"))
    paused_until = selectors.refresh_paused_until(now=now)
    urls = _RowUrls()
    rows = [_row(account, now=now, paused_until=paused_until, urls=urls)
            for account in page.object_list]
    bars, chart_max, ticks = _chart(summary.timeline)
    keep = params.copy()
    keep.pop("page", None)
    return Dashboard(
        rows=rows,
        page=page,
        counts=[(s, State.LABELS[s], counts[s]) for s in State.ORDER],
        total=total,
        apps=list(selectors.instagram_apps_named()),
        app_id=app_id,
        state=state,
        bars=bars,
        chart_max=chart_max,
        chart_ticks=ticks,
        querystring=keep.urlencode(),
    )


class _RowUrls:
    """The links of a row, for many rows at the cost of one reverse() each: the URL is
    reversed once with a marker for the account's id, which each row's id replaces."""

    _MARKER = 987654321

    def __init__(self) -> None:
        self.change = self._pattern("admin:accounts_account_change")
        self.authorize = self._pattern("admin:accounts_account_authorize")

    def _pattern(self, name: str) -> tuple[str, str]:
        head, marker, tail = reverse(name, args=[self._MARKER]).partition(str(self._MARKER))
        if not marker or str(self._MARKER) in tail:
            raise ImproperlyConfigured(f"{name}: no single place for the id in its URL")
        return head, tail

    @staticmethod
    def of(pattern: tuple[str, str], pk: int) -> str:
        return f"{pattern[0]}{pk}{pattern[1]}"


def _row(account: Account, *, now: datetime, paused_until: datetime | None,
         urls: _RowUrls) -> Row:
    token = getattr(account, "token", None)
    exported = account.export_enabled and token is not None and token.kind == "long"
    next_refresh = selectors.next_refresh_at(account=account, now=now,
                                             paused_until=paused_until)
    time_left = days_text(token.expires_at, now=now) if token is not None else ""
    return Row(
        account=account,
        state=account.state,
        state_label=State.LABELS[account.state],
        next_refresh_at=next_refresh,
        action_needed=State.ACTIONS.get(account.state, ""),
        file_state=account.file_state if exported else selectors.FileState.NOT_EXPORTED,
        file_name=(selectors.token_file_name_of(account=account,
                                                current_name=account.current_file_name)
                   if account.export_enabled else ""),
        change_url=urls.of(urls.change, account.pk),
        authorize_url=urls.of(urls.authorize, account.pk),
        expires_text=local_text(token.expires_at if token is not None else None),
        time_left=time_left,
        last_refresh_text=local_text(account.last_refresh_at),
        next_refresh_text=local_text(next_refresh),
    )


def _one_decimal(value: float) -> str:
    """What `{{ value|floatformat:1 }}` shows (half up, one decimal, no grouping)."""
    return str(Decimal(str(value)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def _chart(timeline: list[tuple[date, int]]) -> tuple[list[Bar], int, list[tuple[str, str]]]:
    """Bars for an SVG drawn on the server: one per day, height by count."""
    peak = max((n for _, n in timeline), default=0) or 1
    inner_w, inner_h = CHART_WIDTH - 2 * CHART_PAD, CHART_HEIGHT - 2 * CHART_PAD
    step = inner_w / max(len(timeline), 1)
    width = _one_decimal(max(step - 1, 1))
    bars = []
    for i, (day, n) in enumerate(timeline):
        height = inner_h * n / peak
        bars.append(Bar(x=_one_decimal(CHART_PAD + i * step),
                        y=_one_decimal(CHART_PAD + inner_h - height),
                        width=width, height=_one_decimal(height), day=day, count=n))
    ticks = [(_one_decimal(CHART_PAD + i * step), timeline[i][0].strftime("%b %d"))
             for i in range(0, len(timeline), 10)]
    return bars, peak, ticks


def _int_or_none(value: str | None) -> int | None:
    """A primary key from the query string, or None (also for one no database holds)."""
    if not value or not (value.isascii() and value.isdigit()) or len(value) > 18:
        return None
    return int(value)
