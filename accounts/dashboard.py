"""The expiry dashboard's page model: rows, counts, filters and the timeline chart.

Reads only (through selectors); the admin view that renders it stays thin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
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
from .timeutil import days_text, local_text, plural

PAGE_SIZE = 50
# The SVG's own coordinates; the page scales it to its full width.
CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 1200, 150, 24
SEARCH_MAX = 100
DEFAULT_ORDER = "state"
SORTABLE = ("label", "app", "state", "expires")


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
    last_refresh_ago: str = ""
    next_refresh_left: str = ""

    @property
    def needs_authorize(self) -> bool:
        """Whether authorizing is what the account needs (its row's first button)."""
        return self.state in (State.EXPIRED, State.NEEDS_REAUTH, State.PENDING)

    @property
    def file_problem(self) -> bool:
        return self.file_state in selectors.FileState.PROBLEMS

    @property
    def file_label(self) -> str:
        label = selectors.FileState.describe(self.file_state,
                                             export_enabled=self.account.export_enabled)
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
    """One day of the chart: its bar's place and size as the SVG takes them (one decimal;
    no bar on a day without expiries), the column that shows its detail on hover, and
    that detail (`title`: the day, how many expire, in which states)."""

    x: str
    y: str
    width: str
    height: str
    day: date
    count: int
    column_x: str = ""
    column_width: str = ""
    title: str = ""


@dataclass(frozen=True)
class Tile:
    """A state's count on top of the page, a link to the page filtered on it."""

    key: str
    label: str
    count: int
    href: str
    active: bool


@dataclass(frozen=True)
class SortLink:
    """A sortable column's header: where a click goes, and the arrow of the order shown."""

    href: str
    arrow: str


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
    search: str = ""
    order: str = DEFAULT_ORDER
    tiles: list[Tile] = field(default_factory=list)
    sort_links: dict[str, SortLink] = field(default_factory=dict)
    # What was wrong with the query string, and what the page shows instead.
    notices: list[str] = field(default_factory=list)
    filtered: bool = False

    @property
    def total_text(self) -> str:
        """`1 account`, `33 accounts`: the accounts the page lists, over every page."""
        return plural(self.page.paginator.count, "account")


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
    """The dashboard for these GET parameters: `app` (an app's id), `state` (a key of
    State.ORDER), `q` (search: label, username or token file name), `o` (a key of
    selectors.DASHBOARD_ORDERS) and `page`. A value that names nothing is ignored with a
    notice that says so; a page number past either end shows the nearest page. A
    constant number of queries: the counts and timeline in one, the page's rows in one,
    the apps and the rate-limit pause in one each."""
    notices: list[str] = []
    apps = list(selectors.instagram_apps_named())
    app_id = _app_id(params.get("app"), apps, notices)
    state = params.get("state") or None
    if state is not None and state not in State.ORDER:
        notices.append(f"There is no state “{state[:40]}”: showing every state.")
        state = None
    search = (params.get("q") or "").strip()[:SEARCH_MAX]
    order = params.get("o") or DEFAULT_ORDER
    if order not in selectors.DASHBOARD_ORDERS:
        notices.append(f"Cannot sort by “{order[:40]}”: sorted by state.")
        order = DEFAULT_ORDER
    summary = selectors.dashboard_summary(now=now, app_id=app_id, search=search)
    counts = summary.counts
    total = sum(counts.values())
    window = _PageWindow(
        counts[state] if state is not None else total,
        lambda offset, limit: selectors.dashboard_accounts(
            now=now, app_id=app_id, state=state, offset=offset, limit=limit,
            search=search, order=order),
    )
    paginator = Paginator(window, PAGE_SIZE)
    page = paginator.page(_page_number(params.get("page"), paginator.num_pages, notices))
    paused_until = selectors.refresh_paused_until(now=now)
    urls = _RowUrls()
    rows = [_row(account, now=now, paused_until=paused_until, urls=urls)
            for account in page.object_list]
    bars, chart_max, ticks = _chart(summary.timeline, summary.day_states)
    # What the page's links keep: only what was valid (a bad value is not carried on).
    kept = {"app": str(app_id) if app_id is not None else "", "state": state or "",
            "q": search, "o": order if order != DEFAULT_ORDER else ""}
    return Dashboard(
        rows=rows,
        page=page,
        counts=[(s, State.LABELS[s], counts[s]) for s in State.ORDER],
        total=total,
        apps=apps,
        app_id=app_id,
        state=state,
        bars=bars,
        chart_max=chart_max,
        chart_ticks=ticks,
        querystring=_query(kept),
        search=search,
        order=order,
        tiles=[Tile(key="", label="All", count=total, href="?" + _query(kept, state=""),
                    active=state is None)]
        + [Tile(key=s, label=State.LABELS[s], count=counts[s],
                href="?" + _query(kept, state=s), active=state == s) for s in State.ORDER],
        sort_links=_sort_links(kept, order),
        notices=notices,
        filtered=bool(app_id is not None or state or search),
    )


def _query(kept: dict[str, str], **changes: str) -> str:
    """The query string of `kept` with `changes`, empty values left out (no page)."""
    query = QueryDict(mutable=True)
    for key, value in {**kept, **changes}.items():
        if value:
            query[key] = value
    return query.urlencode()


def _sort_links(kept: dict[str, str], order: str) -> dict[str, SortLink]:
    """A header link per sortable column: ascending first, descending on a second click
    (state: most urgent first, then least)."""
    links = {}
    for column in SORTABLE:
        ascending = column == order
        descending = order == f"-{column}"
        target = f"-{column}" if ascending else column
        arrow = "▲" if ascending else "▼" if descending else ""
        links[column] = SortLink(
            href="?" + _query(kept, o="" if target == DEFAULT_ORDER else target), arrow=arrow)
    return links


def _app_id(value: str | None, apps: list[InstagramApp], notices: list[str]) -> int | None:
    """The app filter, when it names an app; otherwise None, with a notice."""
    if not value:
        return None
    app_id = _int_or_none(value)
    if app_id is None or app_id not in {app.pk for app in apps}:
        notices.append(f"There is no app “{value[:40]}”: showing every app.")
        return None
    return app_id


def _page_number(value: str | None, last: int, notices: list[str]) -> int:
    """The page asked for, brought within 1..last (with a notice when it was not)."""
    if not value:
        return 1
    number = _int_or_none(value)
    if number is None:
        notices.append(f"“{value[:20]}” is not a page number: showing page 1.")
        return 1
    if number < 1:
        notices.append(f"There is no page {number}: showing page 1.")
        return 1
    if number > last:
        notices.append(f"There is no page {number}: showing the last page, {last}.")
        return last
    return number


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
    next_refresh = selectors.next_refresh_at(account=account, now=now,
                                             paused_until=paused_until)
    time_left = days_text(token.expires_at, now=now) if token is not None else ""
    return Row(
        account=account,
        state=account.state,
        state_label=State.LABELS[account.state],
        next_refresh_at=next_refresh,
        action_needed=State.ACTIONS.get(account.state, ""),
        file_state=selectors.FileState.shown(account=account, token=token),
        file_name=(selectors.token_file_name_of(account=account,
                                                current_name=account.current_file_name)
                   if account.export_enabled else ""),
        change_url=urls.of(urls.change, account.pk),
        authorize_url=urls.of(urls.authorize, account.pk),
        expires_text=local_text(token.expires_at if token is not None else None),
        time_left=time_left,
        last_refresh_text=local_text(account.last_refresh_at),
        next_refresh_text=local_text(next_refresh),
        last_refresh_ago=(days_text(account.last_refresh_at, now=now)
                          if account.last_refresh_at else ""),
        next_refresh_left=days_text(next_refresh, now=now) if next_refresh else "",
    )


def _one_decimal(value: float) -> str:
    """What `{{ value|floatformat:1 }}` shows (half up, one decimal, no grouping)."""
    return str(Decimal(str(value)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def _chart(timeline: list[tuple[date, int]], day_states: dict[date, dict[str, int]]
           ) -> tuple[list[Bar], int, list[tuple[str, str]]]:
    """Bars for an SVG drawn on the server: one per day, height by count; each day's
    column carries its detail for the hover (the SVG <title>)."""
    peak = max((n for _, n in timeline), default=0) or 1
    inner_w, inner_h = CHART_WIDTH - 2 * CHART_PAD, CHART_HEIGHT - 2 * CHART_PAD
    step = inner_w / max(len(timeline), 1)
    width = _one_decimal(max(step - 2, 1))
    bars = []
    for i, (day, n) in enumerate(timeline):
        height = inner_h * n / peak
        bars.append(Bar(x=_one_decimal(CHART_PAD + i * step + 1),
                        y=_one_decimal(CHART_PAD + inner_h - height),
                        width=width, height=_one_decimal(height), day=day, count=n,
                        column_x=_one_decimal(CHART_PAD + i * step),
                        column_width=_one_decimal(step),
                        title=_day_title(day, n, day_states.get(day, {}))))
    ticks = [(_one_decimal(CHART_PAD + i * step), timeline[i][0].strftime("%b %d"))
             for i in range(0, len(timeline), 7)]
    return bars, peak, ticks


def _day_title(day: date, count: int, states: dict[str, int]) -> str:
    """`2027-01-27 (Wed): 3 tokens expire: 1 expiring soon, 2 healthy`."""
    head = f"{day:%Y-%m-%d} ({day:%a})"
    if not count:
        return f"{head}: no token expires"
    detail = ", ".join(f"{states[s]} {State.LABELS[s].lower()}" for s in State.ORDER
                       if states.get(s))
    verb = "expires" if count == 1 else "expire"
    return f"{head}: {plural(count, 'token')} {verb}" + (f": {detail}" if detail else "")


def _int_or_none(value: str | None) -> int | None:
    """A primary key from the query string, or None (also for one no database holds)."""
    if not value or not (value.isascii() and value.isdigit()) or len(value) > 18:
        return None
    return int(value)
