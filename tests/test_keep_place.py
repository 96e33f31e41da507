"""Keeping staff's place (issue 13): actions started from the dashboard come back to that
page with its filters; a new account opens its own page; `/?state=` keeps the filter;
the admin index links to the dashboard; a `next` to another site is never followed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import Account, Event, InstagramApp, Token
from tests.conftest import OTHER_SITE_URI, allow_at_fake

DASHBOARD = reverse("admin:accounts_account_dashboard")
CHANGELIST = reverse("admin:accounts_account_changelist")
HERE = f"{DASHBOARD}?state=refresh_due&q=shop&o=-expires&page=1"


@pytest.fixture
def app(db) -> InstagramApp:
    return InstagramApp.objects.create(name="Shop", flavour="instagram_login", app_id="1",
                                       app_secret="app-secret-value-123",
                                       redirect_uri="https://example.com/cb/")


@pytest.fixture
def shop(app) -> Account:
    account = Account.objects.create(app=app, label="Shop feed", export_enabled=True)
    Account.objects.filter(pk=account.pk).update(status="active", username="shop_owner")
    now = timezone.now()
    Token.objects.create(account=account, value="IGAA-token-value-5678", kind="long",
                         obtained_at=now - timedelta(days=20),
                         expires_at=now + timedelta(days=40))
    return account


def act(admin_client, account: Account, action: str, next_url: str | None):
    data = {"action": action, "_selected_action": [account.pk], "index": "0"}
    if next_url is not None:
        data["next"] = next_url
    return admin_client.post(CHANGELIST, data)


@pytest.mark.parametrize("action", ["export_action", "refresh_action"])
def test_an_action_from_the_dashboard_returns_to_it(admin_client, shop, action, token_dir):
    response = act(admin_client, shop, action, HERE)
    assert response.status_code == 302 and response["Location"] == HERE
    # Without `next` (the list's own form) it stays on the list, as Django does.
    assert act(admin_client, shop, action, None)["Location"] == CHANGELIST


def test_export_from_the_dashboard_did_export(admin_client, shop, token_dir):
    response = act(admin_client, shop, "export_action", HERE)
    assert response["Location"] == HERE
    assert (token_dir / "shop_owner").read_text() == "IGAA-token-value-5678"
    page = admin_client.get(HERE).content.decode()
    assert "Shop feed (@shop_owner): wrote" in page


def test_a_refused_action_also_returns(admin_client, shop, django_user_model, client):
    viewer = django_user_model.objects.create_user("viewer", password="pw-viewer-123",
                                                   is_staff=True)
    from django.contrib.auth.models import Permission
    # May verify (so the list has actions) but not export.
    viewer.user_permissions.add(Permission.objects.get(codename="view_account"),
                                Permission.objects.get(codename="verify_account"))
    client.force_login(viewer)
    response = client.post(CHANGELIST, {"action": "export_action", "index": "0",
                                        "_selected_action": [shop.pk], "next": HERE})
    assert response["Location"] == HERE
    assert not (Event.objects.filter(action="export").exists())


@pytest.mark.parametrize("target", [
    "https://evil.example/", "//evil.example/x", "/\\evil.example", "http://testserver.evil/",
    "javascript:alert(1)",
])
def test_next_to_another_site_is_not_followed(admin_client, shop, target):
    response = act(admin_client, shop, "refresh_action", target)
    assert response["Location"] == CHANGELIST


def test_the_dashboard_posts_its_own_address_as_next(admin_client, shop):
    page = admin_client.get(HERE).content.decode()
    assert page.count('name="next" value="/admin/accounts/account/dashboard/?state=refresh_due'
                      '&amp;q=shop&amp;o=-expires&amp;page=1"') >= 2  # Verify, the menu
    history = (f"/admin/accounts/event/?account__id__exact={shop.pk}&amp;next="
               "/admin/accounts/account/dashboard/%3Fstate%3Drefresh_due")
    assert history in page


def test_history_opened_from_the_dashboard_links_back(admin_client, shop):
    Event.objects.create(created_at=timezone.now(), account=shop, account_label=shop.label,
                         action="refresh", outcome="ok", message="Refreshed")
    events = reverse("admin:accounts_event_changelist")
    response = admin_client.get(events, {"account__id__exact": shop.pk, "next": HERE})
    assert response.status_code == 200  # `next` is not read as a filter (no ?e=1)
    page = response.content.decode()
    assert 'id="back-to-dashboard"' in page and HERE.replace("&", "&amp;") in page
    assert response.context["cl"].result_count == 1
    unsafe = admin_client.get(events, {"next": "https://evil.example/"}).content.decode()
    assert 'id="back-to-dashboard"' not in unsafe


def test_authorize_from_the_dashboard_comes_back_after_the_callback(
        admin_client, login_account, fake, token_dir):
    fake.add_user("shop_owner", id="17841405793187218")
    response = admin_client.post(
        reverse("admin:accounts_account_authorize", args=[login_account.pk]), {"next": HERE})
    assert response.status_code == 302
    location = allow_at_fake(response["Location"], username="shop_owner")
    parts = location.split("testserver", 1)[1].split("#")[0]
    response = admin_client.get(parts)
    assert response.status_code == 302 and response["Location"] == HERE
    login_account.refresh_from_db()
    assert login_account.status == Account.Status.ACTIVE
    # Once: the next authorization, started on the account's page, ends there.
    response = admin_client.post(
        reverse("admin:accounts_account_authorize", args=[login_account.pk]))
    location = allow_at_fake(response["Location"], username="shop_owner")
    response = admin_client.get(location.split("testserver", 1)[1].split("#")[0])
    assert response["Location"] == reverse("admin:accounts_account_change",
                                           args=[login_account.pk])


def test_authorize_by_paste_from_the_dashboard_comes_back(admin_client, login_account, fake,
                                                          token_dir):
    login_account.app.redirect_uri = OTHER_SITE_URI
    login_account.app.save()
    response = admin_client.post(
        reverse("admin:accounts_account_authorize", args=[login_account.pk]), {"next": HERE})
    assert response.status_code == 200  # the paste page
    location = allow_at_fake(response.context["authorize_url"])
    response = admin_client.post(reverse("admin:accounts_account_paste",
                                         args=[login_account.pk]), {"redirected_url": location})
    assert response.status_code == 302 and response["Location"] == HERE


def test_saving_a_new_account_opens_its_page(admin_client, app):
    response = admin_client.post(reverse("admin:accounts_account_add"), {
        "app": app.pk, "label": "New feed", "export_enabled": "on", "export_format": "text",
        "token_filename": "", "_save": "Save"})
    assert response.status_code == 302, response.content.decode()[:2000]
    account = Account.objects.get(label="New feed")
    assert response["Location"] == reverse("admin:accounts_account_change", args=[account.pk])
    page = admin_client.get(response["Location"]).content.decode()
    assert 'id="authorize-button"' in page


def test_root_keeps_the_filter(client, admin_client):
    response = admin_client.get("/?state=needs_reauth&app=3")
    assert response.status_code == 302
    assert response["Location"] == f"{DASHBOARD}?state=needs_reauth&app=3"
    # Signed out: the login page sends the user on to the filtered dashboard.
    response = client.get("/?state=needs_reauth", follow=True)
    assert response.redirect_chain[-1][0].startswith(reverse("admin:login"))
    assert "state%3Dneeds_reauth" in response.redirect_chain[-1][0]


def test_the_admin_index_links_to_the_dashboard(admin_client, client, django_user_model):
    page = admin_client.get(reverse("admin:index")).content.decode()
    assert f'href="{DASHBOARD}" id="index-dashboard-link"' in page
    staff = django_user_model.objects.create_user("plainstaff", password="pw-staff-12345",
                                                  is_staff=True)
    client.force_login(staff)
    assert "index-dashboard-link" not in client.get(reverse("admin:index")).content.decode()
