"""Both Instagram ids (issue 11, item 4): /me's `id` and `user_id` and the code exchange's
`user_id`, each in its own field, and "same Instagram account" decided by any id both
sides know, across both /me shapes (flat, `data` envelope) and both flavours.

Through the admin's Authorize action, the callback and verify against the fake Instagram
(real HTTP), and the migration that moved the old single id to its field."""

from __future__ import annotations

import html

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from accounts import services
from accounts.identity import InstagramIds, same_account
from accounts.models import Account, Event, Token
from accounts.services import Actor, FlowError
from tests.conftest import callback_path

ID, USER_ID = "90071992547409931", "17841405793187219"  # both above 2**53
VERIFIER = Actor(job="test")


# --- the rule -----------------------------------------------------------------------------


@pytest.mark.parametrize(("stored", "answered", "same"), [
    # One shared id decides, whatever each side calls it.
    (InstagramIds(id=ID), InstagramIds(id=ID, user_id=USER_ID), True),
    (InstagramIds(id=ID, user_id=USER_ID), InstagramIds(user_id=USER_ID), True),
    (InstagramIds(id=USER_ID), InstagramIds(id=ID, user_id=USER_ID), True),  # filed wrong
    (InstagramIds(exchange_user_id=USER_ID), InstagramIds(user_id=USER_ID), True),
    # Ids on both sides and none shared: another account.
    (InstagramIds(id=ID), InstagramIds(id="1"), False),
    (InstagramIds(id=ID, user_id=USER_ID), InstagramIds(user_id="2"), False),
    # Nothing to compare: a first authorization.
    (InstagramIds(), InstagramIds(id=ID), None),
    (InstagramIds(id=ID), InstagramIds(), None),
])
def test_same_account_by_any_id_both_sides_know(stored, answered, same):
    assert same_account(stored, answered) is same


def test_an_answer_never_erases_an_id_it_did_not_carry():
    stored = InstagramIds(id=ID, user_id=USER_ID, exchange_user_id="5")
    assert InstagramIds(user_id=USER_ID).merged_into(stored) == stored
    assert InstagramIds(id="7").merged_into(stored) == InstagramIds(
        id="7", user_id=USER_ID, exchange_user_id="5")


# --- through the flow ---------------------------------------------------------------------


def authorize(admin_client, account: Account, username: str = "shop_owner") -> int:
    return admin_client.get(callback_path(admin_client, account, username)).status_code


def ids(account: Account) -> tuple[str, str, str]:
    account.refresh_from_db()
    return account.ig_id, account.ig_user_id, account.ig_exchange_user_id


def test_instagram_login_stores_each_id_in_its_field(admin_client, login_account, fake):
    fake.add_user("shop_owner", id=ID, user_id=USER_ID)
    assert authorize(admin_client, login_account) == 302
    # The fake's exchange answers the professional account's id, as the shape Meta's docs
    # show; /me answers both.
    assert ids(login_account) == (ID, USER_ID, USER_ID)
    assert fake.calls("/me")[-1].query["fields"] == "id,user_id,username"


def test_basic_display_has_one_id_and_never_asks_for_user_id(admin_client, fake):
    from tests.conftest import make_app

    account = Account.objects.create(app=make_app(fake, "basic_display"), label="Legacy")
    fake.add_user("shop_owner", id=ID, user_id=USER_ID)
    assert authorize(admin_client, account) == 302
    assert ids(account) == (ID, "", ID)
    # Basic Display's /me has no user_id: asking for it would be an error (#100).
    assert fake.calls("/me")[-1].query["fields"] == "id,username"


@pytest.mark.parametrize("flavour", ["instagram_login", "basic_display"])
@pytest.mark.parametrize(("first", "then"), [("flat", "data"), ("data", "flat")])
def test_a_change_of_me_shape_is_still_the_same_account(admin_client, fake, flavour, first,
                                                         then):
    from tests.conftest import make_app

    account = Account.objects.create(app=make_app(fake, flavour), label="Shop feed")
    fake.add_user("shop_owner", id=ID, user_id=USER_ID)
    fake.me_shape = first
    assert authorize(admin_client, account) == 302
    fake.me_shape = then
    # Verify and a second authorization both ask /me in the other shape.
    profile = services.account_verify(account=account, actor=VERIFIER, now=timezone.now())
    assert profile.username == "shop_owner"
    assert authorize(admin_client, account) == 302
    assert not Event.objects.filter(account=account, outcome="failed").exists()
    # What each shape taught is kept, each id under its own name.
    # Basic Display's data envelope calls its one id `user_id`.
    expected_user_id = USER_ID if flavour == "instagram_login" else ID
    assert ids(account)[:2] == (ID, expected_user_id)


@pytest.mark.parametrize("flavour", ["instagram_login", "basic_display"])
@pytest.mark.parametrize("shape", ["flat", "data"])
def test_another_instagram_account_is_refused_in_either_shape(admin_client, fake, flavour,
                                                              shape, token_dir):
    from tests.conftest import make_app

    account = Account.objects.create(app=make_app(fake, flavour), label="Shop feed")
    fake.add_user("shop_owner", id=ID, user_id=USER_ID)
    fake.add_user("someone_else")
    assert authorize(admin_client, account) == 302
    token = Token.objects.get(account=account).value
    before = ids(account)
    fake.me_shape = shape
    response = admin_client.get(callback_path(admin_client, account, "someone_else"))
    assert response.status_code == 400
    assert "wrong Instagram account" in response.content.decode()
    assert ids(account) == before
    assert Token.objects.get(account=account).value == token
    assert (token_dir / "shop_owner").read_text() == token


def test_an_id_filed_under_the_other_name_still_matches_and_is_put_right(fake, login_app):
    """A row from before the fields: /me answered in the data envelope, so the single id
    column held user_id, which the migration moved to ig_id."""
    from tests.conftest import active_account

    account = active_account(fake, login_app, "Shop feed")
    user = fake._state.users[account.username]
    Account.objects.filter(pk=account.pk).update(ig_id=user.user_id, ig_user_id="")
    account.refresh_from_db()
    services.account_verify(account=account, actor=VERIFIER, now=timezone.now())
    assert ids(account)[:2] == (user.id, user.user_id)


def test_a_second_account_sharing_only_user_id_is_refused(admin_client, fake, login_app):
    first = Account.objects.create(app=login_app, label="First")
    second = Account.objects.create(app=login_app, label="Second")
    fake.add_user("shop_owner", id=ID, user_id=USER_ID)
    fake.me_shape = "data"  # user_id only
    assert authorize(admin_client, first) == 302
    fake.me_shape = "flat"
    response = admin_client.get(callback_path(admin_client, second))
    assert response.status_code == 400
    assert "already registered as account 'First'" in html.unescape(response.content.decode())
    assert ids(second) == ("", "", "")


def test_verify_refuses_a_token_of_an_account_registered_twice(fake, login_app):
    """Verify would write the other account's id into this one (a unique constraint):
    it refuses and says so instead."""
    from tests.conftest import active_account

    first = active_account(fake, login_app, "First")
    second = active_account(fake, login_app, "Second")
    Token.objects.filter(account=second).update(value=first.token.value)
    Account.objects.filter(pk=second.pk).update(ig_id="")
    second.refresh_from_db()
    with pytest.raises(FlowError, match="already registered as account 'First'"):
        services.account_verify(account=second, actor=VERIFIER, now=timezone.now())
    assert ids(second)[0] == ""


def test_token_file_json_names_both_ids(admin_client, login_account, fake, token_dir):
    import json

    Account.objects.filter(pk=login_account.pk).update(export_format="json")
    fake.add_user("shop_owner", id=ID, user_id=USER_ID)
    assert authorize(admin_client, login_account) == 302
    document = json.loads((token_dir / "shop_owner").read_text())
    assert (document["id"], document["user_id"]) == (ID, USER_ID)


def test_account_page_shows_each_id(admin_client, login_account, fake):
    from django.urls import reverse

    fake.add_user("shop_owner", id=ID, user_id=USER_ID)
    assert authorize(admin_client, login_account) == 302
    page = admin_client.get(
        reverse("admin:accounts_account_change", args=[login_account.pk])).content.decode()
    assert "Instagram id (/me id)" in page and ID in page
    assert "Instagram user_id (/me user_id)" in page and USER_ID in page
    found = admin_client.get(reverse("admin:accounts_account_changelist"), {"q": USER_ID})
    assert "Shop feed" in found.content.decode()


# --- the migration ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_migration_moves_the_old_single_id_to_ig_id():
    executor = MigrationExecutor(connection)
    before, after = [("accounts", "0007_token_refresh_claim")], [
        ("accounts", "0008_instagram_ids_meta_callbacks_owner_links")]
    try:
        executor.migrate(before)
        apps = executor.loader.project_state(before).apps
        App, OldAccount = apps.get_model("accounts", "InstagramApp"), apps.get_model(
            "accounts", "Account")
        app = App.objects.create(name="Old app", flavour="instagram_login", app_id="1",
                                 app_secret="x" * 16, redirect_uri="https://example.com/cb/")
        OldAccount.objects.create(app=app, label="Old", ig_user_id=ID)
        OldAccount.objects.create(app=app, label="Never authorized")
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        rows = dict(Account.objects.values_list("label", "ig_id"))
        assert rows == {"Old": ID, "Never authorized": ""}
        assert set(Account.objects.values_list("ig_user_id", flat=True)) == {""}
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.parametrize("status", ["needs_reauth", "error"])
def test_a_verify_instagram_accepts_makes_a_flagged_account_active(fake, login_app, status):
    from tests.conftest import active_account

    account = active_account(fake, login_app, "Shop feed")
    Account.objects.filter(pk=account.pk).update(status=status, last_error="was flagged")
    account.refresh_from_db()
    services.account_verify(account=account, actor=VERIFIER, now=timezone.now())
    account.refresh_from_db()
    assert (account.status, account.last_error) == ("active", "")


def test_a_verify_leaves_a_held_token_flagged(fake, login_app):
    from tests.conftest import active_account

    account = active_account(fake, login_app, "Shop feed")
    Account.objects.filter(pk=account.pk).update(status="error")
    Token.objects.filter(account=account).update(refresh_held_since=timezone.now())
    account.refresh_from_db()
    services.account_verify(account=account, actor=VERIFIER, now=timezone.now())
    account.refresh_from_db()
    assert account.status == "error"
