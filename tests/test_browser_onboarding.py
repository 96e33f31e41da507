"""Onboarding in a real browser (1280x800): the account's checklist for each flavour, and
the guidance page after Instagram refuses the code ("Insufficient developer role")."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from accounts.models import Account, Event, InstagramApp
from tests.fake_instagram import status
from tests.test_browser import browser, signed_in_page  # noqa: F401  (chromium, shared)

pytestmark = pytest.mark.browser

PASSWORD = "onboarding-test-password-1"
LOGIN_ID, LOGIN_SECRET = "1000000000000011", "onboarding-login-secret-1a2b"
BASIC_ID, BASIC_SECRET = "1000000000000012", "onboarding-basic-secret-3c4d"
SCREENSHOT_DIR = os.environ.get("IGREGISTRY_SCREENSHOT_DIR")


@pytest.fixture
def page(browser, live_server, fake, settings, django_user_model):  # noqa: F811
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    settings.SITE_URL = live_server.url
    callback = f"{live_server.url}/oauth/callback/"
    fake.add_app(LOGIN_ID, LOGIN_SECRET, [callback], flavour="instagram_login",
                 name="Shop feeds")
    fake.add_user("demo_user", id="17841405793187219")
    with signed_in_page(browser, live_server, django_user_model, password=PASSWORD) as page:
        yield page


def make_account(live_server, flavour: str, label: str) -> Account:
    app_id, secret = (LOGIN_ID, LOGIN_SECRET) if flavour == "instagram_login" else (
        BASIC_ID, BASIC_SECRET)
    app = InstagramApp.objects.create(
        name="Shop feeds" if flavour == "instagram_login" else "Old display app",
        flavour=flavour, app_id=app_id, app_secret=secret,
        redirect_uri=f"{live_server.url}/oauth/callback/")
    return Account.objects.create(app=app, label=label)


def step(page, key: str):  # noqa: ANN001, ANN201
    return page.locator(f"#onboarding li[data-step='{key}']")


def test_instagram_login_checklist_walks_to_done(page, live_server, fake, tmp_path):
    account = make_account(live_server, "instagram_login", "Shop feed")
    page.goto(f"{live_server.url}/admin/accounts/account/{account.pk}/change/")
    assert step(page, "app").get_attribute("data-done") == "true"
    for key in ("role", "authorized", "file"):
        assert step(page, key).get_attribute("data-done") == "false"
    assert "Business or Creator" in step(page, "role").inner_text()
    assert "3 open" in page.inner_text("#onboarding h2")

    page.click("#confirm-role-button")
    page.wait_for_selector("#unconfirm-role-button")
    assert step(page, "role").get_attribute("data-done") == "true"
    assert "Confirmed by staff" in step(page, "role").inner_text()
    assert Event.objects.filter(account=account, action="role_confirmed").exists()
    page.goto(f"{live_server.url}/admin/accounts/account/{account.pk}/change/")  # the top
    shot = tmp_path / "onboarding-checklist.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if SCREENSHOT_DIR:
        shutil.copy(shot, Path(SCREENSHOT_DIR) / "onboarding-checklist.png")

    page.click("#checklist-authorize")
    page.wait_for_selector("#allow")
    page.fill("#username", "demo_user")
    page.click("#allow")
    page.wait_for_selector(".messagelist .success")
    for key in ("app", "role", "authorized", "file"):
        assert step(page, key).get_attribute("data-done") == "true", key
    assert "(all done)" in page.inner_text("#onboarding h2")
    assert "instagram_business_basic (requested; Instagram did not say)" in page.content()


def test_basic_display_checklist_says_the_api_is_gone(page, live_server):
    account = make_account(live_server, "basic_display", "Old feed")
    page.goto(f"{live_server.url}/admin/accounts/account/{account.pk}/change/")
    text = step(page, "app").inner_text()
    assert step(page, "app").get_attribute("data-done") == "false"
    assert "shut down on 2024-12-04" in text and "Instagram Login" in text
    assert "accepted Instagram tester" in step(page, "role").inner_text()
    page.click("#onboarding a:text('Meta setup values')")
    page.wait_for_selector("#meta-setup")
    assert page.is_visible("#flavour-retired")


def test_insufficient_role_shows_the_guidance_page(page, live_server, fake):
    account = make_account(live_server, "instagram_login", "Untested feed")
    fake.inject("/oauth/access_token", status(400, json.dumps({
        "error_type": "OAuthException", "code": 400,
        "error_message": "Insufficient developer role"}), "application/json"))
    page.goto(f"{live_server.url}/admin/accounts/account/{account.pk}/change/")
    page.click("#authorize-button")
    page.wait_for_selector("#allow")
    page.fill("#username", "demo_user")
    page.click("#allow")

    page.wait_for_selector("#flow-error")
    assert page.title() == "Authorization failed | igregistry"
    assert page.is_visible("#user-tools")
    assert "Instagram refused: Insufficient developer role" in page.inner_text("#flow-error")
    assert page.content().count("Nothing was stored") == 1
    guidance = page.inner_text("#flow-guidance")
    assert "Instagram Testers" in guidance and "accept the invitation" in guidance
    page.click("#back-to-account")
    page.wait_for_selector("#onboarding")
    assert "The last attempt failed" in step(page, "authorized").inner_text()
