"""A feed never dies unnoticed: each way a token file can stop serving the website shows
as the account's state (counted, filtered, in the metrics, alerted), a file name belongs
to one account, the rate-limit pause holds for every refresh, a token /me accepted is not
called dead, and every command that left a feed unserved exits non-zero.

Through the paths staff and jobs take: the admin, the OAuth callback, the commands and the
Celery tasks, against the fake Instagram over real HTTP.
"""

from __future__ import annotations

import io
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import constants as message_levels
from django.core import mail
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from accounts import selectors, services, tasks
from accounts.models import Account, Event, SweepState, Token, TokenFile
from accounts.selectors import FileState, State
from accounts.services import Actor, Outcome
from tests.conftest import SECRETS, active_account, allow_at_fake, make_app
from tests.fake_instagram import graph_error, rate_limited

LOGIN_ID = SECRETS["instagram_login"][0]
DASHBOARD = reverse("admin:accounts_account_dashboard")
ACTOR = Actor(job="test")
DAY = timedelta(days=1)


# --- helpers ----------------------------------------------------------------------------


def authorize(admin_client, account: Account, fake, username: str):
    """Authorize through the admin action, Instagram's dialog and the callback."""
    response = admin_client.post(reverse("admin:accounts_account_changelist"),
                                 {"action": "authorize_action", "_selected_action": [account.pk]})
    location = allow_at_fake(response["Location"], username=username)
    parts = urlsplit(location)
    return admin_client.get(f"{parts.path}?{parts.query}", follow=True)


def levels(response) -> dict[str, int]:  # noqa: ANN001
    return {str(m): m.level for m in response.context["messages"]}


def due_account(fake, app, label: str, **kwargs) -> Account:  # noqa: ANN001, ANN003
    return active_account(fake, app, label, **kwargs)


def reload(account: Account) -> Account:
    return Account.objects.select_related("token").get(pk=account.pk)


def state_of(account: Account) -> str:
    return selectors.accounts_with_state(now=timezone.now()).get(pk=account.pk).state


def metric(client, name: str, labels: str = "") -> float | None:  # noqa: ANN001
    text = client.get("/metrics").content.decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} ") or line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return None


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def alerts_by_mail(settings):
    settings.ALERT_EMAILS = ["ops@example.com"]
    settings.ALERT_WEBHOOK_URL = ""
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


@pytest.fixture
def basic_app(fake, db):
    return make_app(fake, "basic_display")


# --- 1. file health is part of the account's state ---------------------------------------


def test_migrating_to_instagram_login_cannot_write_the_same_file_and_says_so(
        admin_client, client, fake, basic_app, login_app, token_dir, alerts_by_mail):
    """The usual migration: the same Instagram user authorized under a Basic Display app
    and an Instagram Login app. The second account may not write the first one's file:
    a warning (never a success banner), a *file problem* state that is counted, filtered,
    in the metrics and alerted."""
    old = Account.objects.create(app=basic_app, label="Shop (Basic Display)")
    new = Account.objects.create(app=login_app, label="Shop (Instagram Login)")
    authorize(admin_client, old, fake, "shop_owner")
    old_token = reload(old).token.value
    assert (token_dir / "shop_owner").read_text() == old_token

    response = authorize(admin_client, new, fake, "shop_owner")

    new = reload(new)
    assert new.token.kind == "long"  # the token itself is kept
    assert (token_dir / "shop_owner").read_text() == old_token  # never overwritten
    assert new.file_state == FileState.NAME_TAKEN
    [(text, level)] = levels(response).items()
    assert level == message_levels.WARNING
    assert "belongs to account 'Shop (Basic Display)'" in text
    assert state_of(new) == State.FILE_PROBLEM
    dash = admin_client.get(DASHBOARD).context["dash"]
    assert dict((k, n) for k, _, n in dash.counts)[State.FILE_PROBLEM] == 1
    filtered = admin_client.get(DASHBOARD, {"state": State.FILE_PROBLEM}).context["dash"].rows
    assert [row.account.pk for row in filtered] == [new.pk]
    assert metric(client, "igregistry_accounts", 'state="file_problem"') == 1.0

    services.alerts_dispatch(now=timezone.now())
    [message] = mail.outbox
    assert "Shop (Instagram Login)" in message.body and "File problem" in message.body
    assert new.token.value not in message.body and old_token not in message.body


def test_take_over_is_permission_checked_logged_and_moves_the_problem(
        admin_client, client, fake, basic_app, login_app, token_dir, django_user_model):
    old = Account.objects.create(app=basic_app, label="Old")
    new = Account.objects.create(app=login_app, label="New")
    authorize(admin_client, old, fake, "shop_owner")
    authorize(admin_client, new, fake, "shop_owner")
    url = reverse("admin:accounts_account_take_over_file", args=[new.pk])

    # Staff who may change accounts but not take files over are refused.
    operator = django_user_model.objects.create_user("operator", password="pw-op-12345",
                                                     is_staff=True)
    operator.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_account", "change_account"]))
    client.force_login(operator)
    page = client.get(reverse("admin:accounts_account_change", args=[new.pk]))
    assert "take-over-button" not in page.content.decode()
    assert client.post(url).status_code == 403
    assert (token_dir / "shop_owner").read_text() == reload(old).token.value

    page = admin_client.get(reverse("admin:accounts_account_change", args=[new.pk]))
    assert "Take over file shop_owner" in page.content.decode()
    response = admin_client.post(url, follow=True)

    assert (token_dir / "shop_owner").read_text() == reload(new).token.value
    assert reload(new).file_state == FileState.IN_SYNC
    assert TokenFile.objects.get(name="shop_owner").account_id == new.pk
    assert reload(old).file_state == FileState.NAME_TAKEN
    assert state_of(old) == State.FILE_PROBLEM and state_of(new) == State.HEALTHY
    assert Event.objects.filter(account=new, action="file_take_over", actor_user__username="admin"
                                ).exists()
    assert Event.objects.filter(account=old, action="file_take_over").exists()
    assert any(level == message_levels.SUCCESS for level in levels(response).values())
    # The former owner's reconcile never writes the file back.
    report = services.token_files_reconcile(actor=ACTOR, now=timezone.now())
    assert report.failed == 1
    assert (token_dir / "shop_owner").read_text() == reload(new).token.value


@pytest.mark.parametrize("breakage", ["directory is a file", "group does not exist"])
def test_a_file_reconcile_cannot_repair_is_a_file_problem_until_it_can(
        fake, login_app, token_dir, settings, alerts_by_mail, breakage):
    account = due_account(fake, login_app, "Shop", age=5 * DAY)
    services.token_export(account=account, actor=ACTOR, now=timezone.now())
    assert state_of(account) == State.HEALTHY
    services.alerts_dispatch(now=timezone.now())
    assert mail.outbox == []

    (token_dir / "shop").unlink()
    if breakage == "directory is a file":
        settings.TOKEN_EXPORT_DIR = token_dir.parent / "not-a-directory"
        settings.TOKEN_EXPORT_DIR.write_text("")
    else:
        settings.TOKEN_FILE_GROUP = "no-such-group-igregistry"
    report = tasks.reconcile_token_files.apply().get()

    assert report["failed"] == 1
    assert reload(account).file_state == FileState.UNWRITABLE
    assert state_of(account) == State.FILE_PROBLEM
    services.alerts_dispatch(now=timezone.now())
    assert len(mail.outbox) == 1 and "File problem" in mail.outbox[0].body
    # Fixed: the next run writes the file and the alert resolves.
    settings.TOKEN_EXPORT_DIR, settings.TOKEN_FILE_GROUP = token_dir, ""
    tasks.reconcile_token_files.apply().get()
    assert (token_dir / "shop").read_text() == reload(account).token.value
    assert state_of(account) == State.HEALTHY
    services.alerts_dispatch(now=timezone.now())
    assert len(mail.outbox) == 2 and "Resolved" in mail.outbox[1].body


def test_a_missing_or_wrong_mode_file_is_noticed_and_repaired(fake, login_app, token_dir):
    account = due_account(fake, login_app, "Shop", age=5 * DAY)
    services.token_export(account=account, actor=ACTOR, now=timezone.now())
    path = token_dir / "shop"
    path.chmod(0o666)
    assert selectors.token_file_state(account=reload(account)) == FileState.WRONG_MODE
    path.unlink()
    assert selectors.token_file_state(account=reload(account)) == FileState.MISSING
    report = services.token_files_reconcile(actor=ACTOR, now=timezone.now())
    assert (report.rewritten, report.failed) == (1, 0)
    assert path.read_text() == reload(account).token.value
    assert reload(account).file_state == FileState.IN_SYNC


def test_import_that_cannot_write_the_file_warns_in_the_admin_and_fails_the_command(
        admin_client, fake, login_app, settings, token_dir, tmp_path):
    account = Account.objects.create(app=login_app, label="Shop")
    settings.TOKEN_FILE_GROUP = "no-such-group-igregistry"
    token = fake.mint_token(client_id=LOGIN_ID, username="shop", age=10 * DAY)
    response = admin_client.post(
        reverse("admin:accounts_account_import", args=[account.pk]),
        {"access_token": token, "kind": "long",
         "expires_at": (timezone.now() + 50 * DAY).strftime("%Y-%m-%d %H:%M")},
        follow=True)
    [(text, level)] = levels(response).items()
    assert level == message_levels.WARNING and "TOKEN_FILE_GROUP" in text

    other = Account.objects.create(app=login_app, label="Other")
    token_file = tmp_path / "token.txt"
    token_file.write_text(fake.mint_token(client_id=LOGIN_ID, username="other", age=10 * DAY))
    with pytest.raises(CommandError, match="file was not written"):
        run("import_token", "--account", "Other", "--token-file", str(token_file),
            "--expires-at", (timezone.now() + 50 * DAY).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert reload(other).token.kind == "long"  # stored all the same
    assert state_of(reload(other)) == State.FILE_PROBLEM


def test_refresh_tokens_exits_non_zero_when_a_refreshed_file_was_not_written(
        fake, login_app, settings, token_dir):
    due_account(fake, login_app, "Shop")
    settings.TOKEN_FILE_GROUP = "no-such-group-igregistry"
    with pytest.raises(CommandError, match="token file unwritten"):
        run("refresh_tokens")


# --- 2 and 8. a file name belongs to one account; usernames move ------------------------


def test_a_username_taken_over_by_another_account_never_redirects_a_file(
        admin_client, fake, login_app, token_dir):
    """V's website reads file `vname`. V's owner renames to `vnew`; M's owner takes the
    freed name `vname`. Verify and re-authorization of M must keep writing M's file."""
    v = Account.objects.create(app=login_app, label="V")
    m = Account.objects.create(app=login_app, label="M")
    authorize(admin_client, v, fake, "vname")
    authorize(admin_client, m, fake, "mname")
    v_token = reload(v).token.value
    fake.rename_user("vname", "vnew")
    fake.rename_user("mname", "vname")

    admin_client.post(reverse("admin:accounts_account_changelist"),
                      {"action": "verify_action", "_selected_action": [m.pk]})
    assert reload(m).username == "vname"
    authorize(admin_client, m, fake, "vname")
    services.token_files_reconcile(actor=ACTOR, now=timezone.now(), rewrite_all=True)

    assert (token_dir / "vname").read_text() == v_token
    assert (token_dir / "mname").read_text() == reload(m).token.value
    assert reload(m).file_state == FileState.IN_SYNC
    page = admin_client.get(reverse("admin:accounts_account_change", args=[m.pk]))
    assert "named after a former username" in page.content.decode()


def test_a_username_change_keeps_writing_the_file_the_website_reads(
        admin_client, fake, login_app, token_dir):
    account = Account.objects.create(app=login_app, label="Shop")
    authorize(admin_client, account, fake, "old_name")
    fake.rename_user("old_name", "new_name")
    admin_client.post(reverse("admin:accounts_account_changelist"),
                      {"action": "verify_action", "_selected_action": [account.pk]})
    account = reload(account)
    assert account.username == "new_name"
    # A refresh writes the new token to the same file, and nothing under the new name.
    Token.objects.filter(account=account).update(obtained_at=timezone.now() - 50 * DAY,
                                                 expires_at=timezone.now() + 10 * DAY)
    fake.advance(50 * 86400)
    try:
        result = services.token_refresh(account_id=account.pk, actor=ACTOR, now=timezone.now())
    finally:
        fake.advance(-50 * 86400)
    assert result.outcome == Outcome.REFRESHED
    assert (token_dir / "old_name").read_text() == reload(account).token.value
    assert not (token_dir / "new_name").exists()
    assert selectors.token_file_state(account=reload(account)) == FileState.IN_SYNC


def test_a_rename_by_staff_orphans_the_old_file_until_an_operator_removes_it(
        admin_client, client, fake, login_app, token_dir, django_user_model):
    account = Account.objects.create(app=login_app, label="Shop")
    authorize(admin_client, account, fake, "shop")
    change = reverse("admin:accounts_account_change", args=[account.pk])
    form = {"app": login_app.pk, "label": "Shop", "token_filename": "shop-feed",
            "export_enabled": "on", "export_format": "text"}
    assert admin_client.post(change, form).status_code == 302

    token = reload(account).token.value
    assert (token_dir / "shop-feed").read_text() == token
    assert (token_dir / "shop").read_text() == token  # left for the website still reading it
    orphan = TokenFile.objects.get(name="shop")
    assert orphan.status == TokenFile.Status.ORPHANED
    assert "orphaned file(s) left on disk: shop" in admin_client.get(change).content.decode()
    assert Event.objects.filter(account=account, action="file_orphaned").exists()

    files = reverse("admin:accounts_tokenfile_changelist")
    # Someone who may only view token files cannot remove them.
    viewer = django_user_model.objects.create_user("viewer", password="pw-view-12345",
                                                   is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_tokenfile"))
    client.force_login(viewer)
    client.post(files, {"action": "remove_action", "_selected_action": [orphan.pk]})
    assert (token_dir / "shop").exists()

    # An operator may; a current file is refused even when selected.
    current = TokenFile.objects.get(name="shop-feed")
    admin_client.post(files, {"action": "remove_action",
                              "_selected_action": [orphan.pk, current.pk]})
    assert not (token_dir / "shop").exists()
    assert (token_dir / "shop-feed").read_text() == token
    assert list(TokenFile.objects.values_list("name", flat=True)) == ["shop-feed"]
    assert Event.objects.filter(action="file_removed", actor_user__username="admin").exists()


def test_an_orphaned_name_is_not_claimed_by_another_account(fake, login_app, token_dir):
    first = due_account(fake, login_app, "First", username="shop", age=5 * DAY)
    services.token_export(account=first, actor=ACTOR, now=timezone.now())
    Account.objects.filter(pk=first.pk).update(token_filename="first")
    services.token_export(account=reload(first), actor=ACTOR, now=timezone.now())
    second = due_account(fake, login_app, "Second", username="shop", age=5 * DAY)

    assert services.token_export(account=second, actor=ACTOR, now=timezone.now()) is None
    assert "which left it" in reload(second).file_error
    assert (token_dir / "shop").read_text() == reload(first).token.value


# --- 3. dead token in a file -------------------------------------------------------------


@pytest.mark.parametrize("policy", ["keep", "empty"])
def test_dead_token_file_policy(admin_client, fake, login_app, token_dir, settings, policy):
    settings.TOKEN_FILE_DEAD_TOKEN = policy
    account = due_account(fake, login_app, "Shop")
    services.token_export(account=account, actor=ACTOR, now=timezone.now())
    dead = reload(account).token.value
    fake.revoke_user("shop")

    result = tasks.refresh_account.apply(args=(account.pk,)).get()

    assert result == Outcome.NEEDS_REAUTH
    assert (token_dir / "shop").read_text() == (dead if policy == "keep" else "")
    assert selectors.token_file_state(account=reload(account)) == FileState.IN_SYNC
    [row] = admin_client.get(DASHBOARD).context["dash"].rows
    assert row.next_refresh_at is None and row.action_needed == "Authorize again"
    assert row.file_label == ("holds the last, dead token" if policy == "keep"
                              else "emptied (dead token)")
    # Authorized again: the file holds the new token.
    authorize(admin_client, account, fake, "shop")
    assert (token_dir / "shop").read_text() == reload(account).token.value != dead


# --- 4. the rate-limit pause holds everywhere ------------------------------------------


def pause(minutes: int = 30) -> None:
    SweepState.objects.update_or_create(
        pk=1, defaults={"throttled_until": timezone.now() + timedelta(minutes=minutes)})


def test_a_queued_task_meeting_the_pause_defers_without_calling_or_failing(fake, login_app):
    account = due_account(fake, login_app, "Shop")
    pause()
    result = tasks.refresh_account.apply(args=(account.pk,)).get()
    assert result == Outcome.PAUSED
    assert fake.calls("/refresh_access_token") == []
    token = reload(account).token
    assert token.refresh_failures == 0
    assert token.next_attempt_at == SweepState.objects.get(pk=1).throttled_until
    assert not Event.objects.filter(account=account, outcome="failed").exists()
    assert state_of(account) != State.ERROR


def test_refresh_tokens_stops_calling_instagram_once_rate_limited_and_exits_non_zero(
        fake, login_app):
    first, second = due_account(fake, login_app, "A"), due_account(fake, login_app, "B")
    fake.inject("/refresh_access_token", rate_limited())
    with pytest.raises(CommandError, match="deferred by Instagram's rate-limit pause"):
        run("refresh_tokens")
    assert len(fake.calls("/refresh_access_token")) == 1
    assert {reload(first).token.refresh_failures, reload(second).token.refresh_failures} == {0, 1}


def test_refresh_tokens_during_a_pause_exits_non_zero_and_refreshes_nothing(fake, login_app):
    due_account(fake, login_app, "Shop")
    pause()
    with pytest.raises(CommandError, match="1 due refresh"):
        run("refresh_tokens")
    assert fake.calls("/refresh_access_token") == []


def test_the_admin_refresh_action_respects_the_pause(admin_client, fake, login_app):
    account = due_account(fake, login_app, "Shop")
    pause()
    response = admin_client.post(reverse("admin:accounts_account_changelist"),
                                 {"action": "refresh_action", "_selected_action": [account.pk]},
                                 follow=True)
    assert fake.calls("/refresh_access_token") == []
    assert any("slow down" in text for text in levels(response))
    SweepState.objects.filter(pk=1).update(throttled_until=None)
    admin_client.post(reverse("admin:accounts_account_changelist"),
                      {"action": "refresh_action", "_selected_action": [account.pk]})
    assert len(fake.calls("/refresh_access_token")) == 1
    assert reload(account).token.last_refreshed_at is not None


def test_a_usage_reading_ages_out(fake, login_app, settings):
    for label in ("A", "B"):
        due_account(fake, login_app, label)
    now = timezone.now()
    services.usage_record(usage=services.refresh.Usage(percent=90), now=now - timedelta(hours=2))
    assert services.refresh_sweep(actor=ACTOR, now=now).spacing_seconds == 0
    services.usage_record(usage=services.refresh.Usage(percent=90), now=now)
    assert services.refresh_sweep(actor=ACTOR, now=now).spacing_seconds > 0


# --- 5. a token /me has just accepted is alive -----------------------------------------


@pytest.mark.parametrize("refusal", [10, 100])
def test_import_of_a_young_token_is_not_called_dead(fake, login_app, tmp_path, refusal):
    account = Account.objects.create(app=login_app, label="Shop")
    token_file = tmp_path / "token.txt"
    token_file.write_text(fake.mint_token(client_id=LOGIN_ID, username="shop",
                                          age=timedelta(hours=2)))
    fake.inject("/refresh_access_token", graph_error(refusal, message="Cannot refresh yet"))
    out, _ = run("import_token", "--account", "Shop", "--token-file", str(token_file))
    token = reload(account).token
    assert reload(account).status == Account.Status.ACTIVE
    assert abs(token.expires_at - (timezone.now() + 59 * DAY)) < timedelta(minutes=1)
    assert abs(token.obtained_at - timezone.now()) < timedelta(minutes=1)
    assert "imported as @shop" in out


def test_import_of_a_token_instagram_calls_invalid_is_refused(fake, login_app, tmp_path):
    account = Account.objects.create(app=login_app, label="Shop")
    token_file = tmp_path / "token.txt"
    token_file.write_text(fake.mint_token(client_id=LOGIN_ID, username="shop", age=10 * DAY))
    fake.inject("/refresh_access_token", graph_error(190))
    with pytest.raises(CommandError, match="did not accept"):
        run("import_token", "--account", "Shop", "--token-file", str(token_file))
    assert not Token.objects.filter(account=account).exists()


# --- 6. next refresh only where the sweep will refresh ------------------------------------


def test_dashboard_shows_the_action_needed_instead_of_a_next_refresh(admin_client, fake,
                                                                     login_app):
    waiting = Account.objects.create(app=login_app, label="Waiting")
    reauth = due_account(fake, login_app, "Reauth", age=5 * DAY)
    Account.objects.filter(pk=reauth.pk).update(status=Account.Status.NEEDS_REAUTH)
    healthy = due_account(fake, login_app, "Healthy", age=5 * DAY)
    rows = {row.account.pk: row for row in admin_client.get(DASHBOARD).context["dash"].rows}
    assert rows[reauth.pk].next_refresh_at is None
    assert rows[reauth.pk].action_needed == "Authorize again"
    assert rows[waiting.pk].next_refresh_at is None
    assert rows[waiting.pk].action_needed == "Authorize"
    assert rows[healthy.pk].next_refresh_at is not None
    page = admin_client.get(DASHBOARD).content.decode()
    assert "Authorize again" in page


def test_the_dashboard_shows_the_file_name(admin_client, fake, login_app, token_dir):
    account = due_account(fake, login_app, "Shop", age=5 * DAY, token_filename="shop-feed")
    services.token_export(account=account, actor=ACTOR, now=timezone.now())
    page = admin_client.get(DASHBOARD).content.decode()
    assert '<code class="file-name">shop-feed</code>' in page


def test_the_admin_refuses_a_file_name_another_account_owns(admin_client, fake, login_app,
                                                            token_dir):
    owner = due_account(fake, login_app, "Owner", username="shop", age=5 * DAY)
    services.token_export(account=owner, actor=ACTOR, now=timezone.now())
    other = due_account(fake, login_app, "Other", username="other", age=5 * DAY)
    services.token_export(account=other, actor=ACTOR, now=timezone.now())
    change = reverse("admin:accounts_account_change", args=[other.pk])
    response = admin_client.post(change, {"app": login_app.pk, "label": "Other",
                                          "token_filename": "shop", "export_enabled": "on",
                                          "export_format": "text"})
    assert response.status_code == 200
    assert "belongs to account &#x27;Owner&#x27;" in response.content.decode()
    assert reload(other).token_filename == ""
    assert (token_dir / "shop").read_text() == reload(owner).token.value


# --- found by trying it as a new user ---------------------------------------------------


def test_a_short_lived_token_imported_as_long_lived_is_swapped(fake, login_app, tmp_path):
    account = Account.objects.create(app=login_app, label="Shop")
    token_file = tmp_path / "token.txt"
    token_file.write_text(fake.mint_token(client_id=LOGIN_ID, username="shop", kind="short"))
    run("import_token", "--account", "Shop", "--token-file", str(token_file))
    token = reload(account).token
    assert fake.token_info(token.value)["kind"] == "long"  # not the 1-hour token
    assert abs(token.expires_at - (timezone.now() + 60 * DAY)) < timedelta(minutes=2)


def test_import_without_expiry_waits_out_a_pause(fake, login_app, tmp_path):
    Account.objects.create(app=login_app, label="Shop")
    token_file = tmp_path / "token.txt"
    token_file.write_text(fake.mint_token(client_id=LOGIN_ID, username="shop", age=5 * DAY))
    pause()
    with pytest.raises(CommandError, match="slow down"):
        run("import_token", "--account", "Shop", "--token-file", str(token_file))
    assert fake.calls("/refresh_access_token") == []
    assert not Token.objects.filter(account__label="Shop").exists()


def test_one_token_no_key_decrypts_spoils_only_its_own_account(
        admin_client, fake, login_app, token_dir, alerts_by_mail):
    good = [due_account(fake, login_app, f"Good {i}", age=5 * DAY) for i in range(2)]
    bad = due_account(fake, login_app, "Bad")
    for account in [*good, bad]:
        services.token_export(account=account, actor=ACTOR, now=timezone.now())
    for path in token_dir.iterdir():
        path.unlink()
    with connection.cursor() as cursor:  # raw: the field would encrypt whatever it is given
        cursor.execute("UPDATE accounts_token SET value = %s WHERE account_id = %s",
                       ["not-a-fernet-token", bad.pk])

    report = tasks.reconcile_token_files.apply().get()

    assert (report["rewritten"], report["failed"]) == (2, 1)
    for account in good:
        assert (token_dir / account.username).read_text() == reload(account).token.value
    assert "cannot be decrypted" in Account.objects.get(pk=bad.pk).file_error
    assert state_of(bad) == State.FILE_PROBLEM
    assert admin_client.get(DASHBOARD).status_code == 200
    assert admin_client.get(reverse("admin:accounts_account_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:accounts_account_change",
                                    args=[bad.pk])).status_code == 200
    out, _ = run("token_status")
    assert "Bad" in out
    result = services.token_refresh(account_id=bad.pk, actor=ACTOR, now=timezone.now())
    assert result.outcome == Outcome.FAILED and "cannot be decrypted" in result.message
    assert fake.calls("/refresh_access_token") == []


def test_turning_export_off_orphans_the_file_it_left(admin_client, fake, login_app,
                                                    token_dir):
    account = due_account(fake, login_app, "Shop", age=5 * DAY)
    services.token_export(account=account, actor=ACTOR, now=timezone.now())
    change = reverse("admin:accounts_account_change", args=[account.pk])
    admin_client.post(change, {"app": login_app.pk, "label": "Shop", "token_filename": "",
                               "export_format": "text"})
    assert reload(account).export_enabled is False
    assert (token_dir / "shop").exists()  # left for the website, but flagged
    assert TokenFile.objects.get(name="shop").status == TokenFile.Status.ORPHANED
    files = admin_client.get(reverse("admin:accounts_tokenfile_changelist"),
                             {"orphaned": "yes"}).content.decode()
    assert "shop" in files


def test_deleting_an_account_orphans_its_file(admin_client, fake, login_app, token_dir):
    account = due_account(fake, login_app, "Shop", age=5 * DAY)
    services.token_export(account=account, actor=ACTOR, now=timezone.now())
    admin_client.post(reverse("admin:accounts_account_delete", args=[account.pk]),
                      {"post": "yes"})
    assert not Account.objects.filter(pk=account.pk).exists()
    record = TokenFile.objects.get(name="shop")
    assert record.status == TokenFile.Status.ORPHANED and record.account_label
    assert list(selectors.token_files_orphaned()) == [record]


def test_adding_an_account_with_a_file_name_is_checked_not_a_crash(admin_client, fake,
                                                                   login_app, token_dir):
    owner = due_account(fake, login_app, "Owner", username="shop", age=5 * DAY)
    services.token_export(account=owner, actor=ACTOR, now=timezone.now())
    add = reverse("admin:accounts_account_add")
    form = {"app": login_app.pk, "label": "New", "export_enabled": "on",
            "export_format": "text"}
    taken = admin_client.post(add, {**form, "token_filename": "shop"})
    assert taken.status_code == 200 and "belongs to account" in taken.content.decode()
    assert admin_client.post(add, {**form, "token_filename": "new-feed"}).status_code == 302
    assert Account.objects.get(label="New").token_filename == "new-feed"


def test_the_dashboard_shows_the_action_beside_the_date_and_the_pause(admin_client, fake,
                                                                      login_app):
    broken = due_account(fake, login_app, "Broken", age=5 * DAY)
    Account.objects.filter(pk=broken.pk).update(file_state=FileState.UNWRITABLE)
    due_now = due_account(fake, login_app, "Due")
    pause(30)
    rows = {r.account.pk: r for r in admin_client.get(DASHBOARD).context["dash"].rows}
    assert rows[broken.pk].action_needed == "Fix the token file"
    assert rows[due_now.pk].next_refresh_at >= SweepState.objects.get(pk=1).throttled_until
    assert "Fix the token file" in admin_client.get(DASHBOARD).content.decode()


def test_metrics_answer_503_at_once_when_the_database_fails(client, db, monkeypatch):
    from django.db import OperationalError

    def down(**kwargs):  # noqa: ANN003
        raise OperationalError("no answer")

    monkeypatch.setattr(selectors, "state_counts", down)
    response = client.get("/metrics")
    assert response.status_code == 503


def test_due_tokens_no_sweep_queued_fail_the_liveness_check(client, fake, settings,
                                                            transactional_db):
    # /healthz reads through connections of its own: the rows must be committed.
    login_app = make_app(fake, "instagram_login")
    settings.REFRESH_SWEEP_MINUTES = 60
    settings.REFRESH_QUEUE_MAX_LAG_MINUTES = 30
    SweepState.objects.update_or_create(pk=1, defaults={"last_succeeded_at": timezone.now()})
    # Due for ten days (50 days old, 10 left) and never queued: no worker ran a sweep.
    due_account(fake, login_app, "Shop")
    check = client.get("/healthz").json()["checks"]["refresh_queue"]
    assert check["ok"] is False and check["unattended"] == 1
    # A token that only just became due is the next sweep's business.
    Token.objects.update(expires_at=timezone.now() + (50 * DAY - timedelta(minutes=5)))
    assert client.get("/healthz").json()["checks"]["refresh_queue"]["ok"] is True


def test_refresh_tokens_says_why_a_named_account_is_left_alone(fake, login_app):
    due_account(fake, login_app, "Young", age=timedelta(hours=2))
    out, _ = run("refresh_tokens", "--force", "--account", "Young")
    assert "Young: not refreshable now" in out
    assert fake.calls("/refresh_access_token") == []
