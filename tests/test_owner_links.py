"""Owner authorization links: an operator creates a link in the admin, the account's owner
opens it without a login, continues to (the fake) Instagram, and the token lands; a used,
expired, revoked or made-up link, or a redirect replayed in another browser, changes
nothing; a denial leaves the link usable; two tabs spend it once."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.core import signing
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts import selectors, services
from accounts.models import (
    Account,
    AlertDelivery,
    Event,
    OAuthState,
    OwnerLink,
    PendingToken,
    Token,
)
from accounts.services import OwnerLinkRefused
from accounts.timeutil import utc_text
from accounts.views.owner_links import DONE_MAX_AGE_SECONDS, DONE_SALT, FLOW_COOKIE
from tests.conftest import SECRETS, allow_at_fake, callback_path
from tests.fake_instagram import delay, status

REPO_ROOT = Path(__file__).resolve().parent.parent
SITE_URL = "https://registry.test.example"  # igregistry/settings_test.py


# --- helpers ------------------------------------------------------------------------------


def create_link(admin_client, account: Account, days: int | None = None) -> str:
    """Create a link on the account's admin page; return what the owner opens (path and
    query), checking that the page showed the whole link, once, on SITE_URL."""
    url = reverse("admin:accounts_account_owner_link", args=[account.pk])
    response = admin_client.post(url, {"days": days or 3})
    assert response.status_code == 200, response.content.decode()
    link_url = response.context["link_url"]
    assert link_url.startswith(f"{SITE_URL}/owner/authorize/?link=")
    page = response.content.decode()
    assert link_url in page and "shown only now" in page
    return link_url.removeprefix(SITE_URL)


def secret_of(path: str) -> str:
    return parse_qs(urlsplit(path).query)["link"][0]


def the_link(path: str) -> OwnerLink:
    return OwnerLink.objects.get(secret_hash=selectors.secret_hash(secret_of(path)))


def go_to_instagram(owner: Client, path: str) -> str:
    """Press "Continue to Instagram" as `owner`; return Instagram's authorize URL."""
    response = owner.post(path)
    assert response.status_code == 302, response.content.decode()
    return response["Location"]


def back_from_instagram(location: str) -> str:
    parts = urlsplit(location)
    assert parts.netloc == "testserver"
    return f"{parts.path}?{parts.query}"


def owner_flow(owner: Client, path: str, *, username: str = "shop_owner",
               decision: str = "allow") -> str:
    """The owner's whole trip: continue, allow (or cancel) at the fake; the callback path."""
    return back_from_instagram(allow_at_fake(go_to_instagram(owner, path), username=username,
                                             decision=decision))


def rows() -> tuple:
    """What an owner's request must not change when it is refused."""
    return (
        list(OwnerLink.objects.order_by("pk").values()),
        list(OAuthState.objects.order_by("pk").values()),
        list(Token.objects.order_by("pk").values_list("pk", "expires_at")),
        PendingToken.objects.count(),
    )


@pytest.fixture
def alert_mail(settings):
    settings.ALERT_EMAILS = ["ops@example.com"]
    settings.ALERT_WEBHOOK_URL = ""


@pytest.fixture
def owner() -> Client:
    """The owner's browser: nobody signed in, its own cookies."""
    return Client()


# --- the whole flow -----------------------------------------------------------------------


def test_owner_authorizes_through_the_link(admin_client, admin_user, owner, account, fake,
                                           token_dir, alert_mail):
    path = create_link(admin_client, account)
    link = the_link(path)
    secret = secret_of(path)

    page = owner.get(path)
    assert page.status_code == 200
    text = page.content.decode()
    assert account.label in text and account.app.name in text and "igregistry" in text
    assert "Continue to Instagram" in text
    assert secret not in text and "/admin/" not in text
    assert SECRETS[account.app.flavour][1] not in text
    assert page["X-Robots-Tag"].startswith("noindex")
    # Same origin only: the POST's Origin must be real for the CSRF check (test_browser_*).
    assert page["Referrer-Policy"] == "same-origin"
    assert "no-cache" in page["Cache-Control"] or "max-age=0" in page["Cache-Control"]
    assert not OAuthState.objects.exists()  # a GET (a mail scanner) starts nothing

    response = owner.post(path)
    assert response.status_code == 302
    assert response["Referrer-Policy"] == "no-referrer"  # Instagram gets no Referer
    authorize_url = response["Location"]
    assert authorize_url.startswith(fake.url + "/oauth/authorize?")
    state_row = OAuthState.objects.get()
    assert state_row.owner_link_id == link.pk and state_row.user_id is None
    assert "state" in parse_qs(urlsplit(authorize_url).query)
    assert FLOW_COOKIE in owner.cookies

    response = owner.get(back_from_instagram(allow_at_fake(authorize_url)))
    assert response.status_code == 302
    assert response["Location"].startswith("/owner/authorized/")
    done = owner.get(response["Location"])
    assert done.status_code == 200
    text = done.content.decode()
    assert "Thank you" in text and account.label in text and "@shop_owner" in text
    assert "/admin/" not in text
    assert done["Referrer-Policy"] == "no-referrer"

    account.refresh_from_db()
    token = Token.objects.get(account=account)
    assert account.status == Account.Status.ACTIVE and account.username == "shop_owner"
    assert token.kind == Token.Kind.LONG and fake.token_info(token.value)["kind"] == "long"
    assert (token_dir / "shop_owner").read_text() == token.value
    assert token.value not in text
    link.refresh_from_db()
    assert link.used_at is not None and link.revoked_at is None

    events = {e.action: e for e in Event.objects.filter(account=account)}
    assert events["owner_link_create"].actor_user == admin_user
    job = f"owner link #{link.pk} from {admin_user.get_username()}"
    for action in ("authorize_start", "authorize", "owner_link_use"):
        assert events[action].actor_job == job, action
        assert events[action].actor_user is None
    assert events["authorize"].outcome == "ok"
    # Staff are told, by the alert channels, that the owner did it.
    [mail] = AlertDelivery.objects.filter(channel="email")
    assert "owner authorized @shop_owner" in mail.subject
    assert account.label in mail.body and "For your information" in mail.body
    assert f"/admin/accounts/account/{account.pk}/change/" in mail.body
    assert token.value not in mail.body and secret not in mail.body


def test_a_link_is_spent_once(admin_client, owner, login_account, fake):
    path = create_link(admin_client, login_account)
    callback = owner_flow(owner, path)
    assert owner.get(callback).status_code == 302
    before, calls = rows(), len(fake.calls())

    for browser in (owner, Client()):
        page = browser.get(path)
        assert page.status_code == 410
        assert "already used" in page.content.decode()
        again = browser.post(path)
        assert again.status_code == 410
    # The callback replayed: the state is spent.
    replay = owner.get(callback)
    assert replay.status_code == 410 and "already used" in replay.content.decode()
    assert rows() == before and len(fake.calls()) == calls


def test_two_tabs_one_link_only_one_token(admin_client, owner, login_account, fake):
    """Two tabs pressed Continue (two states); the second to come back finds the link used."""
    path = create_link(admin_client, login_account)
    first = owner_flow(owner, path)
    second = owner_flow(owner, path)
    assert owner.get(first).status_code == 302
    token = Token.objects.get(account=login_account).value
    response = owner.get(second)
    assert response.status_code == 410
    assert "already used" in response.content.decode()
    assert Token.objects.get(account=login_account).value == token
    assert len(fake.calls("/oauth/access_token")) == 1
    assert Event.objects.filter(account=login_account, action="owner_link_refused").exists()


# --- refused links: a clear page, nothing changes ------------------------------------------


def test_an_expired_link_is_refused(admin_user, owner, login_account, fake, settings):
    long_ago = timezone.now() - timedelta(days=5)
    link, secret = services.owner_link_create(account=login_account, user=admin_user,
                                              now=long_ago, lifetime=timedelta(days=2))
    admin_user.first_name, admin_user.last_name = "Ada", "Ops"
    admin_user.save()
    path = f"/owner/authorize/?link={secret}"
    before = rows()
    page = owner.get(path)
    assert page.status_code == 410
    text = page.content.decode()
    assert f"expired on {utc_text(link.expires_at)}" in text
    assert "Ask Ada Ops for a new one" in text
    assert admin_user.get_username() not in text  # never the login name
    assert owner.post(path).status_code == 410
    assert rows() == before and fake.calls() == []
    refused = Event.objects.get(account=login_account, action="owner_link_refused")
    assert "expired" in refused.message


def test_a_revoked_link_is_refused(admin_client, owner, login_account, fake):
    path = create_link(admin_client, login_account)
    link = the_link(path)
    response = admin_client.post(reverse("admin:accounts_ownerlink_changelist"),
                                 {"action": "revoke_action", "_selected_action": [link.pk]},
                                 follow=True)
    assert "Revoked 1 link" in response.content.decode()
    link.refresh_from_db()
    assert link.revoked_at is not None and link.revoked_by is not None
    before = rows()
    page = owner.get(path)
    assert page.status_code == 410 and "revoked" in page.content.decode()
    assert owner.post(path).status_code == 410
    assert rows() == before and fake.calls() == []
    assert Event.objects.filter(account=login_account, action="owner_link_revoke").exists()


def test_revoked_while_the_owner_is_at_instagram(admin_client, admin_user, owner, login_account,
                                                 fake):
    path = create_link(admin_client, login_account)
    callback = owner_flow(owner, path)
    assert services.owner_link_revoke(link=the_link(path), user=admin_user, now=timezone.now())
    response = owner.get(callback)
    assert response.status_code == 410 and "revoked" in response.content.decode()
    assert not Token.objects.exists() and fake.calls("/oauth/access_token") == []
    # Revoking twice, or a used link, changes nothing.
    assert not services.owner_link_revoke(link=the_link(path), user=admin_user,
                                          now=timezone.now())


@pytest.mark.parametrize("mangle", [
    lambda path: path[:-1] + ("A" if path[-1] != "A" else "B"),  # tampered
    lambda path: "/owner/authorize/?link=made-up-link-value",
    lambda path: "/owner/authorize/",
    lambda path: "/owner/authorize/?link=" + "x" * 5000,
])
def test_an_unknown_link_is_refused(admin_client, owner, login_account, fake, mangle):
    path = create_link(admin_client, login_account)
    before, events = rows(), Event.objects.count()
    page = owner.get(mangle(path))
    assert page.status_code == 404
    assert "not valid" in page.content.decode()
    assert owner.post(mangle(path)).status_code == 404
    assert rows() == before and Event.objects.count() == events and fake.calls() == []


def test_the_thank_you_page_needs_its_signed_address(owner, login_account):
    def page(done: str) -> int:
        return owner.get(reverse("owner-authorized", args=[done])).status_code

    signed_at = timezone.now()
    with time_machine.travel(signed_at, tick=False):
        done = signing.dumps(login_account.pk, salt=DONE_SALT, compress=True)
        assert page(done) == 200  # the address the callback redirects to
        assert page(str(login_account.pk)) == 404  # unsigned
        assert page(signing.dumps(login_account.pk, salt="another.salt", compress=True)) == 404
        assert page("forged-value") == 404
    with time_machine.travel(signed_at + timedelta(seconds=DONE_MAX_AGE_SECONDS - 60),
                             tick=False):
        assert page(done) == 200
    with time_machine.travel(signed_at + timedelta(seconds=DONE_MAX_AGE_SECONDS + 60),
                             tick=False):
        assert page(done) == 404  # too old


# --- the browser binding ------------------------------------------------------------------


def test_a_redirect_replayed_in_another_browser_is_refused(admin_client, owner, login_account,
                                                           fake):
    path = create_link(admin_client, login_account)
    callback = owner_flow(owner, path)
    stranger = Client()
    stranger.get(path)  # even one that opened the link page, without pressing Continue
    response = stranger.get(callback)
    assert response.status_code == 400
    assert "different browser" in response.content.decode()
    assert not Token.objects.exists() and fake.calls("/oauth/access_token") == []
    assert OAuthState.objects.get().used_at is None
    # A cookie forged by hand is no better than none.
    stranger.cookies[FLOW_COOKIE] = OAuthState.objects.get().state_hash
    assert stranger.get(callback).status_code == 400
    # The browser that opened the link still completes it.
    assert owner.get(callback).status_code == 302
    assert Token.objects.filter(account=login_account).exists()


# RFC 6265, section 4.1.1: cookie-value = *cookie-octet (no quotes, comma, semicolon,
# backslash, space or control): what browsers and cookie jars keep verbatim.
COOKIE_OCTETS = re.compile(r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]+")


def test_the_binding_cookie_is_made_of_cookie_octets(admin_client, owner, login_account,
                                                     fake):
    path = create_link(admin_client, login_account)
    first = allow_at_fake(go_to_instagram(owner, path))
    second = owner.post(path)  # a second tab: the cookie now binds two states
    assert second.status_code == 302
    cookie = second.cookies[FLOW_COOKIE]
    assert COOKIE_OCTETS.fullmatch(cookie.coded_value), cookie.coded_value
    # Sent as it is, unquoted: what the browser stores is what the registry signed.
    assert cookie.coded_value == cookie.value
    assert cookie.OutputString().startswith(f"{FLOW_COOKIE}={cookie.value};")
    # A browser sends back the very octets it got, and the first tab completes.
    browser = Client(HTTP_COOKIE=f"{FLOW_COOKIE}={cookie.coded_value}")
    assert browser.get(back_from_instagram(first)).status_code == 302
    assert Token.objects.filter(account=login_account).exists()


def test_a_tampered_binding_cookie_binds_nothing(admin_client, owner, login_account, fake):
    path = create_link(admin_client, login_account)
    callback = owner_flow(owner, path)
    value = owner.cookies[FLOW_COOKIE].value
    other_hash = "0" * 64
    forged = value.replace(value.split(".")[0], other_hash, 1)
    assert forged != value
    tampered = Client(HTTP_COOKIE=f"{FLOW_COOKIE}={forged}")
    assert tampered.get(callback).status_code == 400
    assert not Token.objects.exists()
    assert owner.get(callback).status_code == 302


def test_a_staff_session_cannot_complete_an_owners_state(admin_client, owner, login_account,
                                                         fake):
    path = create_link(admin_client, login_account)
    callback = owner_flow(owner, path)
    assert admin_client.get(callback).status_code == 400
    login_account.app.redirect_uri = "https://www.mywebsite.com/"
    login_account.app.save()
    pasted = admin_client.post(reverse("admin:accounts_account_paste", args=[login_account.pk]),
                               {"redirected_url": f"http://testserver{callback}"})
    assert pasted.status_code == 400
    assert "owner link" in pasted.content.decode()
    assert not Token.objects.exists()


# --- denial and failure: a public page, the link stays usable ------------------------------


def test_a_denial_leaves_the_link_usable(admin_client, owner, login_account, fake, token_dir):
    path = create_link(admin_client, login_account)
    response = owner.get(owner_flow(owner, path, decision="cancel"))
    assert response.status_code == 400
    text = response.content.decode()
    assert "did not allow" in text and "/admin/" not in text
    assert response["Referrer-Policy"] == "no-referrer"
    assert not Token.objects.exists() and fake.calls("/oauth/access_token") == []
    assert the_link(path).used_at is None
    denied = Event.objects.get(account=login_account, action="authorize", outcome="denied")
    assert denied.actor_job.startswith("owner link #")

    denial = owner_flow(owner, path, decision="cancel")
    owner.get(denial)
    replay = owner.get(denial)  # the same return again: handled, the link still open
    assert replay.status_code == 400 and "already handled" in replay.content.decode()
    assert owner.get(path).status_code == 200
    assert owner.get(owner_flow(owner, path)).status_code == 302
    assert Token.objects.filter(account=login_account).exists()


def test_a_refused_code_leaves_the_link_usable(admin_client, owner, login_account, fake):
    fake.inject("/oauth/access_token", status(400, '{"error_type": "OAuthException", '
                                                   '"code": 400, "error_message": '
                                                   '"Invalid platform app"}'))
    path = create_link(admin_client, login_account)
    response = owner.get(owner_flow(owner, path))
    assert response.status_code == 400
    text = response.content.decode()
    assert "did not complete" in text and "Invalid platform app" not in text
    assert not Token.objects.exists() and the_link(path).used_at is None
    failed = Event.objects.get(account=login_account, action="authorize", outcome="failed")
    assert "Invalid platform app" in failed.message  # staff see why
    assert owner.get(owner_flow(owner, path)).status_code == 302
    assert the_link(path).used_at is not None


def test_the_wrong_instagram_account_is_refused(admin_client, owner, login_account, fake):
    Account.objects.filter(pk=login_account.pk).update(ig_user_id="111", username="the_shop")
    path = create_link(admin_client, login_account)
    response = owner.get(owner_flow(owner, path, username="someone_else"))
    assert response.status_code == 400
    assert "@the_shop" in response.content.decode()  # sign in as the right one
    assert not Token.objects.exists() and the_link(path).used_at is None


# --- staff flows unchanged ----------------------------------------------------------------


def test_the_staff_flow_still_requires_a_login(admin_client, client, login_account, fake):
    path = callback_path(admin_client, login_account)
    assert client.get(path).status_code == 403  # anonymous: the staff state is not theirs
    assert not Token.objects.exists()
    assert admin_client.get(path).status_code == 302


# --- admin: who may do what ---------------------------------------------------------------


def member(django_user_model, username: str, group: str):  # noqa: ANN001
    user = django_user_model.objects.create_user(username, password="pw-owner-links-1",
                                                 is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return django_user_model.objects.get(pk=user.pk)


def test_viewers_list_links_but_cannot_create_or_revoke(client, admin_client, django_user_model,
                                                        login_account, fake):
    path = create_link(admin_client, login_account)
    link = the_link(path)
    client.force_login(member(django_user_model, "viewer", "viewers"))
    before, events = rows(), Event.objects.count()
    create = reverse("admin:accounts_account_owner_link", args=[login_account.pk])
    assert client.get(create).status_code == 403
    assert client.post(create, {"days": 3}).status_code == 403
    client.post(reverse("admin:accounts_ownerlink_changelist"),
                {"action": "revoke_action", "_selected_action": [link.pk]})
    assert rows() == before and Event.objects.count() == events

    listing = client.get(reverse("admin:accounts_ownerlink_changelist"))
    assert listing.status_code == 200
    text = listing.content.decode()
    assert login_account.label in text and "Open" in text
    assert "revoke_action" not in text
    assert link.secret_hash not in text and secret_of(path) not in text
    detail = client.get(reverse("admin:accounts_ownerlink_change", args=[link.pk]))
    assert detail.status_code == 200 and link.secret_hash not in detail.content.decode()
    account_page = client.get(reverse("admin:accounts_account_change", args=[login_account.pk]))
    assert "owner-link-button" not in account_page.content.decode()


def test_operators_create_and_revoke(client, django_user_model, login_account, fake):
    operator = member(django_user_model, "operator", "operators")
    client.force_login(operator)
    account_page = client.get(reverse("admin:accounts_account_change", args=[login_account.pk]))
    assert "owner-link-button" in account_page.content.decode()
    form = client.get(reverse("admin:accounts_account_owner_link", args=[login_account.pk]))
    assert form.status_code == 200 and 'value="3"' in form.content.decode()
    path = create_link(client, login_account, days=7)
    link = the_link(path)
    assert link.created_by == operator
    assert abs(link.expires_at - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)
    listing = client.get(reverse("admin:accounts_ownerlink_changelist"))
    text = listing.content.decode()
    assert "revoke_action" in text and link.secret_hash not in text
    client.post(reverse("admin:accounts_ownerlink_changelist"),
                {"action": "revoke_action", "_selected_action": [link.pk]})
    link.refresh_from_db()
    assert link.revoked_by == operator
    revoked = client.get(reverse("admin:accounts_ownerlink_changelist"), {"state": "revoked"})
    assert login_account.label in revoked.content.decode()
    assert login_account.label not in client.get(
        reverse("admin:accounts_ownerlink_changelist"), {"state": "open"}).content.decode()


@pytest.mark.parametrize("days", ["0", "31", "many"])
def test_the_lifetime_is_one_to_thirty_days(admin_client, login_account, days):
    url = reverse("admin:accounts_account_owner_link", args=[login_account.pk])
    assert admin_client.post(url, {"days": days}).status_code == 400
    assert not OwnerLink.objects.exists()


def test_the_default_lifetime_is_the_setting(admin_user, login_account, settings):
    settings.OWNER_LINK_TTL_DAYS = 5
    now = timezone.now()
    link, secret = services.owner_link_create(account=login_account, user=admin_user, now=now)
    assert link.expires_at == now + timedelta(days=5)
    assert len(secret) >= 40 and secret not in link.secret_hash
    with pytest.raises(ValueError):
        services.owner_link_create(account=login_account, user=admin_user, now=now,
                                   lifetime=timedelta(days=31))


@pytest.mark.parametrize(("value", "ok"), [("0", False), ("31", False), ("30", True)])
def test_the_setting_is_checked_at_start_up(tmp_path, value, ok):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env |= {"OWNER_LINK_TTL_DAYS": value, "VAR_DIR": str(tmp_path)}
    code = ("import os, django; os.environ['DJANGO_SETTINGS_MODULE'] = "
            "'igregistry.settings_test'; django.setup(); from django.conf import settings; "
            "print(settings.OWNER_LINK_TTL_DAYS)")
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    if ok:
        assert result.returncode == 0 and result.stdout.strip() == value
    else:
        assert "OWNER_LINK_TTL_DAYS must be between 1 and 30" in result.stderr


def test_no_link_secret_in_logs_or_events(admin_client, owner, login_account, fake, caplog):
    caplog.set_level(logging.DEBUG)
    path = create_link(admin_client, login_account)
    secret = secret_of(path)
    owner.get(owner_flow(owner, path), follow=True)
    owner.get(path)
    assert secret not in caplog.text
    for message in Event.objects.values_list("message", flat=True):
        assert secret not in message
    from accounts.instagram import redact_secrets

    assert secret not in redact_secrets(f'"GET {path} HTTP/1.1" 200')


# --- two browsers at once (PostgreSQL: the link row's lock) ---------------------------------


def test_two_callbacks_racing_spend_the_link_once(postgres, transactional_db, admin_user, fake,
                                                  login_app):
    account = Account.objects.create(app=login_app, label="Race")
    link, secret = services.owner_link_create(account=account, user=admin_user,
                                              now=timezone.now())
    trips = []
    for _ in range(2):
        start = services.owner_link_start(secret=secret, now=timezone.now())
        query = parse_qs(urlsplit(allow_at_fake(start.authorize_url)).query)
        trips.append(({k: v[0] for k, v in query.items()}, [start.state_hash]))
    # The exchange is slow: both requests are inside the completion at the same time.
    fake.inject("/oauth/access_token", delay(0.5), delay(0.5))

    barrier, results, errors = threading.Barrier(2), [None, None], []

    def complete(index: int) -> None:
        params, bound = trips[index]
        try:
            barrier.wait(timeout=10)
            results[index] = services.owner_link_callback(params=params,
                                                          bound_state_hashes=bound,
                                                          now=timezone.now())
        except OwnerLinkRefused as exc:
            results[index] = exc.reason
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=complete, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert sorted(isinstance(r, Account) for r in results) == [False, True]
    assert "used" in results
    assert len(fake.calls("/oauth/access_token")) == 1
    link.refresh_from_db()
    assert link.used_at is not None
    assert Event.objects.filter(account=account, action="owner_link_use").count() == 1
    assert Event.objects.filter(account=account, action="authorize", outcome="ok").count() == 1


def test_only_a_post_with_the_csrf_token_starts(admin_client, login_account, fake):
    path = create_link(admin_client, login_account)
    browser = Client(enforce_csrf_checks=True)
    assert browser.post(path).status_code == 403  # no token: a cross-site form
    assert not OAuthState.objects.exists()
    page = browser.get(path)
    token = page.context["csrf_token"]
    response = browser.post(path, {"csrfmiddlewaretoken": str(token)})
    assert response.status_code == 302 and response["Location"].startswith(fake.url)
    assert OAuthState.objects.count() == 1


def test_the_admin_warns_when_the_owner_could_not_come_back(admin_client, login_account,
                                                             settings):
    url = reverse("admin:accounts_account_owner_link", args=[login_account.pk])
    assert "redirect-warning" in admin_client.get(url).content.decode()  # testserver
    settings.SITE_URL = "http://testserver"
    assert "redirect-warning" not in admin_client.get(url).content.decode()
