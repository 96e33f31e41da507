"""The expiry dashboard: states, ordering, filters, chart, and a query count that does not
grow with the number of accounts."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts import selectors
from accounts.models import Account, Event, InstagramApp, Token, TokenFile

URL = reverse("admin:accounts_account_dashboard")
CHANGELIST = reverse("admin:accounts_account_changelist")
# Issue 10: the page costs at most this many SQL queries, however many accounts there
# are (the session, the user and the second-factor check included).
MAX_QUERIES = 10


@pytest.fixture
def app(db) -> InstagramApp:
    return InstagramApp.objects.create(name="Shop", flavour="instagram_login", app_id="1",
                                       app_secret="app-secret-value-123",
                                       redirect_uri="https://example.com/cb/")


def account_with(app, label: str, *, left: timedelta | None, status: str = "active",
                 failures: int = 0, age: timedelta = timedelta(days=5),
                 file_state: str = "in_sync") -> Account:
    now = timezone.now()
    account = Account.objects.create(app=app, label=label)
    Account.objects.filter(pk=account.pk).update(status=status, username=label.lower(),
                                                 file_state=file_state)
    if left is not None:
        Token.objects.create(account=account, value=f"IGAA-secret-token-{label}", kind="long",
                             obtained_at=now - age, expires_at=now + left,
                             refresh_failures=failures)
    return account


@pytest.fixture
def mix(app):
    return {
        "healthy": account_with(app, "Healthy", left=timedelta(days=59)),
        "refresh_due": account_with(app, "Due", left=timedelta(days=40), age=timedelta(days=20)),
        "expiring": account_with(app, "Expiring", left=timedelta(days=3)),
        "expired": account_with(app, "Expired", left=timedelta(hours=-2)),
        "needs_reauth": account_with(app, "Reauth", left=timedelta(days=30),
                                     status="needs_reauth"),
        # Meta's deauthorize callback deleted its token.
        "deauthorized": account_with(app, "Gone", left=None, status="deauthorized"),
        "error": account_with(app, "Failing", left=timedelta(days=45), failures=3),
        "file_problem": account_with(app, "Unwritten", left=timedelta(days=55),
                                     file_state="unwritable"),
        "pending": account_with(app, "Pending", left=None, status="pending"),
    }


def test_states_and_urgency_order(admin_client, mix):
    response = admin_client.get(URL)
    assert response.status_code == 200
    rows = response.context["dash"].rows
    assert [r.state for r in rows] == selectors.State.ORDER
    assert {r.account.pk: r.state for r in rows} == {a.pk: s for s, a in mix.items()}
    counts = dict((key, n) for key, _, n in response.context["dash"].counts)
    assert counts == dict.fromkeys(selectors.State.ORDER, 1)
    page = response.content.decode()
    assert "Needs re-authorization" in page and "Expiring soon" in page
    assert "Deauthorized by its owner" in page and "Only the owner can authorize again" in page
    assert "IGAA-secret-token" not in page


def test_filters_by_state_and_app(admin_client, mix, app):
    other_app = InstagramApp.objects.create(name="Other", flavour="basic_display", app_id="2",
                                            app_secret="x" * 20,
                                            redirect_uri="https://example.com/cb/")
    account_with(other_app, "Elsewhere", left=timedelta(days=2))
    expiring = admin_client.get(URL, {"state": "expiring"}).context["dash"].rows
    assert {r.account.label for r in expiring} == {"Expiring", "Elsewhere"}
    only_app = admin_client.get(URL, {"state": "expiring", "app": app.pk}).context["dash"].rows
    assert [r.account.label for r in only_app] == ["Expiring"]
    dash = admin_client.get(URL, {"app": other_app.pk}).context["dash"]
    assert dash.total == 1
    # Nonsense filters are ignored rather than failing.
    assert admin_client.get(URL, {"state": "bogus", "app": "x"}).status_code == 200


def test_row_details(admin_client, mix, token_dir):
    due = mix["refresh_due"]
    Event.objects.create(created_at=timezone.now(), account=due, action="refresh",
                         outcome="failed", message="Temporary failure")
    rows = {r.account.pk: r for r in admin_client.get(URL).context["dash"].rows}
    row = rows[due.pk]
    assert row.account.last_refresh_outcome == "failed"
    assert row.next_refresh_at is not None
    assert row.file_state == selectors.FileState.IN_SYNC
    assert rows[mix["file_problem"].pk].file_state == selectors.FileState.UNWRITABLE
    assert rows[mix["file_problem"].pk].action_needed == "Fix the token file"
    assert rows[mix["expired"].pk].next_refresh_at is None
    assert rows[mix["pending"].pk].file_state == selectors.FileState.NOT_EXPORTED
    # A healthy token is next refreshed when it crosses the threshold.
    healthy = rows[mix["healthy"].pk]
    token = mix["healthy"].token
    assert healthy.next_refresh_at == token.expires_at - timedelta(days=50)


def test_timeline_counts_expiries_per_day(admin_client, mix):
    dash = admin_client.get(URL).context["dash"]
    assert len(dash.bars) == 61
    # Expiring (3 d), refresh_due (40 d), needs_reauth (30 d), error (45 d), file problem
    # (55 d), healthy (59 d).
    assert sum(bar.count for bar in dash.bars) == 6
    page = admin_client.get(URL).content.decode()
    assert page.count('<rect class="bar"') == 6
    assert "<script" not in page.split('id="expiry-chart"')[1].split("</svg>")[0]


@pytest.mark.parametrize("time_zone, day", [("UTC", 10), ("America/Los_Angeles", 9)])
def test_timeline_days_are_those_of_the_time_zone(admin_client, app, settings, time_zone, day):
    # At 03:00 UTC it is still the evening before in Los Angeles (SQLite's own date()
    # serves UTC only: another zone must not take that path).
    settings.TIME_ZONE = time_zone
    account = account_with(app, "Late", left=timedelta(days=20))
    today = timezone.now().date()
    expires = datetime.combine(today + timedelta(days=10), time(3), tzinfo=UTC)
    Token.objects.filter(account=account).update(expires_at=expires)
    bars = admin_client.get(URL).context["dash"].bars
    assert [i for i, bar in enumerate(bars) if bar.count] == [day]
    assert bars[day].day == today + timedelta(days=day)


def test_staff_only(client, mix, django_user_model):
    assert client.get(URL).status_code == 302  # to the login page
    django_user_model.objects.create_user("plain", password="pw-plain-123")
    client.force_login(django_user_model.objects.get(username="plain"))
    assert client.get(URL).status_code == 302
    staff = django_user_model.objects.create_user("staff", password="pw-staff-123",
                                                  is_staff=True)
    client.force_login(staff)
    assert client.get(URL).status_code == 403  # staff without view permission on accounts


def test_root_redirects_to_the_dashboard(admin_client):
    assert admin_client.get("/")["Location"] == URL


def queries_for(admin_client, params=None, url: str = URL) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = admin_client.get(url, params or {})
    assert response.status_code == 200
    return len(ctx.captured_queries)


def bulk_accounts(app, count: int, *, history: bool = False) -> None:
    """`count` active accounts with long-lived tokens expiring over the next 60 days; with
    `history`, each also has a current token file (named after a former username) and
    refresh events, which the page shows."""
    now = timezone.now()
    start = Account.objects.count()
    accounts = Account.objects.bulk_create(
        Account(app=app, label=f"Account {start + i}", username=f"user{start + i}",
                status="active", ig_id=str(17841400000000000 + start + i),
                file_state="in_sync")
        for i in range(count)
    )
    Token.objects.bulk_create(
        Token(account=a, value=f"IGAA{i}", kind="long", obtained_at=now - timedelta(days=i % 59),
              expires_at=now + timedelta(days=60 - i % 61, minutes=5))
        for i, a in enumerate(accounts)
    )
    if history:
        TokenFile.objects.bulk_create(
            TokenFile(name=f"former{a.pk}", account=a, account_label=a.label, claimed_at=now)
            for a in accounts
        )
        Event.objects.bulk_create(
            Event(created_at=now - timedelta(hours=hours), account=a, account_label=a.label,
                  action="refresh", outcome=outcome)
            for a in accounts for hours, outcome in ((2, "ok"), (1, "failed"))
        )


def test_few_or_many_accounts_cost_the_same_few_queries(admin_client, app):
    bulk_accounts(app, 10, history=True)
    small = queries_for(admin_client)
    small_page = queries_for(admin_client, {"state": "healthy", "page": 2})
    small_app = queries_for(admin_client, {"app": app.pk, "page": 3})
    assert small <= MAX_QUERIES
    bulk_accounts(app, 190, history=True)
    assert queries_for(admin_client) == small
    assert queries_for(admin_client, {"state": "healthy", "page": 2}) == small_page
    assert queries_for(admin_client, {"app": app.pk, "page": 3}) == small_app
    # What the rows show comes with them, not from a query per row.
    rows = admin_client.get(URL, {"page": 2}).context["dash"].rows
    assert len(rows) == 50
    assert all(row.file_name == f"former{row.account.pk}" for row in rows)
    assert all(row.account.last_refresh_outcome == "failed" for row in rows)


def test_pages_follow_the_urgency_order_without_gaps_or_repeats(admin_client, app, mix):
    bulk_accounts(app, 120)
    expected = [a.pk for a in selectors.accounts_with_state(now=timezone.now())]
    seen = []
    for number in (1, 2, 3):
        dash = admin_client.get(URL, {"page": number}).context["dash"]
        assert dash.page.paginator.count == 129
        seen += [row.account.pk for row in dash.rows]
    assert seen == expected
    due = admin_client.get(URL, {"state": "refresh_due", "page": 2}).context["dash"]
    everyone = selectors.accounts_with_state(now=timezone.now())
    expected_due = [a.pk for a in everyone if a.state == "refresh_due"]
    assert len(expected_due) > 50 and due.page.paginator.count == len(expected_due)
    assert [row.account.pk for row in due.rows] == expected_due[50:100]


def test_account_list_costs_the_same_queries_for_5_or_50_accounts(admin_client, app):
    bulk_accounts(app, 5, history=True)
    small = queries_for(admin_client, url=CHANGELIST)
    bulk_accounts(app, 45, history=True)
    assert queries_for(admin_client, url=CHANGELIST) == small
    assert admin_client.get(CHANGELIST).context["cl"].result_count == 50


def test_ten_thousand_accounts_in_a_constant_number_of_queries(admin_client, app):
    bulk_accounts(app, 10)
    small = queries_for(admin_client)
    small_filtered = queries_for(admin_client, {"state": "healthy", "app": app.pk, "page": 2})
    bulk_accounts(app, 9_990)
    assert Account.objects.count() == 10_000
    assert queries_for(admin_client) == small
    assert queries_for(admin_client, {"state": "healthy", "app": app.pk, "page": 2}) == (
        small_filtered)
    assert small <= MAX_QUERIES
    response = admin_client.get(URL, {"page": 3})
    dash = response.context["dash"]
    assert len(dash.rows) == 50 and dash.page.paginator.count == 10_000
    assert dash.total == 10_000


def test_history_link_shows_only_that_accounts_events(admin_client, mix):
    now = timezone.now()
    mine, other = mix["error"], mix["healthy"]
    Event.objects.create(created_at=now, account=mine, action="refresh", outcome="failed",
                         message="event of the failing account")
    Event.objects.create(created_at=now, account=other, action="refresh", outcome="ok",
                         message="event of the healthy account")
    page = admin_client.get(URL).content.decode()
    link = f"/admin/accounts/event/?account__id__exact={mine.pk}"
    assert link in page
    history = admin_client.get(link).content.decode()
    assert "event of the failing account" in history
    assert "event of the healthy account" not in history


# --- issue 13: a dashboard for 30-100 feeds -------------------------------------------------


def labels_of(admin_client, params) -> list[str]:
    return [row.account.label for row in admin_client.get(URL, params).context["dash"].rows]


def test_search_by_label_username_or_file_name(admin_client, mix, app):
    TokenFile.objects.create(name="bakery-feed.json", account=mix["healthy"],
                             account_label="Healthy", claimed_at=timezone.now())
    Account.objects.filter(pk=mix["expiring"].pk).update(token_filename="special_name")
    assert labels_of(admin_client, {"q": "reaut"}) == ["Reauth"]  # label
    assert labels_of(admin_client, {"q": "@failing"}) == ["Failing"]  # username
    assert labels_of(admin_client, {"q": "BAKERY"}) == ["Healthy"]  # the file it writes
    assert labels_of(admin_client, {"q": "special_"}) == ["Expiring"]  # its file name
    dash = admin_client.get(URL, {"q": "reaut"}).context["dash"]
    # The counts and the chart are those of what was found.
    assert dash.total == 1 and dict((k, n) for k, _, n in dash.counts)["needs_reauth"] == 1
    assert sum(bar.count for bar in dash.bars) == 1
    assert labels_of(admin_client, {"q": "nothing-like-this"}) == []


def test_sort_by_label_state_and_expiry(admin_client, mix):
    by_label = labels_of(admin_client, {"o": "label"})
    assert by_label == sorted(by_label, key=str.lower)
    assert labels_of(admin_client, {"o": "-label"}) == by_label[::-1]
    by_expiry = labels_of(admin_client, {"o": "expires"})
    assert by_expiry[:3] == ["Expired", "Expiring", "Reauth"]
    assert set(by_expiry[-2:]) == {"Gone", "Pending"}  # no token: last
    assert labels_of(admin_client, {"o": "-expires"})[:2] == ["Healthy", "Unwritten"]
    by_state = admin_client.get(URL, {"o": "-state"}).context["dash"].rows
    assert [row.state for row in by_state] == selectors.State.ORDER[::-1]
    page = admin_client.get(URL, {"o": "label", "state": "healthy"}).content.decode()
    # Header links keep the filter and turn the order round.
    assert 'href="?state=healthy&amp;o=-label" id="sort-label"' in page


def test_sorted_pages_neither_skip_nor_repeat(admin_client, app):
    bulk_accounts(app, 120)
    seen = []
    for number in (1, 2, 3):
        seen += labels_of(admin_client, {"o": "label", "page": number})
    assert len(seen) == len(set(seen)) == 120
    assert seen == sorted(seen, key=str.lower)


def test_search_and_sort_cost_no_extra_query(admin_client, app):
    bulk_accounts(app, 10, history=True)
    plain = queries_for(admin_client)
    assert queries_for(admin_client, {"q": "user1", "o": "-expires"}) == plain
    bulk_accounts(app, 90, history=True)
    assert queries_for(admin_client, {"q": "user1", "o": "-expires"}) == plain


@pytest.mark.parametrize("page, shown, notice", [
    ("0", 1, "There is no page 0: showing page 1."),
    ("-3", 1, "“-3” is not a page number"),
    ("abc", 1, "“abc” is not a page number: showing page 1."),
    ("9", 3, "There is no page 9: showing the last page, 3."),
    ("2", 2, None),
])
def test_page_numbers_out_of_range(admin_client, app, page, shown, notice):
    bulk_accounts(app, 120)
    response = admin_client.get(URL, {"page": page})
    assert response.status_code == 200
    dash = response.context["dash"]
    assert dash.page.number == shown
    if notice:
        assert any(n.startswith(notice) or notice in n for n in dash.notices)
        assert 'id="dash-notices"' in response.content.decode()
    else:
        assert dash.notices == []


@pytest.mark.parametrize("value", ["abc", "999999", "-1", "1.5"])
def test_an_app_that_is_not_one_is_said(admin_client, mix, value):
    dash = admin_client.get(URL, {"app": value}).context["dash"]
    assert dash.app_id is None and dash.total == 9
    assert dash.notices == [f"There is no app “{value}”: showing every app."]


def test_unknown_state_and_order_are_said(admin_client, mix):
    dash = admin_client.get(URL, {"state": "bogus", "o": "secret"}).context["dash"]
    assert dash.state is None and dash.order == "state"
    assert dash.notices == ["There is no state “bogus”: showing every state.",
                            "Cannot sort by “secret”: sorted by state."]
    # Bad values are not carried on in the page's links.
    assert "bogus" not in dash.querystring and "secret" not in dash.querystring


@pytest.mark.parametrize("count, text", [(1, "1 account"), (2, "2 accounts")])
def test_plurals(admin_client, app, count, text):
    bulk_accounts(app, count)
    page = admin_client.get(URL).content.decode()
    assert f"Page 1 of 1 · {text}\n" in page
    assert "1 accounts" not in page


def test_empty_dashboard_points_to_adding_an_app_then_an_account(admin_client, db):
    page = admin_client.get(URL).content.decode()
    assert "No accounts yet" in page
    assert f'href="{reverse("admin:accounts_instagramapp_add")}" id="add-app-link"' in page
    assert 'id="expiry-chart"' not in page  # nothing to chart yet
    InstagramApp.objects.create(name="Shop", flavour="instagram_login", app_id="1",
                                app_secret="app-secret-value-123",
                                redirect_uri="https://example.com/cb/")
    page = admin_client.get(URL).content.decode()
    assert f'href="{reverse("admin:accounts_account_add")}" id="add-account-link"' in page
    assert 'id="add-app-link"' not in page


def test_nothing_found_says_so_and_offers_every_account(admin_client, mix):
    page = admin_client.get(URL, {"q": "zzz"}).content.decode()
    assert "No accounts match “zzz”" in page and '<a href="?">Show every account</a>' in page


def test_rows_show_the_file_name_and_a_readable_state(admin_client, mix):
    Account.objects.filter(pk=mix["healthy"].pk).update(token_filename="healthy.json")
    Account.objects.filter(pk=mix["refresh_due"].pk).update(export_enabled=False)
    page = admin_client.get(URL).content.decode()
    assert '<code class="file-name">healthy.json</code> <small class="file-label">in sync' in page
    assert "export off" in page
    assert "not_exported" not in page.replace('class="file-not_exported', "")
    rows = {r.account.pk: r for r in admin_client.get(URL).context["dash"].rows}
    assert rows[mix["pending"].pk].file_label == "not written yet"


def test_chart_days_carry_their_detail(admin_client, mix):
    dash = admin_client.get(URL).context["dash"]
    expiring = next(bar for bar in dash.bars if bar.count)
    assert expiring.title.endswith(": 1 token expires: 1 expiring soon")
    assert dash.bars[1].title.endswith("no token expires") or dash.bars[1].count
    page = admin_client.get(URL).content.decode()
    assert page.count('<g class="day"><title>') == 61
    assert 'width="100%"' not in page.split('id="expiry-chart"')[0][-200:]  # CSS sizes it


def test_account_list_file_column(admin_client, mix):
    TokenFile.objects.create(name="former_name", account=mix["healthy"],
                             account_label="Healthy", claimed_at=timezone.now())
    Account.objects.filter(pk=mix["refresh_due"].pk).update(export_enabled=False)
    page = admin_client.get(CHANGELIST).content.decode()
    assert "former_name: in sync" in page  # the file it writes, not the username
    assert "failing: in sync" in page
    assert "pending: not written yet" in page  # export on, no long-lived token yet
    assert "export off" in page
    assert "not_exported" not in page
