"""Behaviours of the OAuth flow, token storage and import that no other test pinned
down, found by mutation testing (README, "Mutation testing"; the survivors are classified
in docs/mutation-survivors.md). Each test goes through the public service functions, the
callback view or the admin pages, and fails when the behaviour changes."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings
from django.urls import reverse
from django.utils import timezone

from accounts import services
from accounts.instagram import InstagramClient, Profile
from accounts.models import Account, Event, OAuthState, PendingToken, SweepState, Token
from accounts.services import Actor, FlowError
from accounts.services.oauth import pending_token_swap
from tests.conftest import OTHER_SITE_URI, SECRETS, active_account, allow_at_fake, callback_path
from tests.fake_instagram import graph_error, mangled, rate_limited, status
from tests.test_pinned_behaviour import held_by_another_worker

CLIENT_ID = SECRETS["instagram_login"][0]
EXCHANGE = "/oauth/access_token"
SWAP = "/access_token"


def back_link(account: Account) -> str:
    """The error page's link back to the account's own page."""
    return f'href="{reverse("admin:accounts_account_change", args=[account.pk])}"'


# --- OAuth: the callback --------------------------------------------------------------


def test_the_callback_records_the_person_on_every_event_of_the_flow(
    admin_client, admin_user, login_account, fake
):
    assert admin_client.get(callback_path(admin_client, login_account)).status_code == 302
    events = Event.objects.filter(account=login_account).order_by("pk")
    assert [(e.action, e.outcome) for e in events] == [
        ("authorize_start", "ok"), ("authorize", "ok"), ("export", "ok")]
    assert {e.actor_user for e in events} == {admin_user}


def test_a_refused_code_is_recorded_with_instagrams_words_and_the_page_leads_back(
    admin_client, admin_user, login_account, fake
):
    fake.inject(EXCHANGE, status(400, '{"error_type": "OAuthException", "code": 400, '
                                      '"error_message": "Invalid platform app"}'))
    response = admin_client.get(callback_path(admin_client, login_account))
    assert response.status_code == 400
    assert back_link(login_account) in response.content.decode()
    event = Event.objects.get(account=login_account, action="authorize")
    assert (event.outcome, event.actor_user) == ("failed", admin_user)
    assert "Invalid platform app" in event.message
    assert not PendingToken.objects.exists()


def test_a_denial_is_recorded_as_the_person_and_the_page_leads_back(
    admin_client, admin_user, login_account, fake
):
    path = callback_path(admin_client, login_account)
    state = path.split("state=")[1].split("&")[0]
    query = f"state={state}&error=access_denied&error_description=Permissions+error"
    response = admin_client.get(f"{reverse('oauth-callback')}?{query}")
    assert response.status_code == 400
    assert back_link(login_account) in response.content.decode()
    event = Event.objects.get(account=login_account, action="authorize")
    assert (event.outcome, event.actor_user) == ("denied", admin_user)


def test_an_answer_without_a_code_leads_back_to_the_account(admin_client, login_account,
                                                             fake):
    path = callback_path(admin_client, login_account)
    state = path.split("state=")[1].split("&")[0]
    response = admin_client.get(f"{reverse('oauth-callback')}?state={state}")
    assert response.status_code == 400
    assert "no code" in response.content.decode()
    assert back_link(login_account) in response.content.decode()
    assert fake.calls(EXCHANGE) == []


def test_a_flow_of_another_staff_user_names_its_account(fake, login_account, admin_user,
                                                        django_user_model):
    now = timezone.now()
    url = services.oauth_start(account=login_account, user=admin_user, now=now)
    params = dict(p.split("=", 1) for p in urlsplit(allow_at_fake(url)).query.split("&"))
    colleague = django_user_model.objects.create_user("colleague", is_staff=True)
    with pytest.raises(FlowError, match="another staff user") as refused:
        services.oauth_callback(params=params, user=colleague, now=now)
    assert refused.value.account == login_account


def test_starting_a_flow_clears_the_states_expired_over_a_day_ago(fake, login_account,
                                                                  admin_user):
    now = timezone.now()
    ttl = timedelta(seconds=django_settings.OAUTH_STATE_TTL_SECONDS)
    day = timedelta(days=1)
    for expired_ago in (day + timedelta(seconds=1), day, day - timedelta(seconds=1)):
        services.oauth_start(account=login_account, user=admin_user,
                             now=now - expired_ago - ttl)
    services.oauth_start(account=login_account, user=admin_user, now=now)
    kept = sorted(OAuthState.objects.values_list("expires_at", flat=True))
    assert kept == [now - day, now - day + timedelta(seconds=1), now + ttl]


def test_the_authorize_url_of_an_instagram_login_app(fake, login_account, admin_user,
                                                     settings):
    settings.INSTAGRAM_WWW_URL = "https://www.instagram.test"
    settings.INSTAGRAM_API_URL = "https://api.instagram.test"
    url = services.oauth_start(account=login_account, user=admin_user, now=timezone.now())
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == "https://www.instagram.test"
    assert "enable_fb_login=0" in parts.query and "force_authentication=0" in parts.query


def test_a_replayed_callback_leads_back_to_the_account(admin_client, login_account, fake):
    path = callback_path(admin_client, login_account)
    assert admin_client.get(path).status_code == 302
    response = admin_client.get(path)
    assert response.status_code == 400
    assert "already used" in response.content.decode()
    assert back_link(login_account) in response.content.decode()


def test_a_state_expiring_this_instant_is_refused(fake, login_account, admin_user):
    now = timezone.now()
    ttl = timedelta(seconds=django_settings.OAUTH_STATE_TTL_SECONDS)
    url = services.oauth_start(account=login_account, user=admin_user, now=now - ttl)
    params = dict(p.split("=", 1) for p in urlsplit(allow_at_fake(url)).query.split("&"))
    with pytest.raises(FlowError, match="expired") as refused:
        services.oauth_callback(params=params, user=admin_user, now=now)
    assert refused.value.account == login_account
    assert fake.calls(EXCHANGE) == []
    # A moment earlier the same answer completes the flow.
    services.oauth_callback(params=params, user=admin_user, now=now - timedelta(microseconds=1))
    assert Token.objects.filter(account=login_account).exists()


# --- OAuth: a pasted bare code completes only the user's own open flow ------------------


@pytest.fixture
def paste_app(login_app):
    login_app.redirect_uri = OTHER_SITE_URI
    login_app.save()
    return login_app


def code_from(location: str) -> str:
    return location.split("code=")[1].split("&")[0].split("#")[0]


def start_and_allow(account: Account, user, *, now) -> tuple[str, str]:  # noqa: ANN001
    """Start a flow as `user` at `now`; return the authorize URL and the code Instagram
    redirects with."""
    url = services.oauth_start(account=account, user=user, now=now)
    return url, code_from(allow_at_fake(url))


def test_a_bare_code_does_not_complete_the_flow_of_another_account(fake, paste_app,
                                                                   admin_user):
    now = timezone.now()
    started = Account.objects.create(app=paste_app, label="Started")
    other = Account.objects.create(app=paste_app, label="Other")
    _, code = start_and_allow(started, admin_user, now=now)
    with pytest.raises(FlowError, match="only an authorization you started") as refused:
        services.oauth_paste(account=other, text=code, user=admin_user, now=now)
    assert refused.value.account == other
    assert fake.calls(EXCHANGE) == []
    # The flow that was started is still open: its own account completes with the code.
    assert OAuthState.objects.get(account=started).used_at is None
    services.oauth_paste(account=started, text=code, user=admin_user, now=now)
    assert Token.objects.filter(account=started).exists()


def test_a_bare_code_marks_the_flow_used_and_a_used_flow_takes_no_second_code(
    fake, paste_app, admin_user
):
    now = timezone.now()
    account = Account.objects.create(app=paste_app, label="Shop feed")
    url, code = start_and_allow(account, admin_user, now=now)
    services.oauth_paste(account=account, text=code, user=admin_user, now=now)
    assert OAuthState.objects.get(account=account).used_at == now
    # Instagram issues a fresh code for the same link; the flow is spent all the same.
    second = code_from(allow_at_fake(url))
    with pytest.raises(FlowError, match="only an authorization you started"):
        services.oauth_paste(account=account, text=second, user=admin_user, now=now)
    assert len(fake.calls(EXCHANGE)) == 1


def test_a_bare_code_is_refused_once_the_flow_expires(fake, paste_app, admin_user):
    now = timezone.now()
    account = Account.objects.create(app=paste_app, label="Shop feed")
    ttl = timedelta(seconds=django_settings.OAUTH_STATE_TTL_SECONDS)
    _, code = start_and_allow(account, admin_user, now=now - ttl)  # expires exactly now
    with pytest.raises(FlowError, match="only an authorization you started"):
        services.oauth_paste(account=account, text=code, user=admin_user, now=now)
    assert fake.calls(EXCHANGE) == []
    # A moment earlier it was still open.
    services.oauth_paste(account=account, text=code, user=admin_user,
                         now=now - timedelta(microseconds=1))
    assert Token.objects.filter(account=account).exists()


def test_a_pasted_url_of_another_accounts_flow_names_this_account(fake, paste_app,
                                                                  admin_user):
    now = timezone.now()
    started = Account.objects.create(app=paste_app, label="Started")
    other = Account.objects.create(app=paste_app, label="Other")
    url = services.oauth_start(account=started, user=admin_user, now=now)
    location = allow_at_fake(url)
    with pytest.raises(FlowError, match="another account") as refused:
        services.oauth_paste(account=other, text=location, user=admin_user, now=now)
    assert refused.value.account == other
    assert not Token.objects.exists()


def test_a_pasted_flow_records_the_person_who_completed_it(fake, paste_app, admin_user):
    now = timezone.now()
    account = Account.objects.create(app=paste_app, label="Shop feed")
    _, code = start_and_allow(account, admin_user, now=now)
    services.oauth_paste(account=account, text=code, user=admin_user, now=now)
    event = Event.objects.get(account=account, action="authorize")
    assert (event.outcome, event.actor_user) == ("ok", admin_user)


# --- OAuth: what a failed swap for the long-lived token leaves ---------------------------


def test_a_dead_short_lived_token_is_dropped_and_the_page_leads_back(
    admin_client, admin_user, login_account, fake
):
    fake.inject(SWAP, graph_error(190, 463))
    response = admin_client.get(callback_path(admin_client, login_account))
    assert response.status_code == 400
    assert back_link(login_account) in response.content.decode()
    assert not PendingToken.objects.exists()
    event = Event.objects.get(account=login_account, action="authorize")
    assert (event.outcome, event.actor_user) == ("failed", admin_user)
    assert "Session has expired" in event.message


def test_a_refused_swap_keeps_the_short_lived_token_and_the_page_leads_back(
    admin_client, admin_user, login_account, fake
):
    fake.inject(SWAP, status(503))
    response = admin_client.get(callback_path(admin_client, login_account))
    assert response.status_code == 400
    page = response.content.decode()
    assert back_link(login_account) in page and "short-lived token is kept" in page
    assert PendingToken.objects.filter(account=login_account).exists()
    event = Event.objects.get(account=login_account, action="swap")
    assert (event.outcome, event.actor_user) == ("failed", admin_user)
    assert "did not complete the swap" in event.message and "503" in event.message


def test_a_bug_during_the_swap_keeps_the_short_lived_token_logs_and_leads_back(
    admin_client, admin_user, login_account, fake, monkeypatch, caplog
):
    def broken(self, **kwargs):  # noqa: ANN001, ANN003
        raise ZeroDivisionError("a bug of ours")

    monkeypatch.setattr(InstagramClient, "me", broken)
    with caplog.at_level(logging.ERROR, logger="accounts.services.oauth"):
        response = admin_client.get(callback_path(admin_client, login_account))
    assert response.status_code == 400
    page = response.content.decode()
    assert back_link(login_account) in page and "ZeroDivisionError" in page
    assert PendingToken.objects.filter(account=login_account).exists()
    event = Event.objects.get(account=login_account, action="swap")
    assert (event.outcome, event.actor_user) == ("failed", admin_user)
    assert "ZeroDivisionError" in event.message
    # The traceback is logged, on a line that can be written.
    (record,) = [r for r in caplog.records if r.name == "accounts.services.oauth"]
    assert record.exc_info and record.exc_info[0] is ZeroDivisionError
    assert str(login_account.pk) in record.getMessage()


@pytest.mark.parametrize(("flavour_app", "fields"), [
    ("login_app", "id,user_id,username"),
    ("basic_app", "id,username"),
])
def test_the_profile_asked_for_after_the_swap_has_the_flavours_fields(
    request, admin_client, fake, flavour_app, fields
):
    app = request.getfixturevalue(flavour_app)
    account = Account.objects.create(app=app, label="Shop feed")
    assert admin_client.get(callback_path(admin_client, account)).status_code == 302
    assert [c.query["fields"] for c in fake.calls("/me")] == [fields]


@pytest.fixture
def basic_app(fake, db):
    from tests.conftest import make_app

    return make_app(fake, "basic_display")


# --- OAuth: the pending short-lived token ------------------------------------------------

SWEEP = Actor(job="refresh_sweep")


def pending(account: Account, fake, *, now, expires_in=timedelta(minutes=30)) -> str:  # noqa: ANN001
    short = fake.mint_token(client_id=CLIENT_ID, username="shop_owner", kind="short")
    PendingToken.objects.create(account=account, value=short, expires_at=now + expires_in,
                                permissions=["instagram_business_basic"], created_at=now)
    return short


def test_a_pending_token_expiring_this_instant_is_not_swapped(fake, login_account):
    now = timezone.now()
    pending(login_account, fake, now=now, expires_in=timedelta(0))
    with pytest.raises(FlowError, match="expired before it could be swapped") as failed:
        pending_token_swap(account_id=login_account.pk, actor=SWEEP, now=now)
    assert failed.value.account == login_account
    assert fake.calls(SWAP) == []
    assert not PendingToken.objects.exists()
    login_account.refresh_from_db()
    assert login_account.status == Account.Status.NEEDS_REAUTH
    assert login_account.last_error == failed.value.message
    event = Event.objects.get(account=login_account, action="swap")
    assert (event.outcome, event.actor_job) == ("failed", "refresh_sweep")
    assert event.message == failed.value.message


def test_the_file_of_a_swapped_token_is_written_by_the_job_that_swapped(fake, login_account,
                                                                         token_dir):
    now = timezone.now()
    pending(login_account, fake, now=now)
    assert pending_token_swap(account_id=login_account.pk, actor=SWEEP, now=now)
    assert (token_dir / "shop_owner").read_text() == Token.objects.get().value
    export = Event.objects.get(account=login_account, action="export")
    assert (export.outcome, export.actor_job) == ("ok", "refresh_sweep")


def held_for_a_second(queryset):  # noqa: ANN001, ANN201
    """Another worker locks the rows of `queryset` for one second, from when this enters."""
    return held_by_another_worker(queryset, seconds=1)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_flow_waits_for_a_pending_token_another_worker_holds(postgres, fake, login_app):
    # Only the sweep passes skip_locked: the flow itself (the default) waits its turn.
    account = Account.objects.create(app=login_app, label="Shop feed")
    now = timezone.now()
    pending(account, fake, now=now)
    with held_for_a_second(PendingToken.objects.all()):
        started = time.monotonic()
        assert pending_token_swap(account_id=account.pk, actor=SWEEP, now=now)
        assert time.monotonic() - started > 0.5
    assert Token.objects.filter(account=account).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_sweep_swaps_a_pending_token_whose_account_row_another_writer_holds(
    postgres, fake, login_app
):
    # Only the pending row is locked (FOR UPDATE OF): an admin saving the account at that
    # moment delays the swap, it does not make the sweep pass the token by.
    account = Account.objects.create(app=login_app, label="Shop feed")
    now = timezone.now()
    pending(account, fake, now=now)
    with held_for_a_second(Account.objects.filter(pk=account.pk)):
        result = services.pending_swap(account_id=account.pk, actor=SWEEP, now=now)
    assert result.outcome == "refreshed"
    assert Token.objects.filter(account=account).exists()


# --- tokens: verify ----------------------------------------------------------------------

VERIFIER = Actor(job="verify_job")


def test_verify_without_a_token_asks_nothing(fake, login_account):
    with pytest.raises(FlowError, match="no token yet") as refused:
        services.account_verify(account=login_account, actor=VERIFIER, now=timezone.now())
    assert refused.value.account == login_account
    assert fake.calls() == []


@pytest.mark.parametrize(("flavour_app", "fields"), [
    ("login_app", "id,user_id,username"),
    ("basic_app", "id,username"),
])
def test_verify_takes_the_current_username_and_clears_the_last_error(
    request, fake, flavour_app, fields
):
    app = request.getfixturevalue(flavour_app)
    account = active_account(fake, app, "Shop feed", last_error="an old failure")
    fake.rename_user("shop_feed", "shop_renamed")
    now = timezone.now()
    profile = services.account_verify(account=account, actor=VERIFIER, now=now)
    assert (profile.id, profile.username) == (account.ig_id, "shop_renamed")
    account.refresh_from_db()
    assert (account.username, account.last_error) == ("shop_renamed", "")
    assert [c.query["fields"] for c in fake.calls("/me")] == [fields]
    event = Event.objects.get(account=account, action="verify")
    assert (event.outcome, event.actor_job, event.created_at) == ("ok", "verify_job", now)
    assert "@shop_renamed" in event.message


def test_verify_learns_the_instagram_id_of_an_account_that_had_none(fake, login_app):
    account = active_account(fake, login_app, "Shop feed")
    ig_id = account.ig_id
    Account.objects.filter(pk=account.pk).update(ig_id="")
    account.refresh_from_db()
    services.account_verify(account=account, actor=VERIFIER, now=timezone.now())
    account.refresh_from_db()
    # Both of /me's ids, each in its field (the Instagram Login flavour asks for both).
    user = fake._state.users[account.username]
    assert (account.ig_id, account.ig_user_id) == (ig_id, user.user_id)


@pytest.mark.parametrize("policy", ["keep", "empty"])
def test_verify_of_a_dead_token_needs_reauthorization_and_applies_the_file_policy(
    fake, login_app, token_dir, settings, policy
):
    settings.TOKEN_FILE_DEAD_TOKEN = policy
    account = active_account(fake, login_app, "Shop feed", exported=True)
    value = account.token.value
    fake.revoke_user("shop_feed", subcode=460)
    now = timezone.now()
    with pytest.raises(FlowError, match="did not accept") as refused:
        services.account_verify(account=account, actor=VERIFIER, now=now)
    assert refused.value.account == account
    account.refresh_from_db()
    assert account.status == Account.Status.NEEDS_REAUTH
    assert "190" in account.last_error and account.last_error in refused.value.message
    event = Event.objects.get(account=account, action="verify")
    assert (event.outcome, event.actor_job, event.message) == (
        "failed", "verify_job", account.last_error)
    assert (token_dir / "shop_feed").read_text() == ("" if policy == "empty" else value)
    exports = Event.objects.filter(account=account, action="export").order_by("pk")
    assert [e.actor_job for e in exports] == (
        ["test", "verify_job"] if policy == "empty" else ["test"])


def test_verify_that_instagram_cannot_answer_keeps_the_account_and_its_file(
    fake, login_app, token_dir, settings
):
    settings.TOKEN_FILE_DEAD_TOKEN = "empty"
    account = active_account(fake, login_app, "Shop feed", exported=True)
    value = account.token.value
    fake.inject("/me", status(503))
    with pytest.raises(FlowError, match="did not accept"):
        services.account_verify(account=account, actor=VERIFIER, now=timezone.now())
    account.refresh_from_db()
    assert account.status == Account.Status.ACTIVE
    assert "503" in account.last_error
    assert (token_dir / "shop_feed").read_text() == value
    assert Event.objects.filter(account=account, action="export").count() == 1  # the first


def test_verify_of_a_token_of_another_instagram_user_changes_nothing(fake, login_app):
    account = active_account(fake, login_app, "Shop feed")
    other = active_account(fake, login_app, "Other feed")
    Token.objects.filter(account=account).update(value=other.token.value)
    account.refresh_from_db()
    now = timezone.now()
    with pytest.raises(FlowError, match="belongs to @other_feed") as refused:
        services.account_verify(account=account, actor=VERIFIER, now=now)
    assert refused.value.account == account
    account.refresh_from_db()
    assert (account.username, account.status) == ("shop_feed", Account.Status.ACTIVE)
    event = Event.objects.get(account=account, action="verify")
    assert (event.outcome, event.actor_job, event.message) == (
        "failed", "verify_job", refused.value.message)


# --- tokens: store -----------------------------------------------------------------------


def test_a_stored_token_starts_a_clean_record_and_keeps_the_permissions_it_was_not_told(
    fake, login_app
):
    account = active_account(fake, login_app, "Shop feed", last_error="refresh failed")
    Account.objects.filter(pk=account.pk).update(status=Account.Status.ERROR)
    now = timezone.now()
    Token.objects.filter(account=account).update(
        permissions=["instagram_business_basic"], last_refreshed_at=now - timedelta(days=3),
        next_attempt_at=now + timedelta(hours=1), refresh_failures=3)
    before = Account.objects.get(pk=account.pk).updated_at
    profile = Profile(id=account.ig_id, username="shop_feed")
    expires = now + timedelta(days=60)
    token = services.token_store(
        account=account, value="IGAA" + "n" * 40, kind=Token.Kind.LONG, obtained_at=now,
        expires_at=expires, permissions=None, profile=profile, action="import",
        actor=VERIFIER, now=now)
    token.refresh_from_db()
    assert (token.value, token.obtained_at, token.expires_at) == ("IGAA" + "n" * 40, now, expires)
    assert token.permissions == ["instagram_business_basic"]
    assert (token.last_refreshed_at, token.next_attempt_at, token.refresh_failures) == (
        None, None, 0)
    account.refresh_from_db()
    assert (account.status, account.last_error) == (Account.Status.ACTIVE, "")
    assert account.updated_at > before
    event = Event.objects.get(account=account, action="import")
    assert (event.outcome, event.actor_job, event.created_at) == ("ok", "verify_job", now)
    services.token_store(
        account=account, value="IGAA" + "m" * 40, kind=Token.Kind.LONG, obtained_at=now,
        expires_at=expires, permissions=[], profile=profile, action="authorize",
        actor=VERIFIER, now=now)
    assert Token.objects.get(account=account).permissions == []


def test_a_token_of_the_wrong_instagram_user_is_refused_and_the_refusal_recorded(
    fake, login_app
):
    account = active_account(fake, login_app, "Shop feed")
    value = account.token.value
    now = timezone.now()
    with pytest.raises(FlowError, match="wrong Instagram account") as refused:
        services.token_store(
            account=account, value="IGAA" + "w" * 40, kind=Token.Kind.LONG, obtained_at=now,
            expires_at=now + timedelta(days=60), permissions=None,
            profile=Profile(id="17841400000000099", username="someone_else"), action="import",
            actor=VERIFIER, now=now)
    assert refused.value.account == account
    assert Token.objects.get(account=account).value == value
    event = Event.objects.get(account=account, action="import")
    assert (event.outcome, event.actor_job, event.created_at, event.message) == (
        "failed", "verify_job", now, refused.value.message)


# --- tokens: import, and what the refresh that learns the expiry may answer ---------------

REFRESH = "/refresh_access_token"


def import_(account: Account, value: str, *, now, kind: str = "long", expires_at=None):  # noqa: ANN001
    return services.token_import(account=account, access_token=value, kind=kind,
                                 expires_at=expires_at, actor=VERIFIER, now=now)


def long_token(fake, *, age=timedelta(days=50)) -> str:  # noqa: ANN001
    return fake.mint_token(client_id=CLIENT_ID, username="shop_owner", kind="long", age=age)


def test_a_short_lived_token_imported_as_long_lived_is_swapped(fake, login_account):
    now = timezone.now()
    short = fake.mint_token(client_id=CLIENT_ID, username="shop_owner", kind="short")
    token = import_(login_account, short, now=now)
    assert token.value != short and fake.token_info(token.value)["kind"] == "long"
    assert (token.obtained_at, token.expires_at) == (now, now + timedelta(days=60))
    assert len(fake.calls(SWAP)) == 1
    assert [c.query["fields"] for c in fake.calls("/me")] == ["id,user_id,username"]
    export = Event.objects.get(account=login_account, action="export")
    assert (export.outcome, export.actor_job) == ("ok", "verify_job")


def test_a_refresh_refused_for_another_reason_than_a_dead_token_means_young(
    fake, login_account
):
    now = timezone.now()
    value = long_token(fake)
    fake.inject(REFRESH, graph_error(10))  # Instagram's "too young" (a test server's code)
    token = import_(login_account, value, now=now)
    assert token.value == value
    assert (token.obtained_at, token.expires_at) == (now, now + timedelta(days=59))
    assert len(fake.calls(SWAP)) == 1


def test_a_refresh_that_says_the_token_is_dead_stores_nothing(fake, login_account):
    fake.inject(REFRESH, graph_error(190, 460))
    with pytest.raises(FlowError, match="did not accept") as refused:
        import_(login_account, long_token(fake), now=timezone.now())
    assert refused.value.account == login_account
    assert fake.calls(SWAP) == []
    assert not Token.objects.exists()
    event = Event.objects.get(account=login_account, action="import")
    assert (event.outcome, event.actor_job) == ("failed", "verify_job")
    assert "190" in event.message


@pytest.mark.parametrize(("path", "faults"), [
    (REFRESH, [rate_limited()]),
    (SWAP, [status(503)]),
    (SWAP, [rate_limited()]),
])
def test_an_expiry_instagram_cannot_tell_just_now_stores_nothing(fake, login_account, path,
                                                                  faults):
    if path == SWAP:
        fake.inject(REFRESH, graph_error(100, message="Unsupported request"))
    fake.inject(path, *faults)
    with pytest.raises(FlowError, match="try again in a few minutes") as refused:
        import_(login_account, long_token(fake), now=timezone.now())
    assert refused.value.account == login_account
    assert not Token.objects.exists()


def test_a_refresh_answer_without_an_expiry_assumes_sixty_days(fake, login_account):
    now = timezone.now()
    fake.inject(REFRESH, mangled("expires_in_missing"))
    token = import_(login_account, long_token(fake), now=now)
    assert (token.obtained_at, token.expires_at) == (now, now + timedelta(days=60))
    assert fake.token_info(token.value)["kind"] == "long"


def test_an_expiry_without_a_zone_is_read_as_utc(fake, login_account):
    now = timezone.now()
    expires = (now + timedelta(days=10)).replace(tzinfo=None)
    token = import_(login_account, long_token(fake), now=now, expires_at=expires)
    assert token.expires_at == now + timedelta(days=10)


def test_an_import_during_a_rate_limit_pause_needs_the_expiry(fake, login_account):
    now = timezone.now()
    SweepState.objects.update_or_create(pk=1, defaults={"throttled_until": now + timedelta(
        minutes=5)})
    value = long_token(fake)
    with pytest.raises(FlowError, match="slow down") as refused:
        import_(login_account, value, now=now)
    assert refused.value.account == login_account
    assert fake.calls(REFRESH) == [] and not Token.objects.exists()
    event = Event.objects.get(account=login_account, action="import")
    assert (event.outcome, event.actor_job) == ("failed", "verify_job")
    assert "rate-limit pause" in event.message
    # With its expiry, or as a short-lived token (a swap is not a refresh), it is taken.
    token = import_(login_account, value, now=now, expires_at=now + timedelta(days=10))
    assert token.value == value
    short = fake.mint_token(client_id=CLIENT_ID, username="shop_owner", kind="short")
    assert import_(login_account, short, now=now, kind="short").value != short
    # Once the pause is over, the refresh is allowed again.
    import_(login_account, long_token(fake), now=now + timedelta(minutes=5))
    assert len(fake.calls(REFRESH)) == 1


@pytest.mark.parametrize(("value", "expires_in", "message"), [
    ("IGAA two words here", None, "without spaces"),
    ("short", None, "not an access token"),
    ("IGAA" + "x" * 40, timedelta(seconds=-1), "in the past"),
])
def test_an_import_refused_before_asking_instagram_names_the_account(
    fake, login_account, value, expires_in, message
):
    now = timezone.now()
    expires = now + expires_in if expires_in is not None else None
    with pytest.raises(FlowError, match=message) as refused:
        import_(login_account, value, now=now, expires_at=expires)
    assert refused.value.account == login_account
    assert fake.calls() == []


# --- common: the Instagram client and the event log --------------------------------------


def test_the_client_uses_the_configured_hosts_timeouts_and_deadline(settings):
    settings.INSTAGRAM_API_URL = "https://api.example.test"
    settings.INSTAGRAM_WWW_URL = "https://www.example.test"
    settings.INSTAGRAM_GRAPH_URL = "https://graph.example.test"
    settings.INSTAGRAM_CONNECT_TIMEOUT = 3.0
    settings.INSTAGRAM_READ_TIMEOUT = 7.0
    settings.INSTAGRAM_DEADLINE_SECONDS = 11.0
    client = services.instagram_client()
    assert (client.api_url, client.www_url, client.graph_url) == (
        "https://api.example.test", "https://www.example.test", "https://graph.example.test")
    assert (client.transport.timeout, client.transport.deadline) == ((3.0, 7.0), 11.0)
    assert services.instagram_client() is client  # one session per set-up


def test_an_event_message_is_one_printable_line_of_at_most_2000_characters(login_account):
    now = timezone.now()
    event = services.event_record(account=login_account, action="verify", outcome="ok",
                                  message="a\x00b\nc\x1b[31md" + "x" * 2500, now=now)
    event.refresh_from_db()
    assert event.message.startswith("a b c [31md")
    assert len(event.message) == 2000
    assert (event.account_label, event.actor_user, event.actor_job, event.created_at) == (
        "Shop feed", None, "", now)


def test_an_event_of_an_anonymous_user_or_without_an_account(db):
    from django.contrib.auth.models import AnonymousUser

    event = services.event_record(account=None, action="sweep", outcome="ok",
                                  actor=Actor(user=AnonymousUser(), job="refresh_sweep"),
                                  now=timezone.now())
    event.refresh_from_db()
    assert (event.account, event.account_label, event.actor_user, event.actor_job) == (
        None, "", None, "refresh_sweep")


def test_an_event_is_also_a_log_line(login_account, admin_user, caplog):
    with caplog.at_level(logging.INFO, logger="accounts.services.common"):
        services.event_record(account=login_account, action="verify", outcome="failed",
                              message="it\nbroke", actor=Actor(user=admin_user),
                              now=timezone.now())
    (record,) = [r for r in caplog.records if r.name == "accounts.services.common"]
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        f"event action=verify outcome=failed account={login_account.pk} actor=admin it broke")
