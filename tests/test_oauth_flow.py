"""The OAuth flow end to end: admin action -> fake Instagram -> callback -> token + file."""

from __future__ import annotations

import logging
import stat
from datetime import timedelta
from urllib.parse import urlencode, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from accounts import services
from accounts.models import Account, Event, OAuthState, Token
from tests.conftest import OTHER_SITE_URI, allow_at_fake
from tests.fake_instagram import graph_error, status

BIG_ID = "17841405793187218"  # above 2**53: a float would change its last digits


def start(admin_client, account: Account):
    """Press the account's Authorize action in the changelist."""
    return admin_client.post(
        reverse("admin:accounts_account_changelist"),
        {"action": "authorize_action", "_selected_action": [account.pk]},
    )


def callback_path(location: str) -> str:
    """What a browser requests for Instagram's redirect: path and query, no fragment."""
    parts = urlsplit(location)
    assert parts.netloc == "testserver"
    return f"{parts.path}?{parts.query}"


def nothing_stored(account: Account, token_dir) -> bool:
    account.refresh_from_db()
    return (
        not Token.objects.filter(account=account).exists()
        and account.status == Account.Status.PENDING
        and not account.username
        and not (token_dir.exists() and any(token_dir.iterdir()))
    )


def test_authorize_end_to_end(admin_client, account, fake, token_dir):
    user = fake.add_user("shop_owner", id=BIG_ID)
    response = start(admin_client, account)
    assert response.status_code == 302
    authorize_url = response["Location"]
    assert authorize_url.startswith(fake.url + "/oauth/authorize?")

    location = allow_at_fake(authorize_url, username="shop_owner")
    assert location.endswith("#_")
    response = admin_client.get(callback_path(location), follow=True)

    assert response.redirect_chain[-1][0] == reverse(
        "admin:accounts_account_change", args=[account.pk]
    )
    page = response.content.decode()
    assert "authorized as @shop_owner" in page
    account.refresh_from_db()
    token = account.token
    assert account.status == Account.Status.ACTIVE
    assert account.username == "shop_owner"
    # Each id in its own field: /me's id; /me's user_id and the exchange's user_id (the
    # professional account's, at the fake) with Instagram Login; Basic Display has one id.
    assert account.ig_id == BIG_ID
    if account.app.flavour == "instagram_login":
        assert account.ig_user_id == account.ig_exchange_user_id == user.user_id != BIG_ID
    else:
        assert (account.ig_user_id, account.ig_exchange_user_id) == ("", BIG_ID)
    assert token.kind == Token.Kind.LONG
    assert abs(token.expires_at - (timezone.now() + timedelta(days=60))) < timedelta(minutes=2)
    assert fake.token_info(token.value)["kind"] == "long"
    path = token_dir / "shop_owner"
    assert path.read_text() == token.value
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert token.value not in page
    actions = set(Event.objects.filter(account=account).values_list("action", "outcome"))
    assert {("authorize_start", "ok"), ("authorize", "ok"), ("export", "ok")} <= actions
    # One of each call, nothing repeated.
    endpoints = ("/oauth/access_token", "/access_token", "/me")
    assert [len(fake.calls(p)) for p in endpoints] == [1, 1, 1]


def test_code_with_trailing_fragment_marker_is_accepted(admin_client, login_account, fake):
    authorize_url = start(admin_client, login_account)["Location"]
    location = allow_at_fake(authorize_url)
    parts = urlsplit(location)
    query = dict(p.split("=", 1) for p in parts.query.split("&"))
    # What a copy-paste of the address bar gives: "#_" glued to the code, percent-encoded.
    query["code"] = query["code"] + "%23_"
    response = admin_client.get(parts.path + "?" + "&".join(f"{k}={v}" for k, v in query.items()))
    assert response.status_code == 302
    login_account.refresh_from_db()
    assert login_account.status == Account.Status.ACTIVE


def test_both_exchange_shapes_store_exact_ids(admin_client, login_account, fake):
    fake.exchange_shape = "data"
    fake.me_shape = "data"  # carries only user_id, no id: the registry keys on that then
    fake.add_user("shop_owner", user_id=BIG_ID)
    location = allow_at_fake(start(admin_client, login_account)["Location"])
    assert admin_client.get(callback_path(location)).status_code == 302
    login_account.refresh_from_db()
    assert login_account.ig_user_id == BIG_ID


# --- bad input: a clear page, nothing stored --------------------------------------------


def test_denied_at_instagram(admin_client, account, fake, token_dir):
    location = allow_at_fake(start(admin_client, account)["Location"], decision="cancel")
    response = admin_client.get(callback_path(location))
    assert response.status_code == 400
    assert "not granted" in response.content.decode()
    assert "access_denied" in response.content.decode()
    assert nothing_stored(account, token_dir)
    assert Event.objects.filter(account=account, action="authorize", outcome="denied").exists()
    assert fake.calls("/oauth/access_token") == []


def test_a_denial_carrying_control_characters_is_shown_without_them(
    admin_client, login_account, fake, token_dir
):
    # PostgreSQL refuses NUL in text: the event must not carry it (it used to be a 500).
    state = urlsplit(start(admin_client, login_account)["Location"]).query
    state = dict(p.split("=", 1) for p in state.split("&"))["state"]
    query = urlencode({"state": state, "error": "access\x00_denied",
                       "error_description": "no\nthanks\x85"})
    response = admin_client.get(f"{reverse('oauth-callback')}?{query}")
    assert response.status_code == 400
    event = Event.objects.get(account=login_account, action="authorize", outcome="denied")
    assert event.message == "Instagram answered access_denied: nothanks"
    assert nothing_stored(login_account, token_dir)


def test_missing_state(admin_client, login_account, fake, token_dir):
    location = allow_at_fake(start(admin_client, login_account)["Location"])
    parts = urlsplit(location)
    code = parts.query.split("code=")[1].split("&")[0]
    response = admin_client.get(f"{parts.path}?code={code}")
    assert response.status_code == 400
    assert "no state" in response.content.decode()
    assert nothing_stored(login_account, token_dir)
    assert fake.calls("/oauth/access_token") == []


def test_forged_state(admin_client, login_account, fake, token_dir):
    location = allow_at_fake(start(admin_client, login_account)["Location"])
    forged = location.split("state=")[0] + "state=forged-state-value"
    response = admin_client.get(callback_path(forged.split("#")[0]))
    assert response.status_code == 400
    assert "not started by the registry" in response.content.decode()
    assert nothing_stored(login_account, token_dir)


def test_expired_state(admin_client, admin_user, login_account, fake, token_dir):
    two_hours_ago = timezone.now() - timedelta(hours=2)
    authorize_url = services.oauth_start(account=login_account, user=admin_user,
                                         now=two_hours_ago)
    location = allow_at_fake(authorize_url)
    response = admin_client.get(callback_path(location))
    assert response.status_code == 400
    assert "expired" in response.content.decode()
    assert nothing_stored(login_account, token_dir)


def test_replayed_state(admin_client, login_account, fake, token_dir):
    location = allow_at_fake(start(admin_client, login_account)["Location"])
    assert admin_client.get(callback_path(location)).status_code == 302
    stored = Token.objects.get(account=login_account)
    response = admin_client.get(callback_path(location))
    assert response.status_code == 400
    assert "already used" in response.content.decode()
    assert Token.objects.get(account=login_account).value == stored.value
    assert len(fake.calls("/oauth/access_token")) == 1


def test_state_of_another_staff_user(client, admin_client, login_account, fake, token_dir):
    location = allow_at_fake(start(admin_client, login_account)["Location"])
    other = get_user_model().objects.create_user("other", password="pw-other-123", is_staff=True,
                                                 is_superuser=True)
    client.force_login(other)
    response = client.get(callback_path(location))
    assert response.status_code == 400
    assert "another staff user" in response.content.decode()
    assert nothing_stored(login_account, token_dir)


def test_anonymous_callback_is_refused(client, admin_client, login_account, fake, token_dir):
    location = allow_at_fake(start(admin_client, login_account)["Location"])
    response = client.get(callback_path(location))
    assert response.status_code == 403
    assert nothing_stored(login_account, token_dir)
    assert not OAuthState.objects.filter(used_at__isnull=False).exists()


def test_wrong_instagram_account_is_refused(admin_client, login_account, fake, token_dir):
    Account.objects.filter(pk=login_account.pk).update(ig_user_id="111", username="the_shop")
    location = allow_at_fake(start(admin_client, login_account)["Location"], username="someone")
    response = admin_client.get(callback_path(location))
    assert response.status_code == 400
    assert "wrong Instagram account" in response.content.decode()
    assert not Token.objects.filter(account=login_account).exists()
    login_account.refresh_from_db()
    assert (login_account.ig_user_id, login_account.username) == ("111", "the_shop")


def test_instagram_refuses_the_code(admin_client, login_account, fake, token_dir):
    fake.inject("/oauth/access_token", status(400, '{"error_type": "OAuthException", "code": 400,'
                                                 ' "error_message": "Invalid platform app"}'))
    location = allow_at_fake(start(admin_client, login_account)["Location"])
    response = admin_client.get(callback_path(location))
    assert response.status_code == 400
    assert "Invalid platform app" in response.content.decode()
    assert nothing_stored(login_account, token_dir)
    assert Event.objects.filter(account=login_account, action="authorize",
                                outcome="failed").exists()


def test_long_lived_swap_failure_stores_nothing(admin_client, login_account, fake, token_dir):
    fake.inject("/access_token", graph_error(190, 463))
    location = allow_at_fake(start(admin_client, login_account)["Location"])
    response = admin_client.get(callback_path(location))
    assert response.status_code == 400
    assert nothing_stored(login_account, token_dir)


def test_authorize_action_needs_exactly_one_account(admin_client, login_account, login_app):
    other = Account.objects.create(app=login_app, label="Other")
    response = admin_client.post(
        reverse("admin:accounts_account_changelist"),
        {"action": "authorize_action", "_selected_action": [login_account.pk, other.pk]},
        follow=True,
    )
    assert "Select exactly one account" in response.content.decode()
    assert not OAuthState.objects.exists()


def test_authorize_url_is_post_only(admin_client, login_account):
    url = reverse("admin:accounts_account_authorize", args=[login_account.pk])
    assert admin_client.get(url).status_code == 405
    assert not OAuthState.objects.exists()


# --- paste mode (redirect URI on another website) -----------------------------------------


@pytest.fixture
def pasted_account(login_account):
    login_account.app.redirect_uri = OTHER_SITE_URI
    login_account.app.save()
    return login_account


def authorize_elsewhere(admin_client, account: Account) -> str:
    response = admin_client.post(reverse("admin:accounts_account_authorize", args=[account.pk]))
    assert response.status_code == 200
    authorize_url = response.context["authorize_url"]
    location = allow_at_fake(authorize_url)
    assert location.startswith(OTHER_SITE_URI)
    return location


def paste(admin_client, account: Account, text: str):
    return admin_client.post(reverse("admin:accounts_account_paste", args=[account.pk]),
                             {"redirected_url": text})


def test_paste_the_redirected_url(admin_client, pasted_account, fake, token_dir):
    location = authorize_elsewhere(admin_client, pasted_account)
    response = paste(admin_client, pasted_account, location)  # with its "#_"
    assert response.status_code == 302
    pasted_account.refresh_from_db()
    assert pasted_account.status == Account.Status.ACTIVE
    assert (token_dir / pasted_account.username).read_text() == pasted_account.token.value


def test_paste_the_bare_code(admin_client, pasted_account, fake):
    location = authorize_elsewhere(admin_client, pasted_account)
    code = location.split("code=")[1].split("&")[0]
    response = paste(admin_client, pasted_account, f"  {code}#_ ")
    assert response.status_code == 302
    assert Token.objects.filter(account=pasted_account).exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("https://www.mywebsite.com/?foo=bar", "no code"),
        ("https://www.mywebsite.com/?error=access_denied&error_reason=user_denied", "not granted"),
        ("not-a-code", "Instagram refused"),
    ],
)
def test_paste_bad_input(admin_client, pasted_account, fake, token_dir, text, message):
    # Started with Authorize, as a paste must be; the owner's answer is what goes wrong.
    admin_client.post(reverse("admin:accounts_account_authorize", args=[pasted_account.pk]))
    response = paste(admin_client, pasted_account, text)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert text not in response.content.decode()  # what was pasted may hold a code
    assert nothing_stored(pasted_account, token_dir)


def test_a_bare_code_completes_only_your_own_open_authorization(
        admin_client, client, pasted_account, fake, token_dir, django_user_model):
    location = authorize_elsewhere(admin_client, pasted_account)  # the admin's flow
    code = location.split("code=")[1].split("&")[0]
    colleague = django_user_model.objects.create_superuser("colleague", password="pw-col-123456")
    client.force_login(colleague)
    response = paste(client, pasted_account, code)  # without a flow of their own
    assert response.status_code == 400
    assert "only an authorization you started" in response.content.decode()
    assert nothing_stored(pasted_account, token_dir)
    assert fake.calls("/oauth/access_token") == []
    # The admin's own paste still works, once.
    assert paste(admin_client, pasted_account, code).status_code == 302
    assert paste(admin_client, pasted_account, code).status_code == 400


def test_paste_url_of_another_account(admin_client, pasted_account, login_app, fake, token_dir):
    location = authorize_elsewhere(admin_client, pasted_account)
    other = Account.objects.create(app=login_app, label="Other")
    response = paste(admin_client, other, location)
    assert response.status_code == 400
    assert "another account" in response.content.decode()
    assert not Token.objects.exists()


# --- no secret anywhere ------------------------------------------------------------------


def test_no_secret_in_pages_logs_or_errors(admin_client, login_account, fake, caplog):
    caplog.set_level(logging.DEBUG)
    pages = []
    authorize = start(admin_client, login_account)
    location = allow_at_fake(authorize["Location"])
    code = location.split("code=")[1].split("&")[0]
    response = admin_client.get(callback_path(location), follow=True)
    pages.append(response.content.decode())
    pages.append(admin_client.get(reverse("admin:accounts_account_changelist")).content.decode())
    pages.append(admin_client.get(
        reverse("admin:accounts_account_change", args=[login_account.pk])).content.decode())
    pages.append(admin_client.get(reverse("admin:accounts_event_changelist")).content.decode())
    # A failing refresh and a failing verify, so error paths are covered too.
    fake.revoke_user(Account.objects.get(pk=login_account.pk).username, subcode=460)
    verify = admin_client.post(
        reverse("admin:accounts_account_changelist"),
        {"action": "verify_action", "_selected_action": [login_account.pk]}, follow=True,
    )
    pages.append(verify.content.decode())
    messages = list(Event.objects.values_list("message", flat=True))

    token = Token.objects.get(account=login_account).value
    secret = login_account.app.app_secret
    short_lived = [c.query.get("access_token") for c in fake.calls("/access_token")]
    assert urlencode({"x": code})  # the code was real
    for value in [token, secret, code, *short_lived]:
        assert value
        for page in pages:
            assert value not in page
        assert value not in caplog.text
        for message in messages:
            assert value not in message
    assert any("urllib3" in r.name for r in caplog.records), "urllib3 debug output was captured"
    login_account.refresh_from_db()
    assert login_account.status == Account.Status.NEEDS_REAUTH
