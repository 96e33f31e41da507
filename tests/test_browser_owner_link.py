"""An owner link in real browsers: an operator creates it in the admin, the owner opens it
in a browser of their own (not signed in), continues to the fake Instagram, allows, and
lands on the thank-you page. Same set-up as tests/test_browser.py."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest

from accounts.models import Account, AlertDelivery, OwnerLink, Token
from tests.test_browser import add_app_and_account, browser, page  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


def test_an_owner_authorizes_through_a_link(page, browser, live_server, fake,  # noqa: F811
                                            settings, token_dir):
    settings.SITE_URL = live_server.url  # the link is made on the public address
    settings.ALERT_EMAILS = ["ops@example.com"]
    account = add_app_and_account(page, live_server, "Owner feed")

    page.click("#owner-link-button")
    page.fill("#id_days", "2")
    page.click("#create-owner-link")
    page.wait_for_selector("#owner-link")
    link = page.input_value("#owner-link")
    assert link.startswith(f"{live_server.url}/owner/authorize/?link=")
    assert "shown only now" in page.inner_text("#shown-once")
    assert page.locator("#copy-owner-link").is_visible()
    secret = parse_qs(urlsplit(link).query)["link"][0]
    stored = OwnerLink.objects.get(account=account)
    assert stored.secret_hash == hashlib.sha256(secret.encode()).hexdigest()

    # The owner: another browser, nobody signed in.
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    owner = context.new_page()
    owner.set_default_timeout(15_000)
    try:
        owner.goto(link)
        assert "Owner feed" in owner.inner_text("#owner-account")
        assert "Shop feeds" in owner.inner_text("#owner-account")
        assert "/admin/" not in owner.content() and secret not in owner.content()
        owner.click("#owner-continue")
        owner.wait_for_selector("#allow")  # Instagram's (the fake's) dialog
        assert owner.url.startswith(fake.url + "/oauth/authorize")
        owner.fill("#username", "demo_user")
        owner.click("#allow")

        owner.wait_for_selector("#owner-done")
        text = owner.inner_text("main")
        assert "Owner feed" in text and "@demo_user" in text
        assert "/owner/authorized/" in owner.url
        token = Token.objects.get(account=account)
        assert token.value not in owner.content()

        # Spent: opening the link again says so.
        owner.goto(link)
        assert "already used" in owner.inner_text("#owner-refused")
    finally:
        context.close()

    stored.refresh_from_db()
    assert stored.used_at is not None
    account.refresh_from_db()
    assert account.status == Account.Status.ACTIVE and account.username == "demo_user"
    assert (token_dir / "demo_user").read_text() == token.value
    assert AlertDelivery.objects.filter(subject__contains="owner authorized").exists()
