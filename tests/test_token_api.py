"""The token API (issue 12, item 1): `GET /api/v1/tokens/<account>` with a scoped API key,
ETag and If-None-Match, each read logged without the token; keys created (shown once) and
revoked in the admin by operators only."""

from __future__ import annotations

import json
import logging

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from accounts import services
from accounts.models import Account, ApiKey, Event
from accounts.selectors.api import api_key_hash
from accounts.services import Actor
from tests.conftest import active_account, make_app

NOW = timezone.now


def url(name: str | int) -> str:
    return reverse("api-token", args=[str(name)])


def bearer(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


@pytest.fixture
def feed(fake, login_app, token_dir) -> Account:
    return active_account(fake, login_app, "Shop feed", exported=True)


@pytest.fixture
def key(feed) -> str:
    _, secret, _ = services.api_key_create(name="site-a", accounts=[feed], user=None, now=NOW())
    return secret


def test_a_scoped_key_reads_the_token_its_expiry_and_ids(client, feed, key):
    response = client.get(url(feed.pk), **bearer(key))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = json.loads(response.content)
    assert body["access_token"] == feed.token.value
    assert body["expires_at"] == feed.token.expires_at.isoformat()
    assert body["account"] == feed.pk and body["status"] == "active"
    assert body["instagram"] == {"id": feed.ig_id, "user_id": None, "exchange_user_id": None}
    assert body["token_file"] == "shop_feed"
    assert response["ETag"].startswith('"') and "private" in response["Cache-Control"]
    assert response["Vary"] == "Authorization"


def test_the_account_may_be_named_by_its_token_file(client, feed, key):
    by_name = client.get(url("shop_feed"), **bearer(key))
    assert by_name.status_code == 200
    assert json.loads(by_name.content)["account"] == feed.pk
    assert by_name["ETag"] == client.get(url(feed.pk), **bearer(key))["ETag"]


def test_if_none_match_answers_304_until_the_token_changes(client, fake, feed, key):
    first = client.get(url(feed.pk), **bearer(key))
    again = client.get(url(feed.pk), HTTP_IF_NONE_MATCH=first["ETag"], **bearer(key))
    assert again.status_code == 304 and again.content == b""
    assert again["ETag"] == first["ETag"]
    result = services.token_refresh(account_id=feed.pk, actor=Actor(job="test"), now=NOW(),
                                    force=True)
    assert result.outcome == services.Outcome.REFRESHED
    changed = client.get(url(feed.pk), HTTP_IF_NONE_MATCH=first["ETag"], **bearer(key))
    assert changed.status_code == 200 and changed["ETag"] != first["ETag"]
    assert json.loads(changed.content)["access_token"] != json.loads(first.content)["access_token"]


@pytest.mark.parametrize(("headers", "code"), [
    ({}, "missing_key"),
    ({"HTTP_AUTHORIZATION": "Bearer igr_not-a-key-the-registry-made-0000000000000"}, "invalid_key"),
    ({"HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz"}, "invalid_key"),
    ({"HTTP_AUTHORIZATION": "Bearer "}, "invalid_key"),
])
def test_no_key_or_a_wrong_one_is_401(client, feed, key, headers, code):
    response = client.get(url(feed.pk), **headers)
    assert response.status_code == 401
    assert json.loads(response.content)["error"] == code
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert feed.token.value.encode() not in response.content


def test_a_revoked_key_is_401_at_once(client, feed, key, admin_user):
    row = ApiKey.objects.get()
    assert services.api_key_revoke(key=row, user=admin_user, now=NOW())
    response = client.get(url(feed.pk), **bearer(key))
    assert response.status_code == 401 and json.loads(response.content)["error"] == "invalid_key"
    assert not services.api_key_revoke(key=row, user=admin_user, now=NOW())  # already


def test_a_key_reads_only_its_scope(client, fake, login_app, feed, key, token_dir):
    other = active_account(fake, login_app, "Other feed", exported=True)
    response = client.get(url(other.pk), **bearer(key))
    # Refused as if it did not exist: a key learns nothing of accounts outside its scope.
    assert response.status_code == 404
    assert response.content == client.get(url("no_such_feed"), **bearer(key)).content
    assert other.token.value.encode() not in response.content
    by_name = client.get(url("other_feed"), **bearer(key))
    assert by_name.status_code == 404 and by_name.content == response.content
    # An app's key reads every account of the app, and only those.
    _, app_key, _ = services.api_key_create(name="agency", apps=[login_app], user=None,
                                            now=NOW())
    assert client.get(url(other.pk), **bearer(app_key)).status_code == 200
    basic = active_account(fake, make_app(fake, "basic_display"), "Legacy")
    assert client.get(url(basic.pk), **bearer(app_key)).status_code == 404


def test_unknown_accounts_and_accounts_without_a_token_are_404(client, login_app, feed, key):
    pending = Account.objects.create(app=login_app, label="Pending")
    ApiKey.objects.get().accounts.add(pending)
    assert json.loads(client.get(url(pending.pk), **bearer(key)).content)["error"] == "no_token"
    for name in ("999999", "no_such_file"):
        response = client.get(url(name), **bearer(key))
        assert response.status_code == 404, name
        assert json.loads(response.content)["error"] == "not_found"
    assert client.get(url(".hidden"), **bearer(key)).status_code == 400


def test_each_read_is_logged_without_the_token(client, feed, key, caplog):
    caplog.set_level(logging.INFO)
    first = client.get(url(feed.pk), **bearer(key))
    client.get(url(feed.pk), HTTP_IF_NONE_MATCH=first["ETag"], **bearer(key))
    client.get(url(feed.pk))
    row = ApiKey.objects.get()
    [event] = Event.objects.filter(action="api_read")  # the 304 gave no token
    assert event.account_id == feed.pk and row.prefix in event.message
    assert event.actor_job == f"api:{row.prefix}"
    lines = [r.getMessage() for r in caplog.records if r.name == "accounts.views.api"]
    assert len(lines) == 3
    assert any("token given" in line for line in lines)
    assert any("unchanged (304)" in line for line in lines)
    for text in lines + [event.message]:
        assert feed.token.value not in text and key not in text
    row.refresh_from_db()
    assert row.last_used_at is not None


def test_the_key_is_stored_only_as_a_hash(feed, key):
    row = ApiKey.objects.get()
    assert row.key_hash == api_key_hash(key)
    assert key.startswith(row.prefix) and len(key) > 40


# --- the admin: operators create (shown once) and revoke; viewers only look ---------------


def staff(django_user_model, name: str, group: str):  # noqa: ANN001
    user = django_user_model.objects.create_user(name, password="pw-1234567890", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return django_user_model.objects.get(pk=user.pk)


def test_an_operator_creates_a_key_and_sees_it_once(client, django_user_model, feed):
    client.force_login(staff(django_user_model, "op", "operators"))
    add = reverse("admin:accounts_apikey_add")
    assert client.get(add).status_code == 200
    response = client.post(add, {"name": "site-b", "accounts": [feed.pk]})
    assert response.status_code == 200
    page = response.content.decode()
    assert "not shown again" in page
    row = ApiKey.objects.get(name="site-b")
    shown = page.split('id="api-key"')[0].rsplit('value="', 1)[1].split('"')[0]
    assert api_key_hash(shown) == row.key_hash
    assert "no-store" in response["Cache-Control"]
    # Nowhere else: not on its page, not in the list.
    for address in (reverse("admin:accounts_apikey_changelist"),
                    reverse("admin:accounts_apikey_change", args=[row.pk])):
        assert shown not in client.get(address).content.decode()
    assert client.get(url(feed.pk), **bearer(shown)).status_code == 200
    # And revokes it.
    changelist = reverse("admin:accounts_apikey_changelist")
    client.post(changelist, {"action": "revoke_action", "_selected_action": [row.pk]})
    assert client.get(url(feed.pk), **bearer(shown)).status_code == 401


def test_a_key_needs_a_scope_and_a_free_name(client, django_user_model, feed, key):
    client.force_login(staff(django_user_model, "op", "operators"))
    add = reverse("admin:accounts_apikey_add")
    no_scope = client.post(add, {"name": "empty"})
    assert no_scope.status_code == 400
    assert "at least one account or app" in no_scope.content.decode()
    taken = client.post(add, {"name": "site-a", "accounts": [feed.pk]})
    assert taken.status_code == 400
    assert ApiKey.objects.count() == 1


def test_a_viewer_sees_keys_but_cannot_create_or_revoke(client, django_user_model, feed, key):
    client.force_login(staff(django_user_model, "viewer", "viewers"))
    changelist = reverse("admin:accounts_apikey_changelist")
    assert "site-a" in client.get(changelist).content.decode()
    assert client.get(reverse("admin:accounts_apikey_add")).status_code == 403
    assert client.post(reverse("admin:accounts_apikey_add"),
                       {"name": "mine", "accounts": [feed.pk]}).status_code == 403
    client.post(changelist, {"action": "revoke_action",
                             "_selected_action": [ApiKey.objects.get().pk]})
    assert ApiKey.objects.get().revoked_at is None
    assert ApiKey.objects.count() == 1


@pytest.mark.parametrize("method", ["post", "put", "delete", "head", "options"])
def test_other_methods_get_a_json_405(client, feed, key, method):
    response = getattr(client, method)(url(feed.pk), **bearer(key))
    assert response.status_code == 405 and response["Allow"] == "GET"
    if method != "head":
        assert json.loads(response.content)["error"] == "method_not_allowed"


def test_the_openapi_document_is_served(client):
    document = json.loads(client.get(reverse("api-openapi")).content)
    assert "/api/v1/tokens/{account}" in document["paths"]


def test_revoking_a_key_drops_its_queued_change_webhooks(feed, admin_user):
    from accounts.models import WebhookDelivery

    key, _, _ = services.api_key_create(name="hooked", accounts=[feed], user=None, now=NOW(),
                                        webhook_url="https://site.example/hook")
    WebhookDelivery.objects.create(api_key=key, account=feed, msg_id="msg_1", event_type="x",
                                   body="{}", created_at=NOW(), next_attempt_at=NOW())
    services.api_key_revoke(key=key, user=admin_user, now=NOW())
    delivery = WebhookDelivery.objects.get()
    assert delivery.abandoned_at is not None and delivery.last_error == "the key was revoked"


def test_a_viewer_sees_where_a_webhook_goes_but_not_its_url(client, django_user_model, feed):
    key, _, _ = services.api_key_create(
        name="hooked", accounts=[feed], user=None, now=NOW(),
        webhook_url="https://site.example/hooks/T0001/secret-path-key?token=abc")
    page = reverse("admin:accounts_apikey_change", args=[key.pk])
    client.force_login(staff(django_user_model, "viewer", "viewers"))
    text = client.get(page).content.decode()
    assert "https://site.example/" in text and "secret-path-key" not in text
    client.force_login(staff(django_user_model, "op", "operators"))
    assert "secret-path-key" in client.get(page).content.decode()


def test_a_poll_costs_a_fixed_handful_of_queries(client, feed, key, django_assert_max_num_queries):
    first = client.get(url("shop_feed"), **bearer(key))
    # The key, the account with its app, token and file name, the scope: three reads.
    with django_assert_max_num_queries(3):
        again = client.get(url("shop_feed"), HTTP_IF_NONE_MATCH=first["ETag"], **bearer(key))
    assert again.status_code == 304
