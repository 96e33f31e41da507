"""One way to show a time (issue 13): the minute with its zone, and days left where a
deadline matters, on every admin page; machine output stays ISO 8601 UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.template import Context, Template
from django.urls import reverse
from django.utils import timezone

from accounts.models import Account, Event, InstagramApp, Token
from accounts.timeutil import days_text, deadline_text, local_text

NOW = datetime(2027, 1, 27, 20, 25, 47, 662864, tzinfo=UTC)
# What the issue saw: microseconds, "p.m.", a zone left out.
UNWANTED = re.compile(r"\d\d:\d\d:\d\d\.\d+|[ap]\.m\.|\+00:00")


def test_local_text_is_the_minute_with_its_zone(settings):
    assert local_text(NOW) == "2027-01-27 20:25 UTC"
    assert local_text(None) == ""
    # A naive value is UTC (as everywhere in timeutil).
    assert local_text(NOW.replace(tzinfo=None)) == "2027-01-27 20:25 UTC"


@pytest.mark.parametrize("zone, text", [
    ("Europe/Berlin", "2027-01-27 21:25 CET"),
    ("America/Los_Angeles", "2027-01-27 12:25 PST"),
    ("America/Sao_Paulo", "2027-01-27 17:25 -03"),  # a zone without an abbreviation
])
def test_local_text_in_another_time_zone(settings, zone, text):
    settings.TIME_ZONE = zone
    assert local_text(NOW) == text


def test_summer_time_is_named(settings):
    settings.TIME_ZONE = "Europe/Berlin"
    assert local_text(datetime(2027, 7, 1, 12, 0, tzinfo=UTC)) == "2027-07-01 14:00 CEST"


@pytest.mark.parametrize("delta, text", [
    (timedelta(days=2, hours=1), "2 days left"),
    (timedelta(days=1, hours=23), "1 day left"),  # whole days, rounded down
    (timedelta(days=58, minutes=5), "58 days left"),
    (timedelta(hours=5, minutes=59), "5 hours left"),  # today
    (timedelta(hours=1), "1 hour left"),
    (timedelta(minutes=20), "under an hour left"),
    (timedelta(seconds=30), "now"),
    (timedelta(seconds=-30), "now"),
    (timedelta(hours=-2), "2 hours ago"),
    (timedelta(days=-1), "1 day ago"),
    (timedelta(days=-3, hours=-5), "3 days ago"),
])
def test_days_text(delta, text):
    assert days_text(NOW + delta, now=NOW) == text


def test_deadline_text(settings):
    assert deadline_text(NOW + timedelta(days=1, hours=2), now=NOW) == (
        "2027-01-28 22:25 UTC (1 day left)")
    settings.TIME_ZONE = "Asia/Tokyo"
    assert deadline_text(NOW - timedelta(days=2), now=NOW) == "2027-01-26 05:25 JST (2 days ago)"
    assert deadline_text(None, now=NOW) == ""


def test_djangos_own_date_format_is_the_same():
    # Django's columns and read-only fields (igregistry/formats).
    text = Template("{{ t }}|{{ t|date }}|{{ t|date:'SHORT_DATETIME_FORMAT' }}").render(
        Context({"t": NOW}))
    assert text == "2027-01-27 20:25 UTC|2027-01-27|2027-01-27 20:25 UTC"


@pytest.fixture
def account(db) -> Account:
    app = InstagramApp.objects.create(name="Shop", flavour="instagram_login", app_id="1",
                                      app_secret="app-secret-value-123",
                                      redirect_uri="https://example.com/cb/")
    account = Account.objects.create(app=app, label="Shop feed")
    now = timezone.now()
    Token.objects.create(account=account, value="IGAA-token-value-1234", kind="long",
                         obtained_at=now - timedelta(days=2),
                         expires_at=now + timedelta(days=58, hours=1),
                         last_refreshed_at=now - timedelta(days=2))
    Event.objects.create(created_at=now, account=account, account_label=account.label,
                         action="refresh", outcome="ok", message="Refreshed")
    return account


@pytest.mark.parametrize("zone, abbreviation", [("UTC", "UTC"), ("Asia/Tokyo", "JST")])
def test_admin_pages_show_one_format(admin_client, account, settings, zone, abbreviation):
    settings.TIME_ZONE = zone
    stamp = rf"\d{{4}}-\d\d-\d\d \d\d:\d\d {abbreviation}"
    pages = {
        "list": reverse("admin:accounts_account_changelist"),
        "change": reverse("admin:accounts_account_change", args=[account.pk]),
        "events": reverse("admin:accounts_event_changelist"),
        "event": reverse("admin:accounts_event_change",
                         args=[Event.objects.get(account=account).pk]),
        "dashboard": reverse("admin:accounts_account_dashboard"),
    }
    for name, url in pages.items():
        page = admin_client.get(url).content.decode()
        assert not UNWANTED.search(page), (name, UNWANTED.search(page))
        assert re.search(stamp, page), name
    # The list, short: days left, the exact time in the cell's title.
    listing = admin_client.get(pages["list"]).content.decode()
    assert re.search(r'title="' + stamp + r'">58 days left<', listing)
    change = admin_client.get(pages["change"]).content.decode()
    assert re.search(stamp + r" \(58 days left\)", change)  # expires
    assert re.search(stamp + r" \(2 days ago\)", change)  # last refreshed


def test_machine_output_stays_iso_utc(account, settings):
    from accounts import selectors

    settings.TIME_ZONE = "Asia/Tokyo"
    row = next(r for r in selectors.token_status_rows() if r["id"] == account.pk)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00", row["expires_at"])
