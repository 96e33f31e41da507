"""Importing a token obtained by hand: admin form and `manage.py import_token`."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from accounts.models import Account, Event, Token
from tests.conftest import SECRETS
from tests.fake_instagram import status

CLIENT_ID = SECRETS["instagram_login"][0]


def import_url(account: Account) -> str:
    return reverse("admin:accounts_account_import", args=[account.pk])


def test_long_lived_token_without_expiry_is_refreshed_to_learn_it(
    admin_client, login_account, fake, token_dir
):
    manual = fake.mint_token(client_id=CLIENT_ID, username="shop_owner", kind="long",
                             age=timedelta(days=50))
    response = admin_client.post(import_url(login_account),
                                 {"access_token": f" {manual} ", "kind": "long"})
    assert response.status_code == 302
    token = Token.objects.get(account=login_account)
    # 50 days old means 10 days left; the refresh bought a fresh 60.
    assert abs(token.expires_at - (timezone.now() + timedelta(days=60))) < timedelta(minutes=2)
    assert len(fake.calls("/refresh_access_token")) == 1
    assert (token_dir / "shop_owner").read_text() == token.value
    login_account.refresh_from_db()
    assert login_account.status == Account.Status.ACTIVE
    assert Event.objects.filter(account=login_account, action="import", outcome="ok").exists()


def test_young_long_lived_token_gets_a_conservative_expiry(admin_client, login_account, fake):
    manual = fake.mint_token(client_id=CLIENT_ID, username="shop_owner", kind="long",
                             age=timedelta(hours=2))
    response = admin_client.post(import_url(login_account),
                                 {"access_token": manual, "kind": "long"})
    assert response.status_code == 302
    token = Token.objects.get(account=login_account)
    assert token.value == manual
    expected = timezone.now() + timedelta(days=59)
    assert abs(token.expires_at - expected) < timedelta(minutes=2)


def test_given_expiry_is_kept_without_a_refresh(admin_client, login_account, fake):
    manual = fake.mint_token(client_id=CLIENT_ID, username="shop_owner", kind="long",
                             age=timedelta(days=50))
    expires = (timezone.now() + timedelta(days=10)).replace(microsecond=0, second=0)
    response = admin_client.post(import_url(login_account), {
        "access_token": manual, "kind": "long",
        "expires_at": expires.strftime("%Y-%m-%d %H:%M"),
    })
    assert response.status_code == 302
    token = Token.objects.get(account=login_account)
    assert token.value == manual
    assert token.expires_at == expires
    assert fake.calls("/refresh_access_token") == []


def test_short_lived_token_is_swapped(admin_client, login_account, fake, token_dir):
    short = fake.mint_token(client_id=CLIENT_ID, username="shop_owner", kind="short")
    response = admin_client.post(import_url(login_account),
                                 {"access_token": short, "kind": "short"})
    assert response.status_code == 302
    token = Token.objects.get(account=login_account)
    assert token.value != short
    assert fake.token_info(token.value)["kind"] == "long"
    assert (token_dir / "shop_owner").read_text() == token.value


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"access_token": "garbage-token-never-issued", "kind": "long"},
         "Instagram did not accept"),
        ({"access_token": "garbage", "kind": "long"}, "not an access token"),
        ({"access_token": "two words", "kind": "long"}, "without spaces"),
        ({"access_token": "", "kind": "long"}, "This field is required"),
        ({"access_token": "x", "kind": "forever"}, "Select a valid choice"),
        ({"access_token": "x", "kind": "long", "expires_at": "next tuesday"},
         "Enter a valid date/time"),
        ({"access_token": "IGAAwellformedtoken00000", "kind": "long",
          "expires_at": "2001-01-01 00:00"}, "in the past"),
        # Believed, it would never be due: the feed would die while the account looked fine.
        ({"access_token": "IGAAwellformedtoken00000", "kind": "long",
          "expires_at": "2999-01-01 00:00"}, "more than 60 days away"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(admin_client, login_account, fake, token_dir,
                                                  form, message):
    response = admin_client.post(import_url(login_account), form)
    assert response.status_code in (200, 400)
    assert message in response.content.decode()
    assert not Token.objects.filter(account=login_account).exists()
    assert not token_dir.exists() or not any(token_dir.iterdir())


def test_revoked_token_is_refused(admin_client, login_account, fake):
    manual = fake.mint_token(client_id=CLIENT_ID, username="shop_owner", kind="long",
                             age=timedelta(days=5))
    fake.revoke_user("shop_owner", subcode=460)
    response = admin_client.post(import_url(login_account),
                                 {"access_token": manual, "kind": "long"})
    assert response.status_code == 400
    assert not Token.objects.filter(account=login_account).exists()


def test_instagram_down_refuses_instead_of_guessing(admin_client, login_account, fake):
    manual = fake.mint_token(client_id=CLIENT_ID, username="shop_owner", kind="long",
                             age=timedelta(days=50))
    fake.inject("/refresh_access_token", status(503))
    response = admin_client.post(import_url(login_account),
                                 {"access_token": manual, "kind": "long"})
    assert response.status_code == 400
    assert not Token.objects.filter(account=login_account).exists()


def test_command_reads_the_token_from_stdin(login_account, fake, monkeypatch, token_dir):
    manual = fake.mint_token(client_id=CLIENT_ID, username="shop_owner", kind="long",
                             age=timedelta(days=50))
    monkeypatch.setattr("sys.stdin", io.StringIO(manual + "\n"))
    out = io.StringIO()
    expires = (timezone.now() + timedelta(days=10)).replace(microsecond=0)
    call_command("import_token", "--account", "Shop feed", "--expires-at",
                 expires.strftime("%Y-%m-%dT%H:%M:%SZ"), stdout=out)
    assert "imported as @shop_owner" in out.getvalue()
    assert manual not in out.getvalue()
    token = Token.objects.get(account=login_account)
    assert token.value == manual
    assert token.expires_at == expires
    event = Event.objects.get(account=login_account, action="import")
    assert event.actor_job == "command:import_token"


def test_command_errors_are_clear(login_account, fake, monkeypatch, tmp_path):
    monkeypatch.setattr("sys.stdin", io.StringIO("garbage-token-never-issued\n"))
    with pytest.raises(CommandError, match="Instagram did not accept"):
        call_command("import_token", "--account", str(login_account.pk))
    with pytest.raises(CommandError, match="No single account"):
        call_command("import_token", "--account", "nobody")
    with pytest.raises(CommandError, match="not an ISO 8601"):
        call_command("import_token", "--account", str(login_account.pk), "--expires-at", "soon")
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_token", "--account", str(login_account.pk),
                     "--token-file", str(tmp_path / "missing"))
    token = fake.mint_token(client_id=CLIENT_ID, username="shop_owner", age=timedelta(days=50))
    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
    asked = len(fake.calls("/me"))
    with pytest.raises(CommandError, match="more than 60 days away"):
        call_command("import_token", "--account", str(login_account.pk), "--expires-at",
                     "2999-01-01T00:00:00Z")
    assert not Token.objects.exists() and len(fake.calls("/me")) == asked
