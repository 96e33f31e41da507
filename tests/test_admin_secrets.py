"""The admin never shows a secret: app secrets are write-only, tokens appear masked, and
the event log cannot be edited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from django.db import connection
from django.urls import reverse

from accounts import services
from accounts.instagram import mask
from accounts.models import Account, Event, InstagramApp, Token

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SECRET = "typed-app-secret-0123456789abWXyz"
NEW_SECRET = "replacement-secret-fedcba987654Qr7s"
TOKEN = "IGAAadmintesttoken0123456789abcdefghijklmnopqrstuvwxyzK3m9"
ADD_URL = reverse("admin:accounts_instagramapp_add")
APP_LIST_URL = reverse("admin:accounts_instagramapp_changelist")


def app_form(**overrides: str) -> dict[str, str]:
    data = {
        "name": "Shop app",
        "flavour": "instagram_login",
        "app_id": "1000000000000001",
        "app_secret": SECRET,
        "redirect_uri": "https://www.example.com/oauth/callback/",
        "scopes": "",
    }
    data.update(overrides)
    return data


def raw_secret(app: InstagramApp) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT app_secret FROM accounts_instagramapp WHERE id = %s", [app.pk])
        return cursor.fetchone()[0]


def assert_hidden(html: str, secret: str) -> None:
    assert secret not in html
    assert secret[:-4] not in html  # not even all but the tail
    assert mask(secret) in html


@pytest.fixture
def app(db) -> InstagramApp:
    return InstagramApp.objects.create(**app_form())


def change_url(app: InstagramApp) -> str:
    return reverse("admin:accounts_instagramapp_change", args=[app.pk])


# --- adding an app ------------------------------------------------------------------


def test_add_app_stores_the_typed_secret_encrypted(admin_client, settings):
    response = admin_client.post(ADD_URL, app_form())

    assert response.status_code == 302, response.content.decode()
    app = InstagramApp.objects.get()
    assert app.app_secret == SECRET
    stored = raw_secret(app)
    assert SECRET not in stored
    assert Fernet(settings.ENCRYPTION_KEYS[0].encode()).decrypt(stored.encode()) == SECRET.encode()


def test_add_app_strips_surrounding_whitespace(admin_client):
    response = admin_client.post(ADD_URL, app_form(app_secret=f"  {SECRET}\n"))

    assert response.status_code == 302
    assert InstagramApp.objects.get().app_secret == SECRET


def test_add_page_does_not_offer_a_stored_secret(admin_client):
    response = admin_client.get(ADD_URL)

    assert response.status_code == 200
    assert 'type="password"' in response.content.decode()


def test_add_app_without_secret_is_refused(admin_client):
    response = admin_client.post(ADD_URL, app_form(app_secret=""))

    assert response.status_code == 200
    assert "The app secret is required." in response.content.decode()
    assert response.context["adminform"].form.errors["app_secret"] == [
        "The app secret is required."
    ]
    assert not InstagramApp.objects.exists()


def test_add_app_with_a_spaced_secret_is_refused(admin_client):
    response = admin_client.post(ADD_URL, app_form(app_secret="two words"))

    assert response.status_code == 200
    assert "An app secret has no spaces." in response.content.decode()
    assert not InstagramApp.objects.exists()


def test_failed_add_does_not_echo_the_typed_secret(admin_client):
    response = admin_client.post(ADD_URL, app_form(app_id="12ab"))

    assert response.status_code == 200
    assert SECRET not in response.content.decode()


@pytest.mark.parametrize(
    ("flavour", "scopes", "unknown"),
    [
        ("instagram_login", "user_profile", "user_profile"),
        ("instagram_login", "business_basic", "business_basic"),
        ("instagram_login", "instagram_business_basic,user_media", "user_media"),
        ("basic_display", "instagram_business_basic", "instagram_business_basic"),
    ],
)
def test_scopes_of_another_flavour_are_refused(admin_client, flavour, scopes, unknown):
    response = admin_client.post(ADD_URL, app_form(flavour=flavour, scopes=scopes))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["scopes"]
    assert unknown in errors["scopes"][0]
    assert not InstagramApp.objects.exists()


def test_scopes_of_the_flavour_are_accepted(admin_client):
    scopes = "instagram_business_basic, instagram_business_manage_comments"

    response = admin_client.post(ADD_URL, app_form(scopes=scopes))

    assert response.status_code == 302
    assert InstagramApp.objects.get().scope_list() == (
        "instagram_business_basic", "instagram_business_manage_comments"
    )


@pytest.mark.parametrize("app_id", ["12ab", "1000-0001", " "])
def test_app_id_must_be_digits(admin_client, app_id):
    response = admin_client.post(ADD_URL, app_form(app_id=app_id))

    assert response.status_code == 200
    assert "app_id" in response.context["adminform"].form.errors
    assert not InstagramApp.objects.exists()


# --- changing an app ----------------------------------------------------------------


def test_change_page_shows_only_the_masked_secret(admin_client, app):
    response = admin_client.get(change_url(app))

    assert response.status_code == 200
    html = response.content.decode()
    assert_hidden(html, SECRET)
    assert f"…{SECRET[-4:]}" in html


def test_blank_secret_on_change_keeps_the_old_one(admin_client, app):
    response = admin_client.post(change_url(app), app_form(name="Renamed", app_secret=""))

    assert response.status_code == 302, response.content.decode()
    app.refresh_from_db()
    assert app.name == "Renamed"
    assert app.app_secret == SECRET


def test_new_secret_on_change_replaces_the_old_one(admin_client, app, settings):
    response = admin_client.post(change_url(app), app_form(app_secret=NEW_SECRET))

    assert response.status_code == 302
    app.refresh_from_db()
    assert app.app_secret == NEW_SECRET
    stored = Fernet(settings.ENCRYPTION_KEYS[0].encode()).decrypt(raw_secret(app).encode())
    assert stored == NEW_SECRET.encode()
    html = admin_client.get(change_url(app)).content.decode()
    assert_hidden(html, NEW_SECRET)
    assert mask(SECRET) not in html


def test_failed_change_does_not_show_the_stored_secret(admin_client, app):
    response = admin_client.post(change_url(app), app_form(app_secret="", scopes="user_media"))

    assert response.status_code == 200
    assert_hidden(response.content.decode(), SECRET)
    app.refresh_from_db()
    assert app.scopes == ""


def test_app_changelist_shows_only_the_masked_secret(admin_client, app):
    response = admin_client.get(APP_LIST_URL)

    assert response.status_code == 200
    assert_hidden(response.content.decode(), SECRET)


def test_app_history_does_not_show_the_secret(admin_client, app):
    admin_client.post(change_url(app), app_form(app_secret=NEW_SECRET))

    response = admin_client.get(reverse("admin:accounts_instagramapp_history", args=[app.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert SECRET not in html
    assert NEW_SECRET not in html


# --- accounts and their tokens ------------------------------------------------------


@pytest.fixture
def account(app) -> Account:
    account = Account.objects.create(app=app, label="Shop feed")
    Account.objects.filter(pk=account.pk).update(username="shop_owner",
                                                 ig_id="17841400000000001")
    Token.objects.create(account=account, value=TOKEN, kind="long", obtained_at=NOW,
                         expires_at=NOW + timedelta(days=60),
                         permissions=["instagram_business_basic"])
    return account


def test_account_changelist_shows_only_the_masked_token(admin_client, account):
    response = admin_client.get(reverse("admin:accounts_account_changelist"))

    assert response.status_code == 200
    html = response.content.decode()
    assert "Shop feed" in html
    assert_hidden(html, TOKEN)
    assert SECRET not in html


def test_account_change_page_shows_only_the_masked_token(admin_client, account):
    response = admin_client.get(reverse("admin:accounts_account_change", args=[account.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert_hidden(html, TOKEN)
    assert SECRET not in html


def test_account_import_page_does_not_show_the_token(admin_client, account):
    response = admin_client.get(reverse("admin:accounts_account_import", args=[account.pk]))

    assert response.status_code == 200
    assert TOKEN not in response.content.decode()


# --- the event log ------------------------------------------------------------------


@pytest.fixture
def event(account) -> Event:
    return services.event_record(account=account, action="export", outcome="ok",
                                 message="Wrote a file.", actor=services.Actor(job="test"),
                                 now=NOW)


def test_event_admin_add_is_forbidden(admin_client, event):
    url = reverse("admin:accounts_event_add")

    assert admin_client.get(url).status_code == 403
    assert admin_client.post(url, {"action": "x", "outcome": "ok"}).status_code == 403
    assert Event.objects.count() == 1


def test_event_admin_change_is_forbidden(admin_client, event):
    url = reverse("admin:accounts_event_change", args=[event.pk])

    response = admin_client.post(url, {"action": "tampered", "outcome": "failed",
                                       "message": "tampered"})

    assert response.status_code == 403
    event.refresh_from_db()
    assert (event.action, event.outcome, event.message) == ("export", "ok", "Wrote a file.")


def test_event_admin_change_page_is_read_only(admin_client, event):
    # Viewing is allowed (the log is there to be read); nothing on the page can save.
    response = admin_client.get(reverse("admin:accounts_event_change", args=[event.pk]))

    assert response.status_code == 200
    assert response.context["has_change_permission"] is False
    html = response.content.decode()
    assert 'name="_save"' not in html
    assert 'name="action"' not in html


def test_event_admin_delete_is_forbidden(admin_client, event):
    url = reverse("admin:accounts_event_delete", args=[event.pk])

    assert admin_client.get(url).status_code == 403
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert Event.objects.filter(pk=event.pk).exists()


def test_event_admin_has_no_bulk_delete(admin_client, event):
    url = reverse("admin:accounts_event_changelist")

    response = admin_client.post(url, {"action": "delete_selected",
                                       "_selected_action": [event.pk], "post": "yes"})

    assert response.status_code in (200, 302)
    assert Event.objects.filter(pk=event.pk).exists()
    assert "delete_selected" not in admin_client.get(url).content.decode()


def test_lists_filtered_by_app_never_decrypt_an_app_secret(admin_client, login_app):
    """The "by app" filters of the account, data-deletion and owner-link lists read the
    apps' names only: one secret no key decrypts must not fail the pages."""
    from django.db import connection

    Account.objects.create(app=login_app, label="Shop")
    with connection.cursor() as cursor:  # raw: the field would encrypt whatever it gets
        cursor.execute("UPDATE accounts_instagramapp SET app_secret = %s WHERE id = %s",
                       ["not-a-fernet-token", login_app.pk])
    for name in ("account", "datadeletionrequest", "ownerlink"):
        page = admin_client.get(reverse(f"admin:accounts_{name}_changelist"))
        assert page.status_code == 200, name
