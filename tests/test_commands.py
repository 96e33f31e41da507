"""The cron commands (refresh_tokens, export_tokens, token_status) and the reconcile task,
against the fake Instagram over real HTTP and real files in a per-test directory."""

from __future__ import annotations

import errno
import grp
import io
import itertools
import json
import os
import stat
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from accounts import selectors, services, tasks
from accounts.models import Account, Event, InstagramApp, PendingToken, SweepState, Token
from accounts.selectors import FileState
from accounts.services import Actor
from tests.conftest import SECRETS
from tests.fake_instagram import FakeInstagram, graph_error

CLIENT_ID = SECRETS["instagram_login"][0]
REFRESH = "/refresh_access_token"
DAY = timedelta(days=1)
LIFETIME = timedelta(days=60)
# Above 2**53: a float would round it (the spacing there is 2).
BIG_USER_ID = "17841400000000001"
_user_ids = itertools.count(17841400000001001)


# --- helpers ----------------------------------------------------------------------------


def make_account(
    fake: FakeInstagram,
    app: InstagramApp,
    label: str,
    *,
    age: timedelta = timedelta(days=50),
    expires_at: datetime | None = None,
    status: str = Account.Status.ACTIVE,
    ig_user_id: str | None = None,
    **fields,  # noqa: ANN003
) -> Account:
    """An account with a long-lived token minted at the fake `age` ago. The defaults make
    it due: 50 days old, 10 days left."""
    username = label.lower().replace(" ", "_")
    value = fake.mint_token(client_id=CLIENT_ID, username=username, kind="long", age=age)
    account = Account.objects.create(app=app, label=label)
    Account.objects.filter(pk=account.pk).update(
        username=username, ig_id=str(next(_user_ids)), ig_user_id=ig_user_id or "",
        status=status,
        **fields,
    )
    now = timezone.now()
    Token.objects.create(account=account, value=value, kind=Token.Kind.LONG,
                         obtained_at=now - age,
                         expires_at=expires_at or now - age + LIFETIME)
    return Account.objects.select_related("token").get(pk=account.pk)


def due(fake, app, label, **kw) -> Account:  # noqa: ANN001, ANN003
    return make_account(fake, app, label, **kw)


def not_due(fake, app, label, **kw) -> Account:  # noqa: ANN001, ANN003
    return make_account(fake, app, label, age=2 * DAY, **kw)


def too_young(fake, app, label, **kw) -> Account:  # noqa: ANN001, ANN003
    return make_account(fake, app, label, age=timedelta(hours=2), **kw)


def expired(fake, app, label, **kw) -> Account:  # noqa: ANN001, ANN003
    return make_account(fake, app, label, age=61 * DAY, **kw)


def value_of(account: Account) -> str:
    return Token.objects.get(account=account).value


def reload(account: Account) -> Account:
    return Account.objects.select_related("token").get(pk=account.pk)


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def sent_tokens(fake: FakeInstagram) -> list[str]:
    return [call.query.get("access_token") for call in fake.calls(REFRESH)]


def export(account: Account) -> Path:
    path = services.token_export(account=account, actor=Actor(job="test"), now=timezone.now())
    assert path is not None, reload(account).file_error
    return path


def ident(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_ino, info.st_mtime_ns


def events(account: Account, action: str, outcome: str) -> list[Event]:
    return list(Event.objects.filter(account=account, action=action, outcome=outcome))


def other_group(gid: int) -> grp.struct_group | None:
    """An existing group other than `gid` that this process may give a file to."""
    candidates = [g for g in os.getgroups() if g != gid]
    if os.geteuid() == 0:
        candidates += [g.gr_gid for g in grp.getgrall() if g.gr_gid != gid]
    for candidate in candidates:
        try:
            return grp.getgrgid(candidate)
        except KeyError:
            continue
    return None


# --- refresh_tokens ---------------------------------------------------------------------


def test_refresh_tokens_refreshes_exactly_the_due_accounts(fake, login_app, token_dir):
    first, second = due(fake, login_app, "Due one"), due(fake, login_app, "Due two")
    later = not_due(fake, login_app, "Later")
    old = {a.pk: value_of(a) for a in (first, second, later)}
    paths = {a.pk: export(a) for a in (first, second, later)}

    out, _ = run("refresh_tokens")

    assert len(fake.calls(REFRESH)) == 2
    assert sorted(sent_tokens(fake)) == sorted([old[first.pk], old[second.pk]])
    for account in (first, second):
        new = value_of(account)
        assert new != old[account.pk]
        info = fake.token_info(new)
        assert info is not None and info["kind"] == "long"  # what the fake issued
        token = Token.objects.get(account=account)
        assert token.expires_at - timezone.now() > 59 * DAY
        assert token.last_refreshed_at is not None
        assert paths[account.pk].read_text() == new  # file rewritten
        assert reload(account).status == Account.Status.ACTIVE
        assert len(events(account, "refresh", "ok")) == 1
        assert f"{account.label}: refreshed" in out
    assert value_of(later) == old[later.pk]
    assert paths[later.pk].read_text() == old[later.pk]
    assert "Later" not in out


def test_dry_run_lists_the_due_accounts_and_changes_nothing(fake, login_app):
    first, second = due(fake, login_app, "Due one"), due(fake, login_app, "Due two")
    later = not_due(fake, login_app, "Later")
    gone = expired(fake, login_app, "Gone")
    before = {a.pk: (value_of(a), reload(a).status) for a in (first, second, later, gone)}

    out, _ = run("refresh_tokens", "--dry-run")

    lines = out.splitlines()
    assert sorted(line.split(":")[0] for line in lines) == ["Due one", "Due two"]
    assert all("would refresh" in line for line in lines)
    assert fake.calls(REFRESH) == []
    assert {a.pk: (value_of(a), reload(a).status) for a in (first, second, later, gone)} == before
    assert Event.objects.count() == 0
    assert not SweepState.objects.filter(last_succeeded_at__isnull=False).exists()


def test_account_option_restricts_by_label_and_by_id(fake, login_app):
    by_label, by_id = due(fake, login_app, "Pick me"), due(fake, login_app, "Me too")
    other = due(fake, login_app, "Not me")
    old = {a.pk: value_of(a) for a in (by_label, by_id, other)}

    out, _ = run("refresh_tokens", "--account", "Pick me", "--account", str(by_id.pk))

    assert sorted(sent_tokens(fake)) == sorted([old[by_label.pk], old[by_id.pk]])
    assert value_of(by_label) != old[by_label.pk]
    assert value_of(by_id) != old[by_id.pk]
    assert value_of(other) == old[other.pk]
    assert "Not me" not in out


def test_account_option_with_dry_run_lists_only_that_account(fake, login_app):
    due(fake, login_app, "Pick me")
    other = due(fake, login_app, "Not me")

    out, _ = run("refresh_tokens", "--dry-run", "--account", str(other.pk))

    assert [line.split(":")[0] for line in out.splitlines()] == ["Not me"]
    assert fake.calls(REFRESH) == []


def make_pending(fake: FakeInstagram, app: InstagramApp, label: str) -> Account:
    """An account whose authorization stopped after the code exchange: a short-lived token
    waits for its swap."""
    account = Account.objects.create(app=app, label=label)
    now = timezone.now()
    value = fake.mint_token(client_id=CLIENT_ID, username="half_done", kind="short")
    PendingToken.objects.create(account=account, value=value, created_at=now,
                                expires_at=now + timedelta(minutes=50))
    return account


def test_a_run_finishes_an_interrupted_authorization(fake, login_app, token_dir):
    half = make_pending(fake, login_app, "Half done")

    run("refresh_tokens")

    assert len(fake.calls("/access_token")) == 1
    assert not PendingToken.objects.filter(account=half).exists()
    assert Token.objects.get(account=half).kind == Token.Kind.LONG
    assert (token_dir / "half_done").read_text() == value_of(half)


def test_account_option_leaves_other_accounts_pending_swap_alone(fake, login_app):
    due(fake, login_app, "Pick me")
    half = make_pending(fake, login_app, "Half done")

    run("refresh_tokens", "--account", "Pick me")

    assert len(fake.calls(REFRESH)) == 1
    assert fake.calls("/access_token") == []
    assert PendingToken.objects.filter(account=half).exists()
    assert not Token.objects.filter(account=half).exists()


@pytest.mark.parametrize("key", ["No such label", "999999"])
def test_unknown_account_is_a_command_error(fake, login_app, key):
    account = due(fake, login_app, "Due one")
    old = value_of(account)

    with pytest.raises(CommandError, match="No single account"):
        run("refresh_tokens", "--account", key)

    assert fake.calls(REFRESH) == []
    assert value_of(account) == old


def test_force_refreshes_a_not_due_token_but_never_a_young_or_expired_one(fake, login_app):
    later = not_due(fake, login_app, "Later")
    young = too_young(fake, login_app, "Young")
    gone = expired(fake, login_app, "Gone")
    old = {a.pk: value_of(a) for a in (later, young, gone)}

    run("refresh_tokens")
    assert fake.calls(REFRESH) == []  # nothing due without --force

    run("refresh_tokens", "--force")

    assert sent_tokens(fake) == [old[later.pk]]
    assert value_of(later) != old[later.pk]
    assert value_of(young) == old[young.pk]
    assert value_of(gone) == old[gone.pk]
    assert reload(young).status == Account.Status.ACTIVE
    assert reload(young).last_error == ""


def test_a_young_token_is_never_sent_even_when_its_expiry_makes_it_due(
    fake, login_app, settings
):
    """Whatever the threshold says about the expiry, under 24 hours old is never sent."""
    settings.REFRESH_THRESHOLD_DAYS = 59
    young = too_young(fake, login_app, "Young", expires_at=timezone.now() + 30 * DAY)
    old = value_of(young)

    run("refresh_tokens", "--dry-run", "--force")
    run("refresh_tokens")
    run("refresh_tokens", "--force")
    run("refresh_tokens", "--force", "--account", "Young")

    assert fake.calls(REFRESH) == []
    assert value_of(young) == old
    assert reload(young).status == Account.Status.ACTIVE


def test_expired_token_is_flagged_needs_reauth_with_an_event(fake, login_app):
    gone = expired(fake, login_app, "Gone")

    out, _ = run("refresh_tokens", "--force")

    assert fake.calls(REFRESH) == []
    gone = reload(gone)
    assert gone.status == Account.Status.NEEDS_REAUTH
    assert "expired" in gone.last_error
    flagged = events(gone, "refresh", "failed")
    assert len(flagged) == 1
    assert "expired" in flagged[0].message
    assert flagged[0].actor_job == "command:refresh_tokens"

    run("refresh_tokens")  # a rerun flags nothing twice
    assert len(events(gone, "refresh", "failed")) == 1


def test_revoked_token_needs_reauth_and_the_command_fails(fake, login_app):
    first, second = due(fake, login_app, "Due one"), due(fake, login_app, "Due two")
    old = {a.pk: value_of(a) for a in (first, second)}
    fake.inject(REFRESH, graph_error(190, 460))

    with pytest.raises(CommandError, match="failed") as caught:
        run("refresh_tokens")

    assert caught.value.returncode == 1
    assert "1 of 2" in str(caught.value)
    assert len(fake.calls(REFRESH)) == 2
    states = {a.pk: reload(a) for a in (first, second)}
    revoked = [a for a in states.values() if a.status == Account.Status.NEEDS_REAUTH]
    refreshed = [a for a in states.values() if a.status == Account.Status.ACTIVE]
    assert len(revoked) == 1 and len(refreshed) == 1
    assert revoked[0].last_error
    assert value_of(revoked[0]) == old[revoked[0].pk]
    assert len(events(revoked[0], "refresh", "failed")) == 1
    assert value_of(refreshed[0]) != old[refreshed[0].pk]  # the other one still refreshed
    assert old[revoked[0].pk] not in str(caught.value)


def test_second_run_right_after_a_successful_one_refreshes_nothing(fake, login_app):
    first, second = due(fake, login_app, "Due one"), due(fake, login_app, "Due two")
    run("refresh_tokens")
    assert len(fake.calls(REFRESH)) == 2
    after_first = {a.pk: value_of(a) for a in (first, second)}

    out, _ = run("refresh_tokens")
    run("refresh_tokens", "--force")  # the new tokens are under 24 hours old

    assert len(fake.calls(REFRESH)) == 2
    assert out == ""
    assert {a.pk: value_of(a) for a in (first, second)} == after_first
    assert Event.objects.filter(action="refresh").count() == 2


def test_a_run_records_the_sweep_success(fake, login_app):
    due(fake, login_app, "Due one")
    started = timezone.now()

    run("refresh_tokens")

    state = SweepState.objects.get(pk=1)
    assert state.last_succeeded_at is not None
    assert started <= state.last_succeeded_at <= timezone.now()
    assert state.last_enqueued == 1


# --- export_tokens ----------------------------------------------------------------------


def test_export_tokens_writes_every_exported_file(fake, login_app, token_dir):
    accounts = [not_due(fake, login_app, f"Feed {n}") for n in range(3)]
    off = not_due(fake, login_app, "Off", export_enabled=False)
    Account.objects.create(app=login_app, label="Pending")

    out, _ = run("export_tokens")

    assert "3 checked, 3 written, 0 failed" in out
    for account in accounts:
        path = token_dir / account.username
        assert path.read_text() == value_of(account)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        assert reload(account).file_written_at is not None
    assert not (token_dir / off.username).exists()
    assert sorted(p.name for p in token_dir.iterdir()) == sorted(a.username for a in accounts)


def test_export_tokens_without_option_rewrites_even_in_sync_files(fake, login_app, token_dir):
    account = not_due(fake, login_app, "Feed")
    before = ident(export(account))

    run("export_tokens")

    assert ident(token_dir / account.username)[0] != before[0]


def test_only_out_of_date_rewrites_only_missing_stale_and_wrong_mode_files(
    fake, login_app, token_dir
):
    stale, missing, loose, intact = (not_due(fake, login_app, name)
                                     for name in ("Stale", "Missing", "Loose", "Intact"))
    paths = {a.pk: export(a) for a in (stale, missing, loose, intact)}
    paths[stale.pk].write_text("IGAAsomething-else")
    paths[missing.pk].unlink()
    paths[loose.pk].chmod(0o644)
    before = ident(paths[intact.pk])

    out, _ = run("export_tokens", "--only-out-of-date")

    assert "4 checked, 3 written, 0 failed" in out
    for account in (stale, missing, loose):
        assert paths[account.pk].read_text() == value_of(account)
        assert stat.S_IMODE(paths[account.pk].stat().st_mode) == 0o640
    assert ident(paths[intact.pk]) == before
    assert paths[intact.pk].read_text() == value_of(intact)


def test_export_tokens_fails_when_a_write_fails(fake, login_app, settings, token_dir):
    account = not_due(fake, login_app, "Feed")
    settings.TOKEN_FILE_GROUP = "no-such-group-xyz"

    with pytest.raises(CommandError, match="could not be written") as caught:
        run("export_tokens")

    assert caught.value.returncode == 1
    assert not (token_dir / account.username).exists()
    assert "no-such-group-xyz" in reload(account).file_error
    assert len(events(account, "export", "failed")) == 1


# --- reconcile --------------------------------------------------------------------------


def test_reconcile_repairs_missing_stale_and_wrong_mode_files(fake, login_app, token_dir):
    stale, missing, loose, intact = (not_due(fake, login_app, name)
                                     for name in ("Stale", "Missing", "Loose", "Intact"))
    off = not_due(fake, login_app, "Off")
    paths = {a.pk: export(a) for a in (stale, missing, loose, intact, off)}
    Account.objects.filter(pk=off.pk).update(export_enabled=False)
    paths[off.pk].write_text("left over")
    paths[stale.pk].write_text("IGAAsomething-else")
    paths[missing.pk].unlink()
    paths[loose.pk].chmod(0o644)
    before = ident(paths[intact.pk])
    off_before = ident(paths[off.pk])

    report = tasks.reconcile_token_files()

    assert report == {"checked": 4, "rewritten": 3, "failed": 0}
    for account in (stale, missing, loose, intact):
        assert selectors.token_file_state(account=reload(account)) == FileState.IN_SYNC
        assert paths[account.pk].read_text() == value_of(account)
    assert stat.S_IMODE(paths[loose.pk].stat().st_mode) == 0o640
    assert ident(paths[intact.pk]) == before
    assert paths[off.pk].read_text() == "left over"  # export disabled: left alone
    assert ident(paths[off.pk]) == off_before

    assert tasks.reconcile_token_files() == {"checked": 4, "rewritten": 0, "failed": 0}


def test_reconcile_repairs_a_wrong_group(fake, login_app, settings):
    account = not_due(fake, login_app, "Feed")
    path = export(account)
    group = other_group(path.stat().st_gid)
    if group is None:
        pytest.skip("this process can give files to no other group")
    settings.TOKEN_FILE_GROUP = group.gr_name

    assert tasks.reconcile_token_files() == {"checked": 1, "rewritten": 1, "failed": 0}

    assert path.stat().st_gid == group.gr_gid
    assert selectors.token_file_state(account=reload(account)) == FileState.IN_SYNC


def test_token_file_state_in_each_situation(fake, login_app, settings, token_dir):
    account = not_due(fake, login_app, "Feed")
    state = lambda: selectors.token_file_state(account=reload(account))  # noqa: E731

    assert state() == FileState.MISSING
    path = export(account)
    assert state() == FileState.IN_SYNC
    path.chmod(0o644)
    assert state() == FileState.WRONG_MODE
    path.chmod(0o640)
    path.write_text("IGAAsomething-else")
    assert state() == FileState.STALE
    export(account)
    assert state() == FileState.IN_SYNC

    group = other_group(path.stat().st_gid)
    if group is not None:
        settings.TOKEN_FILE_GROUP = group.gr_name
        assert state() == FileState.WRONG_GROUP
    settings.TOKEN_FILE_GROUP = "no-such-group-xyz"
    assert state() == FileState.WRONG_GROUP
    settings.TOKEN_FILE_GROUP = grp.getgrgid(path.stat().st_gid).gr_name
    assert state() == FileState.IN_SYNC
    settings.TOKEN_FILE_GROUP = ""

    Account.objects.filter(pk=account.pk).update(export_enabled=False)
    assert state() == FileState.NOT_EXPORTED
    pending = Account.objects.create(app=login_app, label="Pending")
    assert selectors.token_file_state(account=pending) == FileState.NOT_EXPORTED
    Account.objects.filter(pk=account.pk).update(export_enabled=True)
    Token.objects.filter(account=account).update(kind=Token.Kind.SHORT)
    assert state() == FileState.NOT_EXPORTED


def test_failed_file_write_during_refresh_keeps_the_new_token_then_reconcile_writes_it(
    fake, login_app, monkeypatch
):
    account = due(fake, login_app, "Due one")
    old = value_of(account)
    path = export(account)

    def boom(src, dst):  # noqa: ANN001, ANN202
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr("accounts.services.files.os.replace", boom)
    # The token is refreshed, but cron must hear that its file is not.
    with pytest.raises(CommandError, match="1 of 1"):
        run("refresh_tokens")
    monkeypatch.undo()

    new = value_of(account)
    assert new != old and fake.token_info(new) is not None  # kept in the database
    assert len(fake.calls(REFRESH)) == 1
    assert "Input/output error" in reload(account).file_error
    assert len(events(account, "export", "failed")) == 1
    assert path.read_text() == old
    assert selectors.token_file_state(account=reload(account)) == FileState.STALE

    assert tasks.reconcile_token_files() == {"checked": 1, "rewritten": 1, "failed": 0}

    assert path.read_text() == new
    assert reload(account).file_error == ""
    assert len(fake.calls(REFRESH)) == 1


# --- token_status -----------------------------------------------------------------------

KEYS = {"id", "app", "label", "username", "ig_id", "ig_user_id", "ig_exchange_user_id",
        "status", "expires_at",
        "last_refreshed_at", "last_error", "token_file", "file_state", "file_error"}


@pytest.fixture
def status_accounts(fake, login_app, token_dir) -> dict[str, Account]:
    active = not_due(fake, login_app, "Active feed", ig_user_id=BIG_USER_ID)
    Token.objects.filter(account=active).update(last_refreshed_at=timezone.now() - DAY)
    export(active)
    pending = Account.objects.create(app=login_app, label="Pending feed")
    reauth = due(fake, login_app, "Reauth feed")
    Account.objects.filter(pk=reauth.pk).update(
        status=Account.Status.NEEDS_REAUTH, last_error="Instagram no longer accepts the token."
    )
    return {"active": reload(active), "pending": reload(pending), "reauth": reload(reauth)}


def all_token_values(fake: FakeInstagram) -> list[str]:
    values = list(Token.objects.values_list("value", flat=True))
    with fake._state.lock:
        values += list(fake._state.tokens)
    assert values
    return values


def test_token_status_json(fake, status_accounts, token_dir):
    out, err = run("token_status", "--json")

    rows = json.loads(out)
    assert isinstance(rows, list) and len(rows) == 3
    for row in rows:
        assert set(row) == KEYS
    by_label = {row["label"]: row for row in rows}
    active, pending, reauth = (status_accounts[k] for k in ("active", "pending", "reauth"))

    row = by_label["Active feed"]
    assert row["id"] == active.pk
    assert row["app"] == "instagram_login app"
    assert row["username"] == "active_feed"
    assert row["ig_user_id"] == BIG_USER_ID  # exact, a string
    assert f'"ig_user_id": "{BIG_USER_ID}"' in out
    assert row["ig_id"] == active.ig_id and row["ig_id"].isdigit()
    assert row["ig_exchange_user_id"] is None  # not authorized through a code exchange
    assert row["status"] == "active"
    assert datetime.fromisoformat(row["expires_at"]) == active.token.expires_at
    assert datetime.fromisoformat(row["last_refreshed_at"]) == active.token.last_refreshed_at
    assert datetime.fromisoformat(row["expires_at"]).tzinfo is not None
    assert row["last_error"] is None
    assert row["token_file"] == str(token_dir / "active_feed")
    assert row["file_state"] == FileState.IN_SYNC
    assert row["file_error"] is None

    row = by_label["Pending feed"]
    assert row["id"] == pending.pk
    assert row["status"] == "pending"
    for key in ("username", "ig_id", "ig_user_id", "ig_exchange_user_id", "expires_at",
                "last_refreshed_at", "last_error",
                "token_file", "file_error"):
        assert row[key] is None, key
    assert row["file_state"] == FileState.NOT_EXPORTED

    row = by_label["Reauth feed"]
    assert row["status"] == "needs_reauth"
    assert row["last_error"] == "Instagram no longer accepts the token."
    assert row["last_refreshed_at"] is None
    assert datetime.fromisoformat(row["expires_at"]) == reauth.token.expires_at
    assert row["file_state"] == FileState.MISSING

    for value in all_token_values(fake):
        assert value not in out and value not in err


def test_token_status_table(fake, status_accounts):
    out, err = run("token_status")

    lines = out.splitlines()
    assert len(lines) == 1 + 3
    header = lines[0].split()
    assert header[:3] == ["id", "app", "label"]
    assert {"status", "expires_at", "token_file", "file_state", "last_error"} <= set(header)
    for label in ("Active feed", "Pending feed", "Reauth feed"):
        assert sum(label in line for line in lines[1:]) == 1
    assert any("needs_reauth" in line and "Reauth feed" in line for line in lines)
    for value in all_token_values(fake):
        assert value not in out and value not in err


# --- refresh_tokens: why an account is left alone ---------------------------------------


def test_refresh_tokens_says_why_an_account_asked_for_is_left_alone(fake, login_app):
    from tests.conftest import active_account

    claimed = active_account(fake, login_app, "Claimed shop")
    waiting = active_account(fake, login_app, "Waiting shop")
    now = timezone.now()
    Token.objects.filter(account=claimed).update(
        refresh_claim="other-run", refresh_claimed_until=now + timedelta(seconds=80))
    Token.objects.filter(account=waiting).update(next_attempt_at=now + timedelta(minutes=9))
    out = io.StringIO()
    call_command("refresh_tokens", "--account", "Claimed shop", "--account", "Waiting shop",
                 stdout=out)
    text = out.getvalue()
    assert "Claimed shop: busy: another run or worker is refreshing it" in text
    assert "Waiting shop: waiting until" in text and "backing off" in text
    assert fake.calls("/refresh_access_token") == []
    # A whole run says how many it left to another run.
    out = io.StringIO()
    call_command("refresh_tokens", stdout=out)
    assert "1 token(s) left alone: another run or worker is refreshing them" in out.getvalue()


@pytest.mark.parametrize("value", ["0", "65", "-3", "abc"])
def test_refresh_tokens_concurrency_out_of_range_is_refused(value, db):  # noqa: ANN001
    with pytest.raises(CommandError, match="--concurrency"):
        call_command("refresh_tokens", "--concurrency", value)


def test_a_chunk_that_could_outlive_the_visibility_timeout_is_warned_about(settings):
    from django.core.checks import run_checks

    from accounts import tasks

    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": tasks.CHUNK_TIME_LIMIT * 2}
    assert not [w for w in run_checks() if w.id == "accounts.W001"]
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": tasks.CHUNK_TIME_LIMIT}
    [warning] = [w for w in run_checks() if w.id == "accounts.W001"]
    assert "CELERY_VISIBILITY_TIMEOUT" in warning.msg
