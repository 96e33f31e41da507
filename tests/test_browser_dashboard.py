"""The expiry dashboard at 50 accounts in a real browser (1280x800, as on a laptop): one
line per account and no sideways scrolling, search, and an action that returns to the
filtered page it was started from. With IGREGISTRY_SCREENSHOT_DIR=docs it also refreshes
README's picture (docs/dashboard.png)."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from accounts.models import Account, Event, InstagramApp, Token, TokenFile
from tests.test_browser import SCREENSHOT_DIR, browser, signed_in_page  # noqa: F401

pytestmark = pytest.mark.browser

PLACES = ["Bakery Mitte", "Café Luna", "Flower Studio", "Bike Repair Kreuzberg", "Yoga Loft",
          "Vinyl Corner", "Tattoo Atelier Nord", "Pasta Fresca", "Book Nook", "Surf School",
          "Ceramics Workshop", "Barber 1920", "Wine Bar Alto", "Climbing Hall Ost",
          "Green Grocer", "Dance Academy", "Kids Theatre", "Tea House Shizen", "Cycle Café",
          "Print Shop Paper & Co", "Dog Salon Fluffy", "Vegan Deli", "Jazz Club Blue",
          "Photo Lab Analog", "Cheese Cellar"]
STATES = (["needs_reauth", "pending", "file_problem", "error"]
          + ["expiring"] * 4 + ["refresh_due"] * 10 + ["healthy"] * 32)


def fifty_accounts() -> list[Account]:
    """Fifty accounts of two apps, in every state, with usernames, token files and a
    refresh history, like a site that runs many feeds."""
    now = timezone.now()
    apps = [InstagramApp.objects.create(name=name, flavour="instagram_login", app_id=str(i),
                                        app_secret=f"app-secret-value-{i:04d}",
                                        redirect_uri="https://example.com/cb/")
            for i, name in enumerate(["Shop feeds", "Agency clients"], start=1)]
    accounts = []
    for i, state in enumerate(STATES):
        place = PLACES[i % len(PLACES)] + ("" if i < len(PLACES) else " 2")
        username = place.lower().replace(" & ", "_").replace(" ", "_").replace("é", "e")
        account = Account.objects.create(app=apps[i % 3 == 0], label=place,
                                         token_filename="" if i % 4 else f"{username}.json")
        status = {"needs_reauth": "needs_reauth", "pending": "pending",
                  "error": "error"}.get(state, "active")
        Account.objects.filter(pk=account.pk).update(
            status=status, username=username if state != "pending" else "",
            file_state="unwritable" if state == "file_problem" else "in_sync",
            last_error="Instagram answered 500 twice" if state == "error" else "")
        if state != "pending":
            left = {"expiring": timedelta(days=2 + i % 5),
                    "refresh_due": timedelta(days=12 + i)}.get(state, timedelta(days=52 + i % 8))
            Token.objects.create(account=account, value=f"IGAA-browser-token-{i:04d}",
                                 kind="long", obtained_at=now - timedelta(days=7),
                                 expires_at=now + left)
            TokenFile.objects.create(name=account.token_filename or username, account=account,
                                     account_label=place, claimed_at=now)
            Event.objects.create(created_at=now - timedelta(days=1 + i % 6), account=account,
                                 account_label=place, action="refresh",
                                 outcome="failed" if state == "error" else "ok")
        accounts.append(account)
    return accounts


@pytest.fixture
def laptop(browser, live_server, settings, django_user_model):  # noqa: F811
    """A signed-in superuser's page, 1280x800, and fifty accounts."""
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    fifty_accounts()
    with signed_in_page(browser, live_server, django_user_model) as page:
        yield page


ROW_HEIGHTS = ("[...document.querySelectorAll('#dashboard-table tbody tr')]"
               ".map(r => r.getBoundingClientRect().height)")
# Cells whose text is cut (with an ellipsis): "column:text".
CUT_CELLS = ("[...document.querySelectorAll('#dashboard-table tbody td')]"
             ".filter(c => c.scrollWidth > c.clientWidth)"
             ".map(c => c.cellIndex + ':' + c.innerText)")
OVERFLOW = "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"


def test_fifty_accounts_one_line_each_without_sideways_scrolling(laptop, live_server, tmp_path):
    laptop.goto(f"{live_server.url}/admin/accounts/account/dashboard/")
    rows = laptop.locator("#dashboard-table tbody tr")
    assert rows.count() == 50
    scroll_width, client_width = laptop.evaluate(OVERFLOW)
    assert scroll_width <= client_width
    # What matters most is never cut: the expiry with its days left.
    cut = laptop.evaluate(CUT_CELLS)
    assert not [cell for cell in cut if cell.startswith("3:")], cut
    heights = laptop.evaluate(ROW_HEIGHTS)
    assert len(set(heights)) == 1 and heights[0] < 40, heights
    # The table uses the page's width, the chart too.
    table = laptop.locator("#dashboard-table").bounding_box()
    chart = laptop.locator("#expiry-chart").bounding_box()
    assert chart["width"] >= table["width"] - 2 and table["width"] > 1100
    assert "Page 1 of 1 · 50 accounts" in laptop.inner_text("#dash-paginator")
    # A day's detail on hover.
    title = laptop.locator("#expiry-chart g.day title").first.text_content()
    assert title.endswith("no token expires") or "expire" in title

    shot = tmp_path / "dashboard.png"
    laptop.screenshot(path=str(shot))  # the 1280x800 a laptop shows
    assert shot.stat().st_size > 10_000
    if SCREENSHOT_DIR:
        shutil.copy(shot, Path(SCREENSHOT_DIR) / "dashboard.png")


def test_search_narrows_the_rows(laptop, live_server):
    laptop.goto(f"{live_server.url}/admin/accounts/account/dashboard/")
    laptop.fill("#dash-search", "café")
    laptop.click("#dash-submit")
    laptop.wait_for_url("**q=caf*")
    labels = laptop.locator("#dashboard-table tbody tr td:first-child a").all_inner_texts()
    assert sorted(labels) == ["Café Luna", "Café Luna 2", "Cycle Café", "Cycle Café 2"]
    # By token file name too.
    laptop.fill("#dash-search", "vinyl_corner.json")
    laptop.click("#dash-submit")
    laptop.wait_for_url("**q=vinyl_corner.json*")
    assert laptop.locator("#dashboard-table tbody tr").count() == 1


def test_an_action_returns_to_the_filtered_page(laptop, live_server, token_dir):
    start = f"{live_server.url}/admin/accounts/account/dashboard/?state=refresh_due&o=label"
    laptop.goto(start)
    row = laptop.locator("#dashboard-table tbody tr").first
    label = row.locator("td:first-child a").inner_text()
    row.locator("summary").click()
    row.locator("button[data-action=export]").click()
    laptop.wait_for_selector(".messagelist .success")
    assert laptop.url == start
    assert laptop.inner_text(".messagelist .success").startswith(f"{label} (@")
    assert ": wrote " in laptop.inner_text(".messagelist .success")
    states = laptop.locator("#dashboard-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.state)")
    assert set(states) == {"refresh_due"} and len(states) == 10
