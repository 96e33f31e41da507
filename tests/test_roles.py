"""Roles that hold: a viewer sees no secret and changes nothing, each action checks its
permission, the callback checks it again, and the sign-in locks out guessers and offers
operators a second factor."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.core import serializers
from django.urls import URLPattern, URLResolver, reverse
from django.utils import timezone
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import services
from accounts.models import (
    Account,
    AlertDelivery,
    ApiKey,
    DataDeletionRequest,
    Event,
    InstagramApp,
    OAuthState,
    OwnerLink,
    PendingToken,
    SweepState,
    Token,
    TokenFile,
)
from accounts.services import Actor
from tests.conftest import SECRETS, allow_at_fake, callback_path

LOGIN_SECRET = SECRETS["instagram_login"][1]
PASSWORD = "pw-correct-horse-12345"
VIEWER_PERMS = {"accounts.view_instagramapp", "accounts.view_account", "accounts.view_event",
                "accounts.view_tokenfile", "accounts.view_apikey",
                "accounts.view_datadeletionrequest"}


def member(django_user_model, username: str, group: str):  # noqa: ANN001
    user = django_user_model.objects.create_user(username, password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return django_user_model.objects.get(pk=user.pk)  # fresh permission cache


@pytest.fixture
def viewer(django_user_model):  # noqa: ANN001
    return member(django_user_model, "viewer", "viewers")


@pytest.fixture
def operator(django_user_model):  # noqa: ANN001
    return member(django_user_model, "operator", "operators")


@pytest.fixture
def registry(fake, login_app, admin_client, token_dir):
    """An authorized account with its file, an orphaned file, a pending account: every
    kind of page has something to show."""
    account = Account.objects.create(app=login_app, label="Shop")
    response = admin_client.post(reverse("admin:accounts_account_changelist"),
                                 {"action": "authorize_action", "_selected_action": [account.pk]})
    location = allow_at_fake(response["Location"], username="shop")
    parts = urlsplit(location)
    admin_client.get(f"{parts.path}?{parts.query}")
    Account.objects.filter(pk=account.pk).update(token_filename="shop-feed")
    services.token_export(account=Account.objects.get(pk=account.pk), actor=Actor(job="t"),
                          now=timezone.now())
    Account.objects.create(app=login_app, label="Waiting")
    assert TokenFile.objects.filter(status="orphaned").exists()
    return Account.objects.select_related("token").get(pk=account.pk)


def registry_admin():  # noqa: ANN201
    """The superuser the registry fixture signed in as (admin_client's)."""
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username="admin")


def snapshot() -> str:
    """Every registry row, serialized: equal before and after means nothing changed."""
    models = [InstagramApp, Account, Token, PendingToken, OAuthState, TokenFile, Event,
              SweepState, AlertDelivery, OwnerLink, ApiKey, DataDeletionRequest]
    return "".join(serializers.serialize("json", m.objects.order_by("pk")) for m in models)


def files(token_dir) -> dict[str, bytes]:  # noqa: ANN001
    return {p.name: p.read_bytes() for p in sorted(token_dir.iterdir())}


def admin_urls(objects: dict[str, str]) -> list[str]:
    """Every page of the admin site, with `<...>` parameters filled from `objects`."""
    urls = []

    def walk(patterns, prefix: str) -> None:  # noqa: ANN001
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern):
                urls.append(route)

    walk(admin.site.urls[0], "/admin/")
    filled = []
    for route in urls:
        if "(?P<" in route or route.endswith("$"):
            continue  # the catch-all and regex routes (app index handled below)
        model = re.search(r"/admin/accounts/(\w+)/", route)
        value = objects.get(model.group(1) if model else "", "1")
        filled.append(re.sub(r"<(?:\w+:)?\w+>", value, route))
    filled.append("/admin/accounts/")
    return sorted(set(filled))


def test_the_migration_creates_both_roles(db):
    viewers = {f"accounts.{p}" for p in Group.objects.get(name="viewers")
               .permissions.values_list("codename", flat=True)}
    operators = {p for p in Group.objects.get(name="operators")
                 .permissions.values_list("codename", flat=True)}
    assert viewers == VIEWER_PERMS
    assert {"authorize_account", "verify_account", "refresh_account", "export_account",
            "import_token", "take_over_tokenfile", "change_account", "add_apikey",
            "change_apikey"} <= operators
    assert "change_instagramapp" not in operators  # app secrets stay with administrators


def test_a_viewer_never_sees_the_app_secret(client, viewer, login_app):
    client.force_login(viewer)
    page = client.get(reverse("admin:accounts_instagramapp_change", args=[login_app.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    assert LOGIN_SECRET not in text
    assert "…" + LOGIN_SECRET[-4:] not in text  # not even its hint (README, "Roles")
    assert "its last characters are shown only to those who may change apps" in text
    listing = client.get(reverse("admin:accounts_instagramapp_changelist")).content.decode()
    assert login_app.name in listing and "…" + LOGIN_SECRET[-4:] not in listing


def test_a_viewer_cannot_run_the_account_actions(client, viewer, registry, fake, token_dir):
    client.force_login(viewer)
    before, before_files = snapshot(), files(token_dir)
    calls = len(fake.calls())
    for action in ("authorize_action", "verify_action", "export_action", "refresh_action"):
        response = client.post(reverse("admin:accounts_account_changelist"),
                               {"action": action, "_selected_action": [registry.pk]})
        assert response.status_code in (200, 302), action
        assert not (response.status_code == 302 and "instagram" in response["Location"])
    assert snapshot() == before and files(token_dir) == before_files
    assert len(fake.calls()) == calls
    # The list offers them nothing to choose.
    page = client.get(reverse("admin:accounts_account_changelist")).content.decode()
    assert "authorize_action" not in page and "export_action" not in page


def test_the_viewer_walk(client, viewer, registry, fake, token_dir, settings):
    """Every admin page, GET and POST, the dashboard's buttons and the callback: a viewer
    reads what it may, finds no secret or token, and changes nothing."""
    client.force_login(viewer)
    token = registry.token.value
    link, _ = services.owner_link_create(account=registry, user=registry_admin(),
                                         now=timezone.now())
    api_key, api_secret, webhook_secret = services.api_key_create(
        name="website", accounts=[registry], webhook_url="https://site.example/hook",
        user=registry_admin(), now=timezone.now())
    deletion = DataDeletionRequest.objects.create(
        confirmation_code="ABC123", request_digest="0" * 64, app=registry.app,
        status="no_data", received_at=timezone.now())
    objects = {"account": str(registry.pk), "instagramapp": str(registry.app_id),
               "event": str(Event.objects.first().pk),
               "tokenfile": str(TokenFile.objects.first().pk), "ownerlink": str(link.pk),
               "apikey": str(api_key.pk), "datadeletionrequest": str(deletion.pk)}
    urls = admin_urls(objects)
    for must in ("/admin/accounts/apikey/add/", f"/admin/accounts/apikey/{api_key.pk}/change/",
                 f"/admin/accounts/datadeletionrequest/{deletion.pk}/change/"):
        assert must in urls, must
    pk = registry.pk
    for must in (f"/admin/accounts/account/{pk}/authorize/", f"/admin/accounts/account/{pk}/paste/",
                 f"/admin/accounts/account/{pk}/import-token/",
                 f"/admin/accounts/account/{pk}/take-over-file/",
                 f"/admin/accounts/account/{pk}/owner-link/", "/admin/accounts/ownerlink/",
                 "/admin/accounts/account/dashboard/", "/admin/accounts/tokenfile/",
                 "/admin/two-factor/", f"/admin/accounts/instagramapp/{registry.app_id}/change/"):
        assert must in urls, must
    before, before_files, calls = snapshot(), files(token_dir), len(fake.calls())
    seen_ok = 0
    for url in urls:
        if url.endswith("/logout/"):
            continue
        for method in ("get", "post"):
            response = getattr(client, method)(url, {"access_token": "IGAAforgedtoken123",
                                                     "redirected_url": "https://x/?code=abc",
                                                     "label": "Renamed", "name": "Renamed",
                                                     "days": "3",
                                                     "app_secret": "new-secret-value-123"})
            assert response.status_code < 500, (method, url, response.status_code)
            body = response.content.decode(errors="replace")
            assert LOGIN_SECRET not in body, url
            assert token not in body, url
            assert api_secret not in body and webhook_secret not in body, url
            seen_ok += response.status_code == 200
    assert seen_ok > 10
    assert snapshot() == before, "a viewer changed something"
    assert files(token_dir) == before_files
    assert len(fake.calls()) == calls
    # The dashboard shows no button the viewer may not use.
    page = client.get(reverse("admin:accounts_account_dashboard")).content.decode()
    assert 'value="verify_action"' not in page and "/authorize/" not in page
    # The callback: a viewer cannot complete a flow, even with a state of their own.
    response = client.get(reverse("oauth-callback"), {"code": "abc", "state": "x"})
    assert response.status_code == 403
    assert snapshot() == before


def test_an_operator_can_do_the_work(client, operator, registry, fake, token_dir):
    client.force_login(operator)
    for action in ("verify_action", "export_action"):
        response = client.post(reverse("admin:accounts_account_changelist"),
                               {"action": action, "_selected_action": [registry.pk]},
                               follow=True)
        assert any(m.level_tag == "success" for m in response.context["messages"]), action
    response = client.post(reverse("admin:accounts_account_changelist"),
                           {"action": "authorize_action", "_selected_action": [registry.pk]})
    assert response["Location"].startswith(fake.url)
    page = client.get(reverse("admin:accounts_account_dashboard")).content.decode()
    assert 'value="verify_action"' in page
    # Operators do not see app secrets either: they may not change apps.
    app_page = client.get(reverse("admin:accounts_instagramapp_change",
                                  args=[registry.app_id])).content.decode()
    assert LOGIN_SECRET not in app_page


def test_the_callback_checks_the_permission_when_it_arrives(client, operator, login_app, fake,
                                                            token_dir):
    account = Account.objects.create(app=login_app, label="Shop")
    client.force_login(operator)
    path = callback_path(client, account, "shop")
    operator.groups.clear()  # the role is withdrawn while the owner is at Instagram
    response = client.get(path)
    assert response.status_code == 403
    assert not Token.objects.filter(account=account).exists()
    assert not PendingToken.objects.filter(account=account).exists()
    assert fake.calls("/oauth/access_token") == []


# --- sign-in -----------------------------------------------------------------------------


LOGIN = "/admin/login/?next=/admin/"


def sign_in(client, username: str, password: str, code: str = ""):  # noqa: ANN001
    return client.post(LOGIN, {"username": username, "password": password, "otp_token": code,
                               "next": "/admin/"})


def test_repeated_failed_sign_ins_are_locked_out(client, operator, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert sign_in(client, "operator", "wrong-password").status_code == 200
    locked = sign_in(client, "operator", "wrong-password")
    assert locked.status_code == 429
    # Locked: even the right password is refused now.
    assert sign_in(client, "operator", PASSWORD).status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_good_sign_in_resets_the_count(client, operator, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        sign_in(client, "operator", "wrong-password")
    assert sign_in(client, "operator", PASSWORD).status_code == 302
    client.logout()
    assert sign_in(client, "operator", "wrong-password").status_code == 200


@pytest.fixture
def no_throttle(settings):
    """django-otp makes a device wait after a wrong code; these tests type the right one
    right after a wrong one."""
    settings.OTP_TOTP_THROTTLE_FACTOR = 0


def confirmed_device(user) -> TOTPDevice:  # noqa: ANN001
    return TOTPDevice.objects.create(user=user, name="phone", confirmed=True)


def code_for(device: TOTPDevice, offset: int = 0) -> str:
    code = totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits,
                drift=offset)
    return f"{code:06d}"


def test_an_operator_with_an_authenticator_needs_its_code(client, operator, no_throttle):
    device = confirmed_device(operator)
    response = sign_in(client, "operator", PASSWORD)
    assert response.status_code == 200
    # The same words as a wrong password: a guesser does not learn which part was right.
    wrong_password = sign_in(client, "operator", "wrong-password-1").content.decode()
    assert "correct username, password and" in response.content.decode()
    assert "correct username" in wrong_password
    response = sign_in(client, "operator", PASSWORD, "000000" if code_for(device) != "000000"
                       else "111111")
    assert "correct username, password and" in response.content.decode()
    assert sign_in(client, "operator", PASSWORD, code_for(device)).status_code == 302
    assert client.get("/admin/").status_code == 200


def test_a_session_without_the_second_factor_does_not_reach_the_admin(client, operator):
    confirmed_device(operator)
    client.force_login(operator)  # password only, as a stolen session cookie would be
    response = client.get(reverse("admin:accounts_account_dashboard"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_operators_set_up_their_own_authenticator(client, operator, no_throttle):
    assert sign_in(client, "operator", PASSWORD).status_code == 302
    page = client.get(reverse("admin:two_factor"))
    assert page.status_code == 200 and 'src="data:image/svg+xml;base64,' in page.content.decode()
    device = TOTPDevice.objects.get(user=operator, confirmed=False)
    assert client.post(reverse("admin:two_factor"), {"otp_token": "12"}).status_code == 400
    client.post(reverse("admin:two_factor"), {"otp_token": code_for(device)})
    device.refresh_from_db()
    assert device.confirmed
    assert client.get("/admin/").status_code == 200  # this session is verified already
    client.logout()
    assert sign_in(client, "operator", PASSWORD).status_code == 200  # now it needs a code
    # The setup spent this step's code; the next step's is accepted (one step of drift).
    assert sign_in(client, "operator", PASSWORD, code_for(device, 1)).status_code == 302


# --- found by trying to break it ---------------------------------------------------------


@pytest.mark.parametrize("lookup", ["app_secret__startswith", "app_secret__regex", "name__regex",
                                    "accounts__token__value__startswith"])
def test_no_filter_reads_an_encrypted_column_or_runs_a_regex(client, viewer, login_app, lookup):
    client.force_login(viewer)
    url = reverse("admin:accounts_instagramapp_changelist")
    assert client.get(url, {lookup: "gAAAAA"}).status_code == 400
    assert client.get(reverse("admin:accounts_account_changelist"),
                      {"token__value__startswith": "gA"}).status_code == 400
    assert client.get(url, {"name__startswith": "inst"}).status_code == 200  # plain ones work


def test_an_operator_cannot_delete_a_live_file_record(client, operator, registry, token_dir):
    client.force_login(operator)
    current = TokenFile.objects.get(name="shop-feed")
    page = reverse("admin:accounts_tokenfile_delete", args=[current.pk])
    assert client.get(page).status_code == 403
    assert client.post(page, {"post": "yes"}).status_code == 403
    assert TokenFile.objects.filter(pk=current.pk).exists()


def test_the_callback_needs_the_second_factor_like_the_admin(client, operator, login_app, fake,
                                                            token_dir):
    account = Account.objects.create(app=login_app, label="Shop")
    client.force_login(operator)
    path = callback_path(client, account, "shop")
    confirmed_device(operator)  # turned on in another session meanwhile
    assert client.get(path).status_code == 403
    assert not Token.objects.filter(account=account).exists()


def test_nobody_reassigns_or_adds_a_second_factor_device(admin_client, operator):
    device = confirmed_device(operator)
    change = reverse("admin:otp_totp_totpdevice_change", args=[device.pk])
    admin_client.post(change, {"user": admin_client.session["_auth_user_id"],
                               "name": "x", "confirmed": ""})
    device.refresh_from_db()
    assert device.user_id == operator.pk and device.confirmed
    assert admin_client.get(reverse("admin:otp_totp_totpdevice_add")).status_code == 403
    # Deleting a lost one is what administrators may do.
    admin_client.post(reverse("admin:otp_totp_totpdevice_delete", args=[device.pk]),
                      {"post": "yes"})
    assert not TOTPDevice.objects.filter(pk=device.pk).exists()


def test_the_lockout_sees_the_client_behind_the_configured_proxies(client, operator, settings):
    settings.LOGIN_PROXY_COUNT = 1
    for i in range(settings.AXES_FAILURE_LIMIT):
        client.post(LOGIN, {"username": "operator", "password": "wrong", "next": "/admin/"},
                    HTTP_X_FORWARDED_FOR=f"203.0.113.{i}, 198.51.100.7")
    # Locked for the address the proxy saw, whatever the client wrote to the left of it...
    locked = client.post(LOGIN, {"username": "operator", "password": PASSWORD},
                         HTTP_X_FORWARDED_FOR="1.2.3.4, 198.51.100.7")
    assert locked.status_code == 429
    # ...and not for another client behind the same proxy.
    other = client.post(LOGIN, {"username": "operator", "password": PASSWORD,
                                "next": "/admin/"}, HTTP_X_FORWARDED_FOR="198.51.100.8")
    assert other.status_code == 302


def test_without_proxies_a_forged_forwarded_header_changes_nothing(client, operator, settings):
    settings.LOGIN_PROXY_COUNT = 0
    for i in range(settings.AXES_FAILURE_LIMIT):
        client.post(LOGIN, {"username": "operator", "password": "wrong"},
                    HTTP_X_FORWARDED_FOR=f"203.0.113.{i}")
    assert sign_in(client, "operator", PASSWORD).status_code == 429


def test_a_wrong_current_password_counts_as_a_failed_sign_in(client, operator, settings):
    client.force_login(operator)
    page = reverse("admin:password_change")
    guess = {"old_password": "guess", "new_password1": "N3w-pass-word!",
             "new_password2": "N3w-pass-word!"}
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert client.post(page, guess).status_code == 200
    assert client.post(page, guess).status_code == 429  # the failure that locks
    response = client.post(page, {"old_password": PASSWORD, "new_password1": "N3w-pass-word!",
                                  "new_password2": "N3w-pass-word!"})
    assert response.status_code == 429


def test_a_failed_code_is_not_kept_in_the_attempts_log(client, operator, no_throttle):
    from axes.models import AccessAttempt

    confirmed_device(operator)
    sign_in(client, "operator", PASSWORD, "123456")
    assert AccessAttempt.objects.exists()
    assert "123456" not in "".join(AccessAttempt.objects.values_list("post_data", flat=True))


def test_a_viewer_does_not_see_even_the_last_characters_of_a_token(client, viewer, registry):
    client.force_login(viewer)
    hint = registry.token.value[-4:]
    for url in (reverse("admin:accounts_account_changelist"),
                reverse("admin:accounts_account_change", args=[registry.pk])):
        assert hint not in client.get(url).content.decode()


def test_an_absurd_app_filter_on_the_dashboard_is_ignored(client, viewer, db):
    client.force_login(viewer)
    response = client.get(reverse("admin:accounts_account_dashboard"),
                          {"app": "9" * 30})
    assert response.status_code == 200


def test_a_selection_that_is_not_ids_is_refused_not_a_crash(admin_client, registry):
    response = admin_client.post(reverse("admin:accounts_account_changelist"),
                                 {"action": "export_action", "_selected_action": ["abc"]})
    assert response.status_code == 302
