"""Behaviours of the token files (claim, release, take-over, removal, the batch write and
the reconcile run) that no other test pinned down, found by mutation testing (README,
"Mutation testing"; the survivors are classified in docs/mutation-survivors.md). Each
test goes through the public service functions on real files in the test's own directory
and fails when the behaviour changes."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from accounts import services
from accounts.models import Account, Event, InstagramApp, Token, TokenFile
from accounts.selectors import FileState
from accounts.services import Actor, FlowError

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
JOB = Actor(job="test")


@pytest.fixture
def app(db) -> InstagramApp:
    return InstagramApp.objects.create(
        name="Files app", flavour="instagram_login", app_id="1000000000000003",
        app_secret="files-app-secret-0123456789", redirect_uri="https://example.com/cb/",
    )


@pytest.fixture
def person(django_user_model):
    return django_user_model.objects.create_user("operator", password="pw-op-12345",
                                                 is_staff=True)


def make_account(app: InstagramApp, label: str, *, exported: bool = False,
                 **fields) -> Account:  # noqa: ANN003
    """An active account with a long-lived token; its file written at NOW if `exported`."""
    username = fields.pop("username", label.lower().replace(" ", "_"))
    account = Account.objects.create(app=app, label=label, **fields)
    Account.objects.filter(pk=account.pk).update(status=Account.Status.ACTIVE,
                                                 username=username,
                                                 ig_user_id=str(10**16 + account.pk))
    Token.objects.create(account=account, value=f"IGAA{account.pk:04d}-token-of-{username}",
                         kind=Token.Kind.LONG, obtained_at=NOW - timedelta(days=5),
                         expires_at=NOW + timedelta(days=55))
    if exported:
        assert services.token_export(account=account, actor=JOB, now=NOW) is not None
    return reload(account)


def reload(account: Account) -> Account:
    return Account.objects.select_related("token").get(pk=account.pk)


def rename(account: Account, name: str) -> Account:
    Account.objects.filter(pk=account.pk).update(token_filename=name)
    return reload(account)


def events(account: Account | None, action: str) -> list[Event]:
    return list(Event.objects.filter(account=account, action=action).order_by("pk"))


def file_fields(account: Account) -> tuple[str, str, datetime | None]:
    fresh = Account.objects.get(pk=account.pk)
    return fresh.file_state, fresh.file_error, fresh.file_checked_at


# --- claiming a name ----------------------------------------------------------------------


def test_an_account_named_back_to_its_own_orphaned_file_writes_it_again(app, token_dir):
    account = make_account(app, "Shop", exported=True)
    account = rename(account, "shop-feed")
    assert services.token_export(account=account, actor=JOB, now=NOW) == token_dir / "shop-feed"
    Account.objects.filter(pk=account.pk).update(label="Shop renamed")
    account = rename(account, "shop")

    assert services.token_export(account=account, actor=JOB, now=LATER) == token_dir / "shop"

    record = TokenFile.objects.get(name="shop")
    assert (record.account_id, record.status, record.orphaned_at, record.claimed_at,
            record.account_label) == (account.pk, TokenFile.Status.CURRENT, None, LATER,
                                      "Shop renamed")
    feed = TokenFile.objects.get(name="shop-feed")
    assert (feed.status, feed.orphaned_at) == (TokenFile.Status.ORPHANED, LATER)
    assert (token_dir / "shop").read_text() == account.token.value
    assert file_fields(account)[:2] == (FileState.IN_SYNC, "")


def test_a_rename_orphans_the_old_file_as_the_actor_and_says_so(app, person, token_dir):
    account = rename(make_account(app, "Shop", exported=True), "shop-feed")

    services.token_export(account=account, actor=Actor(user=person), now=LATER)

    [orphaned] = events(account, "file_orphaned")
    assert (orphaned.actor_user, orphaned.created_at) == (person, LATER)
    assert orphaned.message == (
        "Token file 'shop' is no longer written (the account's file was renamed); it stays "
        "on disk until an operator removes it in Token files.")
    record = TokenFile.objects.get(name="shop")
    assert (record.status, record.orphaned_at) == (TokenFile.Status.ORPHANED, LATER)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_name_claimed_by_another_account_a_moment_ago_is_taken(postgres, app, token_dir):
    """The race: another account's export inserts the name after this export looked it up
    and commits while this one inserts it. The unique name refuses the second insert (it
    waits for the first to commit); the file is not written."""
    rival = make_account(app, "Rival", username="someone")
    account = make_account(app, "Shop", username="shop")
    inserted, done = threading.Event(), threading.Event()

    def rival_export() -> None:
        try:
            with transaction.atomic():
                TokenFile.objects.create(name="shop", account=rival, account_label="Rival",
                                         claimed_at=NOW)
                inserted.set()
                time.sleep(1.0)  # commits while the export below waits on the name
        finally:
            connection.close()
            done.set()

    threading.Thread(target=rival_export).start()
    assert inserted.wait(10)
    started = time.monotonic()

    assert services.token_export(account=account, actor=JOB, now=NOW) is None

    assert time.monotonic() - started >= 0.5  # its insert waited for the rival's commit
    assert done.wait(10)
    assert not (token_dir / "shop").exists()
    state, error, _ = file_fields(account)
    assert state == FileState.NAME_TAKEN
    assert error == (f"Token file not written: the file name 'shop' belongs to account "
                     f"'Rival' (id {rival.pk}). Give this account another token file name, "
                     f"or take the file over from its page.")
    assert TokenFile.objects.get(name="shop").account_id == rival.pk


def test_a_name_a_deleted_account_left_is_refused_and_says_whose_it_was(app, token_dir):
    gone = make_account(app, "Gone shop", username="shop", exported=True)
    gone.delete()
    account = make_account(app, "New shop", username="shop")

    assert services.token_export(account=account, actor=JOB, now=LATER) is None

    assert file_fields(account)[:2] == (FileState.NAME_TAKEN, (
        "Token file not written: the file name 'shop' belongs to the deleted account "
        "'Gone shop' (an orphaned file). Give this account another token file name, or take "
        "the file over from its page."))


# --- the state an export records ----------------------------------------------------------


def test_an_account_that_stops_exporting_is_recorded_not_exported_with_no_error(app):
    account = make_account(app, "Shop", exported=True)
    Account.objects.filter(pk=account.pk).update(
        export_enabled=False, file_state=FileState.UNWRITABLE, file_error="an old problem")

    assert services.token_export(account=account, actor=JOB, now=LATER) is None

    assert file_fields(account) == (FileState.NOT_EXPORTED, "", LATER)


def test_a_stale_error_is_cleared_even_when_the_state_is_already_not_exported(app):
    account = make_account(app, "Shop", export_enabled=False)
    Account.objects.filter(pk=account.pk).update(file_state=FileState.NOT_EXPORTED,
                                                 file_error="an old problem")

    services.token_export(account=account, actor=JOB, now=LATER)

    assert file_fields(account) == (FileState.NOT_EXPORTED, "", LATER)


def test_an_unchanged_not_exported_state_is_not_written_again(app):
    account = make_account(app, "Shop", export_enabled=False)
    Account.objects.filter(pk=account.pk).update(file_state=FileState.NOT_EXPORTED,
                                                 file_error="", file_checked_at=NOW)

    services.token_export(account=account, actor=JOB, now=LATER)

    assert file_fields(account) == (FileState.NOT_EXPORTED, "", NOW)


def test_a_failed_write_records_when_it_was_checked_and_who_tried(app, person, settings):
    account = make_account(app, "Shop")
    settings.TOKEN_FILE_GROUP = "no-such-group-igregistry"

    assert services.token_export(account=account, actor=Actor(user=person), now=LATER) is None

    state, error, checked = file_fields(account)
    assert (state, checked) == (FileState.UNWRITABLE, LATER)
    [failed] = events(account, "export")
    assert (failed.outcome, failed.actor_user, failed.message) == ("failed", person, error)


def test_a_successful_write_records_the_file_the_time_and_says_where(app, token_dir):
    account = make_account(app, "Shop")

    path = services.token_export(account=account, actor=JOB, now=LATER)

    assert path == token_dir / "shop"
    assert file_fields(account) == (FileState.IN_SYNC, "", LATER)
    assert Account.objects.get(pk=account.pk).file_written_at == LATER
    assert TokenFile.objects.get(name="shop").written_at == LATER
    [written] = events(account, "export")
    assert (written.outcome, written.message, written.actor_job) == (
        "ok", f"Wrote {path}.", "test")


def test_a_write_the_system_refuses_names_the_file_and_why(app, settings, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    settings.TOKEN_EXPORT_DIR = blocker / "tokens"
    account = make_account(app, "Shop")

    assert services.token_export(account=account, actor=JOB, now=LATER) is None

    assert file_fields(account) == (
        FileState.UNWRITABLE, "Token file 'shop' not written: Not a directory.", LATER)


def test_a_name_taken_is_said_to_the_person_who_tried(app, person, token_dir):
    make_account(app, "Owner", username="shop", exported=True)
    account = make_account(app, "Other", username="shop")

    assert services.token_export(account=account, actor=Actor(user=person), now=LATER) is None

    state, error, checked = file_fields(account)
    assert (state, checked) == (FileState.NAME_TAKEN, LATER)
    [failed] = events(account, "export")
    assert (failed.outcome, failed.message, failed.actor_user) == ("failed", error, person)


# --- release (export turned off) ----------------------------------------------------------


def test_turning_export_off_orphans_only_this_accounts_current_file(app, person, token_dir):
    account = make_account(app, "Shop", exported=True)
    other = make_account(app, "Other", exported=True)
    account = rename(account, "shop-feed")
    services.token_export(account=account, actor=JOB, now=NOW)  # 'shop' orphaned at NOW
    Account.objects.filter(pk=account.pk).update(export_enabled=False)

    services.token_export(account=account, actor=Actor(user=person), now=LATER)

    files = {r.name: (r.status, r.orphaned_at) for r in TokenFile.objects.all()}
    assert files == {"shop": (TokenFile.Status.ORPHANED, NOW),
                     "shop-feed": (TokenFile.Status.ORPHANED, LATER),
                     "other": (TokenFile.Status.CURRENT, None)}
    released = events(account, "file_orphaned")[-1]
    assert (released.actor_user, released.created_at) == (person, LATER)
    assert released.message == (
        "Token file 'shop-feed' is no longer written (its export was turned off); it stays "
        "on disk until an operator removes it in Token files.")
    assert len(events(account, "file_orphaned")) == 2
    assert events(other, "file_orphaned") == []
    assert (token_dir / "shop-feed").read_text() == account.token.value  # left on disk


# --- take-over ----------------------------------------------------------------------------


def test_take_over_from_a_live_account_moves_the_file_and_the_problem(app, person, token_dir):
    former = make_account(app, "Former", username="shop", exported=True)
    account = make_account(app, "Taker", username="taker", exported=True)
    account = rename(account, "shop")

    path = services.token_file_take_over(account=account, actor=Actor(user=person), now=LATER)

    assert path == token_dir / "shop"
    assert path.read_text() == account.token.value
    own = TokenFile.objects.get(name="taker")
    assert (own.status, own.orphaned_at) == (TokenFile.Status.ORPHANED, LATER)
    [orphaned] = events(account, "file_orphaned")
    assert (orphaned.actor_user, orphaned.created_at) == (person, LATER)
    record = TokenFile.objects.get(name="shop")
    assert (record.account_id, record.account_label, record.status, record.claimed_at) == (
        account.pk, "Taker", TokenFile.Status.CURRENT, LATER)
    [taken] = events(account, "file_take_over")
    assert (taken.message, taken.actor_user) == (
        "Took over token file 'shop' from account 'Former'.", person)
    message = ("Token file not written: its file 'shop' was taken over by account 'Taker'. "
               "Give this account another token file name, or turn its export off.")
    assert file_fields(former) == (FileState.NAME_TAKEN, message, LATER)
    [told] = events(former, "file_take_over")
    assert (told.message, told.actor_user, told.outcome) == (message, person, "ok")
    [written] = [e for e in events(account, "export") if e.created_at == LATER]
    assert (written.outcome, written.actor_user) == ("ok", person)


def test_take_over_from_a_deleted_account(app, person, token_dir):
    make_account(app, "Gone", username="shop", exported=True).delete()
    account = make_account(app, "Taker", username="shop")

    path = services.token_file_take_over(account=account, actor=Actor(user=person), now=LATER)

    assert path.read_text() == account.token.value
    [taken] = events(account, "file_take_over")
    assert taken.message == "Took over token file 'shop' from a deleted account."
    assert TokenFile.objects.get(name="shop").account_id == account.pk


def test_take_over_of_a_name_nobody_owns_just_writes_it(app, token_dir):
    account = make_account(app, "Shop")

    assert services.token_file_take_over(account=account, actor=JOB, now=LATER) == (
        token_dir / "shop")
    assert events(account, "file_take_over") == []
    assert TokenFile.objects.get(name="shop").account_id == account.pk


def test_take_over_without_a_name_is_refused_for_that_account(app):
    account = make_account(app, "Shop", username="")

    with pytest.raises(FlowError) as refused:
        services.token_file_take_over(account=account, actor=JOB, now=LATER)

    assert refused.value.message == "This account has no token file name yet."
    assert refused.value.account == account


# --- removal of orphaned files ------------------------------------------------------------


def orphaned(app: InstagramApp, token_dir: Path) -> TokenFile:
    account = rename(make_account(app, "Shop", exported=True), "shop-feed")
    services.token_export(account=account, actor=JOB, now=NOW)
    return TokenFile.objects.get(name="shop")


def test_removing_an_orphaned_file_deletes_it_and_says_so_on_the_account(
        app, person, token_dir):
    record = orphaned(app, token_dir)

    assert services.token_file_remove(token_file=record, actor=Actor(user=person),
                                      now=LATER) is True

    assert not (token_dir / "shop").exists()
    assert (token_dir / "shop-feed").exists()
    assert not TokenFile.objects.filter(name="shop").exists()
    [removed] = events(record.account, "file_removed")
    assert (removed.message, removed.actor_user) == ("Removed orphaned token file 'shop'.",
                                                     person)


def test_removing_an_orphaned_file_already_gone_from_disk(app, token_dir):
    record = orphaned(app, token_dir)
    (token_dir / "shop").unlink()

    assert services.token_file_remove(token_file=record, actor=JOB, now=LATER) is False

    [removed] = events(record.account, "file_removed")
    assert removed.message == "Removed orphaned token file 'shop' (it was no longer on disk)."
    assert not TokenFile.objects.filter(name="shop").exists()


def test_removing_a_record_already_removed_does_nothing(app, token_dir):
    record = orphaned(app, token_dir)
    services.token_file_remove(token_file=record, actor=JOB, now=LATER)

    assert services.token_file_remove(token_file=record, actor=JOB, now=LATER) is False

    assert len(events(record.account, "file_removed")) == 1


def test_a_current_file_cannot_be_removed(app, token_dir):
    make_account(app, "Shop", exported=True)
    record = TokenFile.objects.get(name="shop")

    with pytest.raises(FlowError) as refused:
        services.token_file_remove(token_file=record, actor=JOB, now=LATER)

    assert str(refused.value) == ("Token file 'shop' is still written by its account; only "
                                  "orphaned files can be removed.")
    assert (token_dir / "shop").exists() and TokenFile.objects.filter(name="shop").exists()


def test_an_unsafe_name_forced_into_an_orphaned_record_is_never_removed(app, token_dir,
                                                                         tmp_path):
    record = orphaned(app, token_dir)
    outside = tmp_path / "evil"
    outside.write_text("not ours")
    TokenFile.objects.filter(pk=record.pk).update(name="../evil")

    with pytest.raises(ValidationError):
        services.token_file_remove(token_file=record, actor=JOB, now=LATER)

    assert outside.read_text() == "not ours"
    assert TokenFile.objects.filter(name="../evil").exists()


def test_a_file_the_system_will_not_remove_is_refused_with_its_reason(app, token_dir):
    record = orphaned(app, token_dir)
    (token_dir / "shop").unlink()
    (token_dir / "shop").mkdir()  # unlink() refuses a directory

    with pytest.raises(FlowError) as refused:
        services.token_file_remove(token_file=record, actor=JOB, now=LATER)

    assert str(refused.value) == "Could not remove 'shop': Is a directory."
    assert TokenFile.objects.filter(name="shop").exists()
    assert events(record.account, "file_removed") == []


# --- the write itself ---------------------------------------------------------------------


def test_the_export_directory_is_created_with_its_parents(app, settings, tmp_path):
    settings.TOKEN_EXPORT_DIR = tmp_path / "srv" / "www" / "tokens"
    account = make_account(app, "Shop")

    path = services.token_export(account=account, actor=JOB, now=NOW)

    assert path == tmp_path / "srv" / "www" / "tokens" / "shop"
    assert path.read_text() == account.token.value


def test_the_file_is_written_under_a_hidden_temporary_name_then_renamed(app, token_dir,
                                                                        monkeypatch):
    account = make_account(app, "Shop")
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def recorded(src, dst):  # noqa: ANN001, ANN202
        renames.append((Path(src).name, Path(dst).name))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recorded)
    services.token_export(account=account, actor=JOB, now=NOW)

    [(temporary, final)] = renames
    # Hidden (a reader listing the directory skips it), and named for the file it becomes.
    assert temporary.startswith(".shop.") and temporary.endswith(".tmp")
    assert final == "shop"


def test_a_configured_group_leaves_the_files_owner_alone(app, settings):
    import grp

    settings.TOKEN_FILE_GROUP = grp.getgrgid(os.getegid()).gr_name
    account = make_account(app, "Shop")

    path = services.token_export(account=account, actor=JOB, now=NOW)

    assert (path.stat().st_uid, path.stat().st_gid) == (os.geteuid(), os.getegid())


# --- the batch write ----------------------------------------------------------------------


def test_the_batch_costs_the_same_statements_for_two_accounts_or_six(app, token_dir):
    accounts = [make_account(app, f"Shop {n}", exported=True) for n in range(8)]
    # Renamed on Instagram since: each file keeps the name it claimed, still the plain case.
    for account in accounts:
        Account.objects.filter(pk=account.pk).update(username=f"renamed_{account.username}")

    def statements(batch: list[Account]) -> int:
        with CaptureQueriesContext(connection) as queries:
            written = services.token_files_write(account_ids=[a.pk for a in batch],
                                                 actor=JOB, now=LATER)
        assert written == {a.pk: token_dir / a.username for a in batch}
        assert not any(token_dir.glob("renamed_*"))
        return len(queries)

    assert statements(accounts[:2]) == statements(accounts[2:])


def test_the_batch_goes_on_after_a_file_it_cannot_write(app, token_dir):
    first = make_account(app, "First", exported=True)
    second = make_account(app, "Second", exported=True)
    with connection.cursor() as cursor:  # raw: the field would encrypt whatever it is given
        cursor.execute("UPDATE accounts_token SET value = %s WHERE account_id = %s",
                       ["not-a-fernet-token", first.pk])
    (token_dir / "second").write_text("stale")

    written = services.token_files_write(account_ids=[first.pk, second.pk], actor=JOB,
                                         now=LATER)

    assert written == {first.pk: None, second.pk: token_dir / "second"}
    assert (token_dir / "second").read_text() == second.token.value


def test_the_batch_refuses_an_unsafe_name_forced_into_the_file_record(app, token_dir,
                                                                       tmp_path):
    account = make_account(app, "Shop", exported=True)
    TokenFile.objects.filter(account=account).update(name="../evil")

    written = services.token_files_write(account_ids=[account.pk], actor=JOB, now=LATER)

    assert written == {account.pk: None}
    assert not (tmp_path / "evil").exists()
    assert file_fields(account) == (
        FileState.UNWRITABLE,
        "Token file not written: A token file name cannot contain a path separator.", LATER)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_writing_files_does_not_wait_for_token_rows_another_worker_holds(postgres, app,
                                                                         token_dir):
    """A refresh holds its token rows while it asks Instagram; the file of such an account
    is still written at once, by the single export and by the batch."""
    from tests.test_pinned_behaviour import held_by_another_worker, timed

    single = make_account(app, "Single")
    batch = make_account(app, "Batch", exported=True)
    with held_by_another_worker(Token.objects.filter(account__in=[single, batch]), seconds=5):
        path, waited = timed(lambda: services.token_export(account=single, actor=JOB,
                                                           now=LATER))
        written, batch_waited = timed(lambda: services.token_files_write(
            account_ids=[batch.pk], actor=JOB, now=LATER))
    assert path == token_dir / "single" and waited < 2
    assert written == {batch.pk: token_dir / "batch"} and batch_waited < 2


# --- reconcile ----------------------------------------------------------------------------


def test_reconcile_counts_rewrites_and_records_every_accounts_file_state(app, person,
                                                                         token_dir):
    in_sync = make_account(app, "In sync", exported=True)
    Account.objects.filter(pk=in_sync.pk).update(file_state=FileState.STALE,
                                                 file_error="an old problem")
    missing = make_account(app, "Missing", exported=True)
    (token_dir / "missing").unlink()
    unwritable = [make_account(app, f"Broken {n}", exported=True) for n in range(2)]
    for account in unwritable:
        (token_dir / account.username).unlink()
        (token_dir / account.username).mkdir()  # the rename onto it fails
    turned_off = make_account(app, "Off", export_enabled=False)
    Account.objects.filter(pk=turned_off.pk).update(file_state=FileState.UNWRITABLE,
                                                    file_error="an old problem")
    quiet = make_account(app, "Quiet", export_enabled=False)
    Account.objects.filter(pk=quiet.pk).update(file_state=FileState.NOT_EXPORTED,
                                               file_checked_at=NOW)
    before = (token_dir / "in_sync").stat()

    report = services.token_files_reconcile(actor=Actor(user=person), now=LATER)

    assert (report.checked, report.rewritten, report.failed) == (4, 1, 2)
    after = (token_dir / "in_sync").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert file_fields(in_sync) == (FileState.IN_SYNC, "", LATER)
    assert [e.created_at for e in events(in_sync, "export")] == [NOW]  # not written again
    assert (token_dir / "missing").read_text() == missing.token.value
    [repaired] = [e for e in events(missing, "export") if e.created_at == LATER]
    assert (repaired.outcome, repaired.actor_user) == ("ok", person)
    for account in unwritable:
        assert file_fields(account)[0] == FileState.UNWRITABLE
    assert file_fields(turned_off) == (FileState.NOT_EXPORTED, "", LATER)
    assert file_fields(quiet) == (FileState.NOT_EXPORTED, "", NOW)


def test_reconcile_with_rewrite_all_rewrites_files_that_are_in_sync(app, token_dir):
    account = make_account(app, "Shop", exported=True)

    report = services.token_files_reconcile(actor=JOB, now=LATER, rewrite_all=True)

    assert (report.checked, report.rewritten, report.failed) == (1, 1, 0)
    assert [e.created_at for e in events(account, "export")] == [NOW, LATER]
