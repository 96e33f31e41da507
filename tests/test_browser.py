"""The whole flow in a real browser: Playwright driving Debian's chromium against the
registry (live server) and the fake Instagram."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from accounts.models import Account, InstagramApp, Token
from tests.conftest import require_service

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CLIENT_ID, SECRET = "1000000000000001", "browser-app-secret-5e6f7a8b"
PASSWORD = "browser-test-password-1"
# bin/test with IGREGISTRY_SCREENSHOT_DIR=docs refreshes README's picture (taken by
# test_browser_dashboard).
SCREENSHOT_DIR = os.environ.get("IGREGISTRY_SCREENSHOT_DIR")


@pytest.fixture(scope="module")
def browser():
    require_service("chromium", Path(CHROMIUM).exists(), "apt-get install chromium")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes
    # between page actions are ordinary blocking calls, not coroutines.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        yield browser
        browser.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@contextmanager
def signed_in_page(browser, live_server, django_user_model, *, password: str = PASSWORD,  # noqa: ANN001
                   width: int = 1280, height: int = 800) -> Iterator:
    """A page of a fresh browser context at `width`x`height`, signed in to the admin as a
    new superuser "staff"; the context is closed afterwards. (Every browser test file's
    page fixture starts here.)"""
    django_user_model.objects.create_superuser("staff", "staff@example.com", password)
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def page(browser, live_server, fake, settings, django_user_model):
    # Plain http on localhost: cookies marked Secure would not come back.
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    fake.add_app(CLIENT_ID, SECRET, [f"{live_server.url}/oauth/callback/"],
                 flavour="instagram_login", name="Shop feeds")
    fake.add_user("demo_user", id="17841405793187219")
    with signed_in_page(browser, live_server, django_user_model, width=1400,
                        height=1000) as page:
        yield page


def add_app_and_account(page, live_server, label: str) -> Account:
    if not InstagramApp.objects.exists():
        page.goto(f"{live_server.url}/admin/accounts/instagramapp/add/")
        page.fill("#id_name", "Shop feeds")
        page.select_option("#id_flavour", "instagram_login")
        page.fill("#id_app_id", CLIENT_ID)
        page.fill("#id_app_secret", SECRET)
        page.fill("#id_redirect_uri", f"{live_server.url}/oauth/callback/")
        page.click("input[name=_save]")
        page.wait_for_selector(".messagelist .success")
        assert SECRET not in page.content()
    page.goto(f"{live_server.url}/admin/accounts/account/add/")
    page.select_option("#id_app", label="Shop feeds")
    page.fill("#id_label", label)
    page.click("input[name=_continue]")
    page.wait_for_selector("#authorize-button")
    return Account.objects.get(label=label)


def test_authorize_in_the_browser_and_see_it_healthy(page, live_server, fake, tmp_path):
    account = add_app_and_account(page, live_server, "Shop feed")

    page.click("#authorize-button")
    page.wait_for_selector("#allow")  # Instagram's (the fake's) dialog
    assert page.url.startswith(fake.url + "/oauth/authorize")
    assert page.inner_text("#app-name") == "Shop feeds"
    page.fill("#username", "demo_user")
    page.click("#allow")

    page.wait_for_selector(".messagelist .success")
    message = page.inner_text(".messagelist .success")
    assert "authorized as @demo_user" in message
    # (The browser keeps Instagram's "#_" across the redirects: fragments never reach us.)
    assert page.url.split("#")[0].endswith(f"/admin/accounts/account/{account.pk}/change/")
    token = Token.objects.get(account=account)
    assert abs(token.expires_at - (timezone.now() + timedelta(days=60))) < timedelta(minutes=5)
    assert token.value not in page.content()
    assert f"…{token.value[-4:]}" in page.content()

    page.click("text=Accounts")
    page.click("#dashboard-link")
    row = page.locator(f"tr[data-account='{account.pk}']")
    assert row.get_attribute("data-state") == "healthy"
    assert "Healthy" in row.inner_text()
    assert token.expires_at.strftime("%Y-%m-%d") in row.inner_text()
    time_left = row.locator(".time-left").inner_text()
    assert time_left in ("59 days left", "60 days left")
    assert page.inner_text("#state-counts a[data-state='healthy'] strong") == "1"
    bars = page.locator("#expiry-chart rect.bar")
    assert bars.count() == 1
    title = page.locator("#expiry-chart g.day:has(rect.bar) title").first
    assert title.text_content().startswith(
        f"{token.expires_at:%Y-%m-%d} ({token.expires_at:%a}): 1 token expires: 1 healthy")

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    # (README's picture comes from test_browser_dashboard: fifty accounts, 1280x800.)


def test_cancel_at_instagram_stores_nothing(page, live_server, fake, token_dir):
    account = add_app_and_account(page, live_server, "Cancelled feed")
    page.click("#authorize-button")
    page.wait_for_selector("#cancel")
    page.click("#cancel")

    page.wait_for_selector("#flow-error")
    text = page.inner_text("#flow-error")
    assert "not granted" in text and "access_denied" in text
    assert "Nothing was stored" in page.content()
    assert not Token.objects.filter(account=account).exists()
    account.refresh_from_db()
    assert account.status == Account.Status.PENDING
    assert not token_dir.exists() or not any(token_dir.iterdir())
    page.click(f"text=Back to {account.label}")
    page.wait_for_selector("#authorize-button")
