"""The token file export: content, name, mode, group, atomicity and unsafe names."""

from __future__ import annotations

import errno
import grp
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from accounts import services
from accounts.models import Account, Event, InstagramApp, Token, validate_token_filename
from accounts.services import Actor

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TOKEN = "IGAAtesttoken0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZq9Wz"
NEW_TOKEN = "IGAAtesttokenSECONDgeneration9876543210zyxwvutsrqponmlkjihgfedcbaR2d2"
USERNAME = "shop_owner"
# Above 2**53: a float would turn it into ...000 (the spacing there is 2).
BIG_USER_ID = "17841400000000001"
BIG_ID = "90071992547409930"  # /me's id: above 2**53 too
# "2024": the token API would read digits alone as an account id.
UNSAFE_NAMES = ["../evil", "a/b", ".hidden", "a..b", "sp ace", "x\\y", "2024"]


@pytest.fixture
def app(db) -> InstagramApp:
    return InstagramApp.objects.create(
        name="Test app", flavour="instagram_login", app_id="1000000000000001",
        app_secret="test-app-secret-0123456789", redirect_uri="https://example.com/cb/",
    )


def make_account(app: InstagramApp, *, label: str = "Shop feed", with_token: bool = True,
                 kind: str = "long") -> Account:
    account = Account.objects.create(app=app, label=label)
    Account.objects.filter(pk=account.pk).update(username=USERNAME, ig_id=BIG_ID,
                                                 ig_user_id=BIG_USER_ID)
    if with_token:
        Token.objects.create(account=account, value=TOKEN, kind=kind, obtained_at=NOW,
                             expires_at=NOW + timedelta(days=60))
    account.refresh_from_db()
    return account


@pytest.fixture
def account(app) -> Account:
    return make_account(app)


def export(account: Account, now: datetime = NOW) -> Path | None:
    return services.token_export(account=account, actor=Actor(job="test"), now=now)


def set_token(account: Account, value: str) -> None:
    token = Token.objects.get(account=account)
    token.value = value
    token.save()


def temp_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(".*.tmp")) if directory.is_dir() else []


def snapshot(root: Path) -> dict[str, tuple[bool, int, float, bytes]]:
    """Every path under root with whether it is a directory, its size, mtime and content."""
    result = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        content = path.read_bytes() if path.is_file() else b""
        result[str(path.relative_to(root))] = (path.is_dir(), st.st_size, st.st_mtime, content)
    return result


def failed_exports(account: Account) -> list[Event]:
    return list(Event.objects.filter(account=account, action="export", outcome="failed"))


# --- content and name ---------------------------------------------------------------


def test_text_file_holds_exactly_the_token(account, token_dir):
    path = export(account)

    assert path == token_dir / USERNAME
    assert path.read_bytes() == TOKEN.encode()  # no newline, nothing else
    assert sorted(p.name for p in token_dir.iterdir()) == [USERNAME]


def test_token_filename_overrides_the_username(account, token_dir):
    Account.objects.filter(pk=account.pk).update(token_filename="feed-token.txt")

    path = export(account)

    assert path == token_dir / "feed-token.txt"
    assert path.read_text() == TOKEN
    assert not (token_dir / USERNAME).exists()


def test_json_file_holds_token_expiry_user_id_and_username(account, token_dir):
    Account.objects.filter(pk=account.pk).update(export_format=Account.ExportFormat.JSON)

    path = export(account)

    text = path.read_text()
    document = json.loads(text)
    assert document == {
        "access_token": TOKEN,
        "expires_at": (NOW + timedelta(days=60)).isoformat(),
        "id": BIG_ID,
        "user_id": BIG_USER_ID,
        "username": USERNAME,
    }
    assert datetime.fromisoformat(document["expires_at"]) == NOW + timedelta(days=60)
    # Strings, digit for digit: never a JSON number a reader would parse as a float.
    assert isinstance(document["user_id"], str) and isinstance(document["id"], str)
    assert f'"user_id": "{BIG_USER_ID}"' in text
    assert f'"id": "{BIG_ID}"' in text


def test_json_file_says_null_for_an_id_instagram_never_gave(account, token_dir):
    # Basic Display, or /me in the data envelope: no /me id of the other name.
    Account.objects.filter(pk=account.pk).update(export_format=Account.ExportFormat.JSON,
                                                 ig_user_id="")
    document = json.loads(export(account).read_text())
    assert (document["id"], document["user_id"]) == (BIG_ID, None)


def test_reexport_replaces_the_content(account, token_dir):
    export(account)
    set_token(account, NEW_TOKEN)

    path = export(account, NOW + timedelta(days=1))

    assert path.read_text() == NEW_TOKEN
    assert temp_files(token_dir) == []


# --- mode and group -----------------------------------------------------------------


def test_default_mode_is_0640(account, settings):
    assert settings.TOKEN_FILE_MODE == 0o640

    path = export(account)

    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_configured_mode_is_honoured(account, settings):
    settings.TOKEN_FILE_MODE = 0o600

    path = export(account)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_mode_applies_when_a_file_is_replaced(account, settings):
    export(account)
    settings.TOKEN_FILE_MODE = 0o600

    path = export(account)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_configured_group_sets_the_gid(account, settings):
    settings.TOKEN_FILE_GROUP = grp.getgrgid(os.getgid()).gr_name

    path = export(account)

    assert path.stat().st_gid == os.getgid()
    assert Account.objects.get(pk=account.pk).file_error == ""


def _other_usable_group() -> grp.struct_group | None:
    """A group other than the primary one that this process may give a file to."""
    candidates = [g for g in os.getgroups() if g != os.getgid()]
    if os.geteuid() == 0:
        candidates += [g.gr_gid for g in grp.getgrall() if g.gr_gid != os.getgid()]
    for gid in candidates:
        try:
            return grp.getgrgid(gid)
        except KeyError:
            continue
    return None


def test_configured_group_other_than_the_primary_one(account, settings):
    group = _other_usable_group()
    if group is None:
        pytest.skip("this process can give files to no group other than its primary one")
    settings.TOKEN_FILE_GROUP = group.gr_name

    path = export(account)

    assert path.stat().st_gid == group.gr_gid


def test_unknown_group_fails_and_keeps_the_previous_file(account, settings, token_dir):
    first = export(account)
    before = first.stat()
    set_token(account, NEW_TOKEN)
    settings.TOKEN_FILE_GROUP = "no-such-group-igregistry"

    assert export(account, NOW + timedelta(hours=1)) is None

    account.refresh_from_db()
    assert "no-such-group-igregistry" in account.file_error
    assert "TOKEN_FILE_GROUP" in account.file_error
    assert account.file_written_at == NOW  # the earlier success, not this attempt
    assert len(failed_exports(account)) == 1
    assert "no-such-group-igregistry" in failed_exports(account)[0].message
    assert first.read_text() == TOKEN
    after = first.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert temp_files(token_dir) == []


# --- atomicity ----------------------------------------------------------------------


def test_no_temporary_file_left_after_success(account, token_dir):
    export(account)
    export(account)

    assert temp_files(token_dir) == []
    assert [p.name for p in token_dir.iterdir()] == [USERNAME]


def test_failed_rename_keeps_the_previous_file_and_leaves_no_temp(
    account, token_dir, monkeypatch
):
    path = export(account)
    set_token(account, NEW_TOKEN)
    attempts = []

    def boom(src, dst):  # noqa: ANN001, ANN202
        attempts.append((Path(src), Path(dst)))
        # The temporary file is complete when the rename is attempted.
        assert Path(src).read_text() == NEW_TOKEN
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr("accounts.services.files.os.replace", boom)

    assert export(account, NOW + timedelta(hours=1)) is None

    monkeypatch.undo()
    assert len(attempts) == 1
    tmp, final = attempts[0]
    assert final == path
    assert tmp.parent == token_dir  # same directory, so the rename is atomic
    assert not tmp.exists()
    assert temp_files(token_dir) == []
    assert path.read_text() == TOKEN
    account.refresh_from_db()
    assert "not written" in account.file_error
    assert "Input/output error" in account.file_error
    assert NEW_TOKEN not in account.file_error
    assert len(failed_exports(account)) == 1


def test_failed_first_write_leaves_nothing(account, token_dir, monkeypatch):
    def boom(src, dst):  # noqa: ANN001, ANN202
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("accounts.services.files.os.replace", boom)

    assert export(account) is None

    monkeypatch.undo()
    assert list(token_dir.iterdir()) == []
    account.refresh_from_db()
    assert "No space left on device" in account.file_error
    assert account.file_written_at is None


def test_export_dir_that_is_a_regular_file_is_recorded(account, settings, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("I am a file")
    settings.TOKEN_EXPORT_DIR = blocker

    assert export(account) is None  # and nothing raised

    account.refresh_from_db()
    assert account.file_error.startswith("Token file ")
    assert "not written" in account.file_error
    assert len(failed_exports(account)) == 1
    assert blocker.read_text() == "I am a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-directory"]


# --- unsafe names -------------------------------------------------------------------


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_model_validation_rejects_unsafe_names(account, name):
    account.token_filename = name

    with pytest.raises(ValidationError) as excinfo:
        account.full_clean()

    assert list(excinfo.value.message_dict) == ["token_filename"]


@pytest.mark.parametrize("name", ["shop_owner", "feed.token", "_x-1.txt", "A" * 100, "2024a"])
def test_model_validation_accepts_safe_names(account, name):
    account.token_filename = name
    account.full_clean()


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_export_refuses_an_unsafe_name_forced_into_the_row(account, token_dir, tmp_path, name):
    assert token_dir.parent == tmp_path
    export(account)  # a normal file exists beforehand
    Account.objects.filter(pk=account.pk).update(token_filename=name, file_error="")
    before = snapshot(tmp_path)

    assert export(account, NOW + timedelta(hours=1)) is None

    assert snapshot(tmp_path) == before
    assert not (tmp_path / "evil").exists()
    account.refresh_from_db()
    with pytest.raises(ValidationError) as reason:
        validate_token_filename(name)
    assert account.file_error == f"Token file not written: {' '.join(reason.value.messages)}"
    events = failed_exports(account)
    assert len(events) == 1
    assert events[0].message == account.file_error


def test_export_refuses_an_unsafe_name_into_an_absent_directory(account, token_dir, tmp_path):
    Account.objects.filter(pk=account.pk).update(token_filename="../evil")

    assert export(account) is None

    assert list(tmp_path.iterdir()) == []  # not even the token directory was created
    account.refresh_from_db()
    assert "separator" in account.file_error


# --- when nothing is written --------------------------------------------------------


def test_export_disabled_writes_nothing(account, token_dir):
    Account.objects.filter(pk=account.pk).update(export_enabled=False)

    assert export(account) is None

    assert not token_dir.exists() or list(token_dir.iterdir()) == []
    assert not Event.objects.filter(action="export").exists()


def test_no_token_writes_nothing(app, token_dir):
    account = make_account(app, with_token=False)

    assert export(account) is None

    assert not token_dir.exists() or list(token_dir.iterdir()) == []


def test_short_lived_token_is_not_exported(app, token_dir):
    account = make_account(app, kind="short")

    assert export(account) is None

    assert not token_dir.exists() or list(token_dir.iterdir()) == []


def test_no_name_and_no_username_is_recorded(account, token_dir):
    Account.objects.filter(pk=account.pk).update(username="", token_filename="")

    assert export(account) is None

    account.refresh_from_db()
    assert "no token file name" in account.file_error
    assert not token_dir.exists() or list(token_dir.iterdir()) == []


def test_success_clears_an_earlier_error_and_records_the_time(account, token_dir):
    Account.objects.filter(pk=account.pk).update(file_error="Token file not written: old")
    later = NOW + timedelta(days=2)

    path = export(account, later)

    assert path == token_dir / USERNAME
    account.refresh_from_db()
    assert account.file_error == ""
    assert account.file_written_at == later
    event = Event.objects.get(account=account, action="export")
    assert event.outcome == "ok"
    assert event.actor_job == "test"
    assert TOKEN not in event.message


# --- the admin action ---------------------------------------------------------------


def test_admin_export_action_writes_the_file(account, token_dir, admin_client):
    response = admin_client.post(
        reverse("admin:accounts_account_changelist"),
        {"action": "export_action", "_selected_action": [account.pk]},
    )

    assert response.status_code == 302
    assert (token_dir / USERNAME).read_text() == TOKEN
    account.refresh_from_db()
    assert account.file_written_at is not None
    event = Event.objects.get(account=account, action="export")
    assert event.outcome == "ok"
    assert event.actor_user.username == "admin"


def test_export_does_not_overwrite_another_accounts_file(app, token_dir):
    owner = make_account(app, label="Owner")
    Account.objects.filter(pk=owner.pk).update(token_filename=USERNAME, username="alice",
                                               ig_user_id="1")
    other = Account.objects.create(app=app, label="Other")
    Account.objects.filter(pk=other.pk).update(username=USERNAME, ig_user_id="2")
    Token.objects.create(account=other, value=NEW_TOKEN, kind="long", obtained_at=NOW,
                         expires_at=NOW + timedelta(days=60))
    assert export(owner) == token_dir / USERNAME

    assert export(other) is None

    assert (token_dir / USERNAME).read_text() == TOKEN
    other.refresh_from_db()
    assert "belongs to account 'Owner'" in other.file_error
    assert other.file_state == "name_taken"
