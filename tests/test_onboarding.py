"""Onboarding (issue 13): Meta's errors turned into guidance, permanent refresh failures
held from the sweep, scopes, permissions as Instagram said (or as asked), the app's Meta
setup and the account's checklist."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from accounts import selectors, services
from accounts.instagram import (
    InstagramError,
    TokenInvalid,
    Transient,
    Unreachable,
    failure_text,
    guidance_for,
    guidance_for_error,
    with_advice,
)
from accounts.instagram import guidance as g
from accounts.models import Account, Event, InstagramApp, Token
from accounts.services import Actor, Outcome
from tests.conftest import CALLBACK_URI, OTHER_SITE_URI, active_account, allow_at_fake, make_app
from tests.fake_instagram import disconnect, graph_error, status

ACTOR = Actor(job="test")
CODE_EXCHANGE = "/oauth/access_token"
REFRESH = "/refresh_access_token"


def flat_error(message: str):  # noqa: ANN201
    """The code exchange's flat error shape (shared/instagram-api.md, section 2)."""
    return status(400, json.dumps({"error_type": "OAuthException", "code": 400,
                                   "error_message": message}), "application/json")


# --- the message -> guidance table ------------------------------------------------------


@pytest.mark.parametrize(("message", "code", "expected"), g.EXAMPLES,
                         ids=[guidance.key for _, _, guidance in g.EXAMPLES])
def test_each_example_shown_on_the_app_page_maps_to_its_guidance(message, code, expected):
    flavour = "basic_display" if expected is g.RETIRED_API else None
    assert guidance_for(message, code=code, flavour=flavour) is expected
    assert expected.advice.endswith(".") and expected.advice.count(". ") <= 1  # one sentence


def test_every_rule_has_an_example():
    assert {rule.guidance for rule in g.RULES} == {guidance for _, _, guidance in g.EXAMPLES}


def test_an_unknown_message_has_no_guidance_and_is_a_plain_refusal():
    exc = InstagramError("Something new went wrong", status=400, code=9)
    assert guidance_for_error(exc) is None
    assert failure_text(exc) == "Instagram refused: Something new went wrong (code 9) [HTTP 400]"
    assert with_advice(exc.message) == exc.message


def test_unsupported_request_means_a_retired_api_only_on_a_basic_display_app():
    exc = InstagramError("Unsupported request - method type: get", status=400, code=100)
    assert guidance_for_error(exc, flavour="basic_display") is g.RETIRED_API
    assert guidance_for_error(exc, flavour="instagram_login") is None
    assert guidance_for("Unsupported request", code=2, flavour="basic_display") is None


def test_failures_are_worded_by_what_they_are():
    network = Unreachable("Could not reach Instagram for /oauth/access_token (ConnectionError).")
    assert failure_text(network).startswith("could not reach Instagram: ")
    assert guidance_for_error(network) is g.NETWORK
    assert "refused" not in failure_text(network)
    refusal = InstagramError("Invalid platform app", status=400, code=400)
    assert failure_text(refusal) == "Instagram refused: Invalid platform app (code 400) [HTTP 400]"
    failed = Transient("no usable answer from /me", status=502)
    assert failure_text(failed) == "Instagram failed: no usable answer from /me [HTTP 502]"
    # Instagram's own failure: said once, with what to do (nothing, but wait).
    assert guidance_for_error(failed) is g.INSTAGRAM_FAILED
    assert "try again in a few minutes" in g.INSTAGRAM_FAILED.advice.lower()
    assert "Instagram failed" not in g.INSTAGRAM_FAILED.advice
    assert failure_text(KeyError("x")) == "the registry failed: KeyError"

    class Ours(InstagramError):
        ours = True

    ours = Ours("the stored token cannot be decrypted")
    assert failure_text(ours) == "the registry failed: the stored token cannot be decrypted"
    assert guidance_for_error(ours) is None
    assert failure_text(TokenInvalid("Session has expired", code=190)).startswith(
        "Instagram refused: ")


# --- permanent refresh failures: flagged once, held from the sweep --------------------------


def sweep_and_refresh() -> list[int]:
    """One sweep as the beat runs it: the due ids, each refreshed (as the workers would)."""
    now = timezone.now()
    plan = services.refresh_sweep(actor=ACTOR, now=now)
    ids = plan.refresh_ids
    list(services.tokens_refresh_many(account_ids=ids, actor=ACTOR, now=now))
    return ids


def test_a_retired_basic_display_refresh_is_flagged_once_and_not_retried(fake, db):
    app = make_app(fake, "basic_display")
    account = active_account(fake, app, "Old feed", exported=True)
    fake.inject(REFRESH, graph_error(100, message="Unsupported request - method type: get"))

    assert sweep_and_refresh() == [account.pk]
    account.refresh_from_db()
    assert account.status == Account.Status.NEEDS_REAUTH
    assert "could not" not in account.last_error
    assert "Instagram refused: Unsupported request" in account.last_error
    assert "shut down on 2024-12-04" in account.last_error
    assert "Instagram Login" in account.last_error
    assert "next sweep tries again" not in account.last_error
    event = Event.objects.get(account=account, action="refresh")
    assert event.outcome == "failed" and "shut down on 2024-12-04" in event.message
    assert Token.objects.get(account=account).refresh_held_since is not None

    # The next sweeps leave it alone: no second call to Instagram, no second event.
    assert sweep_and_refresh() == []
    assert sweep_and_refresh() == []
    assert len(fake.calls(REFRESH)) == 1
    assert Event.objects.filter(account=account, action="refresh").count() == 1
    assert selectors.next_refresh_at(account=selectors.account_get(account_id=account.pk),
                                     now=timezone.now()) is None


def test_the_alert_of_a_retired_api_carries_its_guidance(fake, db, settings, mailoutbox):
    settings.ALERT_EMAILS = ["ops@example.com"]
    app = make_app(fake, "basic_display")
    active_account(fake, app, "Old feed")
    fake.inject(REFRESH, graph_error(100, message="Unsupported request - method type: get"))
    sweep_and_refresh()
    services.alerts_dispatch(now=timezone.now())
    assert len(mailoutbox) == 1
    body = mailoutbox[0].body
    assert "Old feed" in body and "shut down on 2024-12-04" in body
    assert "move this account to it and authorize again" in body


def test_an_app_problem_holds_the_refresh_until_staff_refresh_by_hand(fake, login_app):
    account = active_account(fake, login_app, "Shop feed")
    fake.inject(REFRESH, graph_error(100, message="Invalid platform app"))
    assert sweep_and_refresh() == [account.pk]
    account.refresh_from_db()
    assert account.status == Account.Status.ERROR  # the token may be fine: the app is not
    assert "Instagram app ID from Meta's dashboard" in account.last_error
    assert "use Refresh token now" in account.last_error
    assert sweep_and_refresh() == []
    assert len(fake.calls(REFRESH)) == 1

    # Staff fixed the app at Meta and press Refresh now: it is tried, and the hold ends.
    result = services.token_refresh(account_id=account.pk, actor=ACTOR, now=timezone.now(),
                                    force=True)
    assert result.outcome == Outcome.REFRESHED
    token = Token.objects.get(account=account)
    assert token.refresh_held_since is None
    account.refresh_from_db()
    assert account.status == Account.Status.ACTIVE and account.last_error == ""


def test_an_unknown_error_is_still_retried_by_the_next_sweep(fake, login_app):
    account = active_account(fake, login_app, "Shop feed")
    fake.inject(REFRESH, graph_error(100, message="Unsupported request"))  # Instagram Login
    sweep_and_refresh()
    account.refresh_from_db()
    assert account.status == Account.Status.ERROR
    assert "The next sweep tries again" in account.last_error
    assert Token.objects.get(account=account).refresh_held_since is None
    assert sweep_and_refresh() == [account.pk]


# --- the callback's error page and the paste form ---------------------------------------


def authorize_and_come_back(client, account: Account) -> str:  # noqa: ANN001
    location = allow_at_fake(
        client.post(reverse("admin:accounts_account_authorize", args=[account.pk]))["Location"])
    parts = location.split("#")[0].split("?", 1)
    return f"{reverse('oauth-callback')}?{parts[1]}"


def test_the_callback_error_page_is_branded_and_says_what_to_do(admin_client, login_account,
                                                                fake):
    fake.inject(CODE_EXCHANGE, flat_error("Insufficient developer role"))
    response = admin_client.get(authorize_and_come_back(admin_client, login_account))
    assert response.status_code == 400
    html = response.content.decode()
    assert re.search(r"<title>\s*Authorization failed \| igregistry\s*</title>", html)
    assert "Django site admin" not in html
    assert 'id="user-tools"' in html and "Log out" in html
    assert html.count("Nothing was stored") == 1
    assert "Instagram refused: Insufficient developer role" in html
    assert "Instagram Testers" in html and "instagram.com/accounts/manage_access" in html
    assert reverse("admin:accounts_account_change", args=[login_account.pk]) in html
    event = Event.objects.get(account=login_account, action="authorize", outcome="failed")
    assert "Instagram Testers" in event.message
    assert not Token.objects.filter(account=login_account).exists()


@pytest.mark.parametrize(("message", "expected"), [
    ("Error validating verification code. Please make sure your redirect_uri is identical to "
     "the one you used in the OAuth dialog request.", "Valid OAuth Redirect URI"),
    ("Invalid platform app", "not the Facebook app ID"),
])
def test_other_exchange_refusals_get_their_guidance(admin_client, login_account, fake,
                                                    message, expected):
    fake.inject(CODE_EXCHANGE, flat_error(message))
    response = admin_client.get(authorize_and_come_back(admin_client, login_account))
    assert response.status_code == 400
    assert expected in response.content.decode()


def test_a_code_used_twice_says_to_authorize_again(admin_client, login_account, fake):
    path = authorize_and_come_back(admin_client, login_account)
    assert admin_client.get(path).status_code == 302
    # The same code again, under a new state of this user: Instagram refuses the code.
    code = path.split("code=")[1].split("&")[0]
    again = authorize_and_come_back(admin_client, login_account)
    state = again.split("state=")[1].split("&")[0]
    response = admin_client.get(f"{reverse('oauth-callback')}?code={code}&state={state}")
    assert response.status_code == 400
    html = response.content.decode()
    assert "This authorization code has been used" in html
    assert "Each authorization code works once" in html


def test_a_denial_at_instagram_is_explained(admin_client, login_account, fake):
    location = allow_at_fake(admin_client.post(reverse(
        "admin:accounts_account_authorize", args=[login_account.pk]))["Location"],
        decision="cancel")
    response = admin_client.get(f"{reverse('oauth-callback')}?{location.split('?', 1)[1]}")
    html = response.content.decode()
    assert response.status_code == 400
    assert html.count("Nothing was stored") == 1
    assert "pressed Cancel at Instagram" in html


@pytest.fixture
def pasted_account(fake, db) -> Account:
    return Account.objects.create(app=make_app(fake, "instagram_login", OTHER_SITE_URI),
                                  label="Pasted")


def test_a_network_failure_on_the_paste_form_is_not_called_a_refusal(admin_client,
                                                                     pasted_account, fake):
    page = admin_client.post(reverse("admin:accounts_account_authorize",
                                     args=[pasted_account.pk]))
    authorize_url = re.search(r'href="([^"]+)" target="_blank" rel="noopener" '
                              r'id="authorize-link"', page.content.decode()).group(1)
    location = allow_at_fake(authorize_url.replace("&amp;", "&"))
    fake.inject(CODE_EXCHANGE, disconnect())
    response = admin_client.post(reverse("admin:accounts_account_paste",
                                         args=[pasted_account.pk]),
                                 {"redirected_url": location})
    html = response.content.decode()
    assert response.status_code == 400
    assert "could not reach Instagram" in html
    assert "refused" not in html
    assert "connection to Instagram" in html  # the guidance for no answer
    assert not Token.objects.filter(account=pasted_account).exists()


def test_the_paste_form_shows_the_guidance_of_a_refusal(admin_client, pasted_account, fake):
    admin_client.post(reverse("admin:accounts_account_authorize", args=[pasted_account.pk]))
    response = admin_client.post(reverse("admin:accounts_account_paste",
                                         args=[pasted_account.pk]),
                                 {"redirected_url": "not-a-code"})
    html = response.content.decode()
    assert "Instagram refused: Matching code was not found" in html
    assert 'id="flow-guidance"' in html and "within the hour" in html


# --- scopes --------------------------------------------------------------------------------


def app_with(scopes: str, flavour: str = "instagram_login") -> InstagramApp:
    return InstagramApp(name="x", flavour=flavour, app_id="1", app_secret="s" * 10,
                        redirect_uri=CALLBACK_URI, scopes=scopes)


@pytest.mark.parametrize("scopes", [
    "instagram_business_basic, instagram_business_manage_insights",
    "instagram_business_basic,instagram_business_manage_messages,"
    "instagram_business_manage_comments,instagram_business_content_publish",
    "",
])
def test_current_scopes_are_accepted(scopes):
    app_with(scopes).clean()


@pytest.mark.parametrize(("scopes", "flavour", "says"), [
    ("business_basic", "instagram_login", "use instagram_business_basic"),
    ("instagram_business_basic,business_manage_messages", "instagram_login",
     "use instagram_business_manage_messages"),
    ("user_profile,user_media", "instagram_login", "a Basic Display scope: use "
     "instagram_business_basic"),
    ("instagram_business_basic", "basic_display", "make this an Instagram Login app"),
])
def test_retired_and_wrong_flavour_scopes_are_refused_naming_the_replacement(scopes, flavour,
                                                                            says):
    with pytest.raises(ValidationError) as caught:
        app_with(scopes, flavour).clean()
    assert says in " ".join(caught.value.message_dict["scopes"])


def test_an_unknown_scope_is_saved_with_a_warning(admin_client, db):
    response = admin_client.post(reverse("admin:accounts_instagramapp_add"), {
        "name": "New perms", "flavour": "instagram_login", "app_id": "1000000000000009",
        "app_secret": "new-perms-secret-123", "redirect_uri": OTHER_SITE_URI,
        "scopes": "instagram_business_basic, instagram_business_manage_something_new",
    }, follow=True)
    assert response.status_code == 200
    assert InstagramApp.objects.filter(name="New perms").exists()
    text = " ".join(str(m) for m in response.context["messages"])
    assert "does not know the scope(s) instagram_business_manage_something_new" in text


def test_the_fake_accepts_what_the_registry_allows(fake, db):
    app = make_app(fake, "instagram_login")
    InstagramApp.objects.filter(pk=app.pk).update(
        scopes="instagram_business_basic,instagram_business_manage_insights")
    app.refresh_from_db()
    app.clean()  # the registry allows them
    dialog = services.instagram_client().authorize_url(
        flavour=app.flavour_enum, client_id=app.app_id, redirect_uri=CALLBACK_URI,
        scopes=("instagram_business_basic", "instagram_business_manage_insights"), state="s")
    assert "code=" in allow_at_fake(dialog)


# --- permissions ---------------------------------------------------------------------------


def test_permissions_fall_back_to_the_requested_scopes_marked_as_such(admin_client,
                                                                     login_account, fake):
    fake.exchange_shape = "flat"  # Instagram names no permissions
    assert admin_client.get(authorize_and_come_back(admin_client, login_account)).status_code \
        == 302
    token = Token.objects.get(account=login_account)
    assert token.permissions == ["instagram_business_basic"] and token.permissions_requested
    page = admin_client.get(reverse("admin:accounts_account_change", args=[login_account.pk]))
    assert "instagram_business_basic (requested; Instagram did not say)" in \
        page.content.decode()


def test_permissions_instagram_names_are_recorded_as_said(admin_client, login_account, fake):
    fake.exchange_shape = "data"
    assert admin_client.get(authorize_and_come_back(admin_client, login_account)).status_code \
        == 302
    token = Token.objects.get(account=login_account)
    assert token.permissions == ["instagram_business_basic"]
    assert not token.permissions_requested
    page = admin_client.get(reverse("admin:accounts_account_change", args=[login_account.pk]))
    assert "requested; Instagram did not say" not in page.content.decode()


# --- the app's Meta setup and the account's checklist -----------------------------------------


def test_the_app_page_shows_every_value_to_enter_at_meta(admin_client, login_app, settings):
    login_app.meta_app_id = "987654321"
    login_app.save()
    html = admin_client.get(reverse("admin:accounts_instagramapp_change",
                                    args=[login_app.pk])).content.decode()
    urls = selectors.meta_callback_urls(app_pk=login_app.pk)
    for value in (selectors.callback_url(), urls.deauthorize, urls.data_deletion,
                  f"{settings.SITE_URL}/"):
        assert f'value="{value}"' in html
    assert "https://developers.facebook.com/apps/987654321/roles/roles/" in html
    assert "Business or Creator" in html
    assert "https://www.instagram.com/accounts/manage_access/" in html
    assert "Insufficient developer role" in html  # what Instagram's messages mean


def test_a_basic_display_app_page_says_the_api_is_gone(admin_client, fake, db):
    app = make_app(fake, "basic_display")
    html = admin_client.get(reverse("admin:accounts_instagramapp_change",
                                    args=[app.pk])).content.decode()
    assert 'id="flavour-retired"' in html and "shut down on 2024-12-04" in html
    assert "accepted the invitation" in html


def steps_of(client, account: Account) -> dict[str, tuple[bool, str]]:  # noqa: ANN001
    html = client.get(reverse("admin:accounts_account_change", args=[account.pk])).content.decode()
    found = re.findall(r'data-step="(\w+)" data-done="(true|false)"', html)
    return {key: (done == "true", html) for key, done in found}


def test_the_checklist_follows_the_account_from_new_to_done(admin_client, login_account, fake,
                                                           settings):
    settings.SITE_URL = "http://testserver"
    steps = steps_of(admin_client, login_account)
    assert {k: v[0] for k, v in steps.items()} == {
        "app": True, "role": False, "authorized": False, "file": False}
    html = steps["app"][1]
    assert 'id="confirm-role-button"' in html and 'id="checklist-authorize"' in html

    response = admin_client.post(reverse("admin:accounts_account_confirm_role",
                                         args=[login_account.pk]), {"confirmed": "1"})
    assert response.status_code == 302
    event = Event.objects.get(account=login_account, action="role_confirmed")
    assert event.actor_user.username == "admin"
    assert steps_of(admin_client, login_account)["role"][0] is True

    assert admin_client.get(authorize_and_come_back(admin_client, login_account)).status_code \
        == 302
    steps = steps_of(admin_client, login_account)
    assert all(done for done, _ in steps.values())
    assert "(all done)" in steps["file"][1]


def test_the_checklist_points_elsewhere_when_the_redirect_uri_is_another_site(
        admin_client, pasted_account):
    steps = steps_of(admin_client, pasted_account)
    assert steps["app"][0] is False
    assert "Paste redirect URL" in steps["app"][1]


def test_the_checklist_of_a_basic_display_account_says_to_move(admin_client, fake, db):
    account = Account.objects.create(app=make_app(fake, "basic_display"), label="Old")
    steps = steps_of(admin_client, account)
    assert steps["app"][0] is False
    assert "shut down on 2024-12-04" in steps["app"][1]
    assert "an accepted Instagram tester of the app" in steps["app"][1]


def test_the_checklist_shows_the_last_failed_attempt_with_its_guidance(admin_client,
                                                                      login_account, fake):
    fake.inject(CODE_EXCHANGE, flat_error("Insufficient developer role"))
    admin_client.get(authorize_and_come_back(admin_client, login_account))
    html = steps_of(admin_client, login_account)["authorized"][1]
    assert "The last attempt failed" in html and "Instagram Testers" in html


def test_the_checklist_adds_the_guidance_a_stored_failure_lacks(admin_client, login_account):
    # A failure recorded before the guidance existed: its message holds no advice.
    Event.objects.create(account=login_account, action="authorize", outcome="failed",
                         created_at=timezone.now(),
                         message="Code exchange failed: Insufficient developer role (code 400)")
    html = steps_of(admin_client, login_account)["authorized"][1]
    assert ("The last attempt failed: Code exchange failed: Insufficient developer role "
            "(code 400). The Instagram account has no role on this app") in html


def test_with_advice_adds_the_guidance_once():
    text = "Refresh failed: Invalid platform app (code 400)."
    guided = with_advice(text, lead="What to do: ")
    assert guided == f"{text} What to do: {g.INVALID_PLATFORM_APP.advice}"
    assert with_advice(guided, lead="What to do: ") == guided


def test_only_operators_tick_the_role(client, login_account, django_user_model):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="pw-viewer-12345",
                                                   is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_account"))
    client.force_login(viewer)
    page = client.get(reverse("admin:accounts_account_change", args=[login_account.pk]))
    assert page.status_code == 200 and 'id="confirm-role-button"' not in page.content.decode()
    response = client.post(reverse("admin:accounts_account_confirm_role",
                                   args=[login_account.pk]))
    assert response.status_code == 403
    assert not Event.objects.filter(action="role_confirmed").exists()


def test_a_stored_last_error_of_a_known_kind_gets_its_guidance(admin_client, login_account):
    Account.objects.filter(pk=login_account.pk).update(
        status="error", last_error="Refresh failed: Insufficient developer role (code 400).")
    html = admin_client.get(reverse("admin:accounts_account_change",
                                    args=[login_account.pk])).content.decode()
    assert "What to do: The Instagram account has no role on this app" in html


def test_role_confirmation_is_idempotent(login_account):
    now = timezone.now()
    first = services.account_role_confirm(account=login_account, confirmed=True, actor=ACTOR,
                                          now=now)
    again = services.account_role_confirm(account=login_account, confirmed=True, actor=ACTOR,
                                          now=now + timedelta(seconds=1))
    assert first.pk == again.pk
    services.account_role_confirm(account=login_account, confirmed=False, actor=ACTOR, now=now)
    assert selectors.account_role_confirmation(account=login_account).action == \
        "role_unconfirmed"


def test_unticking_a_role_never_ticked_records_nothing(login_account):
    assert services.account_role_confirm(account=login_account, confirmed=False, actor=ACTOR,
                                         now=timezone.now()) is None
    assert selectors.account_role_confirmation(account=login_account) is None


def test_the_add_page_shows_the_redirect_uri_to_register(admin_client, db):
    html = admin_client.get(reverse("admin:accounts_instagramapp_add")).content.decode()
    assert f'value="{selectors.callback_url()}"' in html
    assert "Deauthorize callback URL" not in html  # it names the app's id: after saving
