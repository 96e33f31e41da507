"""The sync command for the website's host (sync/igregistry_sync.py, issue 12 item 3), run
as its own process against a running registry (live server) over HTTP: the file on its
side follows a refresh, polls cost a 304, and an outage or a refusal leaves the last good
file in place."""

from __future__ import annotations

import ast
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.utils import timezone

from accounts import services
from accounts.models import ApiKey
from accounts.services import Actor
from tests.conftest import active_account

SCRIPT = Path(__file__).resolve().parent.parent / "sync" / "igregistry_sync.py"


def run(*args: str, key: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess:
    # Only what a website's host has: no Django settings, no database URL.
    env = {"PATH": os.environ.get("PATH", ""), "IGREGISTRY_API_KEY": key}
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def registry(live_server, fake, login_app, token_dir, transactional_db):  # noqa: ANN001
    feed = active_account(fake, login_app, "Shop feed", exported=True)
    _, key, _ = services.api_key_create(name="website", accounts=[feed], user=None,
                                        now=timezone.now())
    return {"url": live_server.url, "feed": feed, "key": key}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_command_imports_neither_django_nor_the_registry():
    tree = ast.parse(SCRIPT.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"django", "accounts", "igregistry"}
    assert "requests" in imported


def test_the_file_follows_a_refresh_and_polls_cost_a_304(registry, tmp_path):
    site = tmp_path / "site"
    args = ("--registry", registry["url"], "--dir", str(site), "--account", "shop_feed",
            "--mode", "0640")
    first = run(*args, key=registry["key"])
    assert first.returncode == 0, first.stderr
    path = site / "shop_feed"
    feed = registry["feed"]
    assert path.read_text() == feed.token.value
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert "shop_feed: written" in first.stdout
    assert not [p for p in site.iterdir() if p.name.endswith(".tmp")]

    again = run(*args, key=registry["key"])
    assert again.returncode == 0 and "written" not in again.stdout  # a 304

    result = services.token_refresh(account_id=feed.pk, actor=Actor(job="test"),
                                    now=timezone.now(), force=True)
    assert result.outcome == services.Outcome.REFRESHED
    feed.token.refresh_from_db()
    followed = run(*args, key=registry["key"])
    assert followed.returncode == 0, followed.stderr
    assert path.read_text() == feed.token.value != ""


def test_a_file_removed_on_disk_is_written_again_despite_the_etag(registry, tmp_path):
    site = tmp_path / "site"
    args = ("--registry", registry["url"], "--dir", str(site), "--account", "shop_feed:x.txt")
    assert run(*args, key=registry["key"]).returncode == 0
    (site / "x.txt").unlink()
    assert run(*args, key=registry["key"]).returncode == 0
    assert (site / "x.txt").read_text() == registry["feed"].token.value


def test_json_format_as_the_registry_writes_it(registry, tmp_path):
    site = tmp_path / "site"
    done = run("--registry", registry["url"], "--dir", str(site), "--account",
               str(registry["feed"].pk) + ":feed.json", "--format", "json", key=registry["key"])
    assert done.returncode == 0, done.stderr
    document = json.loads((site / "feed.json").read_text())
    feed = registry["feed"]
    assert document == {"access_token": feed.token.value,
                        "expires_at": feed.token.expires_at.isoformat(),
                        "id": feed.ig_id, "user_id": None, "username": "shop_feed"}


def test_an_outage_or_a_refusal_leaves_the_last_good_file(registry, tmp_path):
    site = tmp_path / "site"
    good = ("--dir", str(site), "--account", "shop_feed")
    assert run("--registry", registry["url"], *good, key=registry["key"]).returncode == 0
    path = site / "shop_feed"
    before = path.read_bytes()

    down = run("--registry", f"http://127.0.0.1:{closed_port()}", *good, key=registry["key"])
    assert down.returncode == 1
    assert "cannot reach the registry" in down.stderr
    assert path.read_bytes() == before

    wrong = run("--registry", registry["url"], *good, key="igr_wrong-key-0000000000000000")
    assert wrong.returncode == 1 and "answered 401" in wrong.stderr
    assert path.read_bytes() == before

    services.api_key_revoke(key=ApiKey.objects.get(), user=None, now=timezone.now())
    revoked = run("--registry", registry["url"], *good, key=registry["key"])
    assert revoked.returncode == 1 and "answered 401" in revoked.stderr
    assert path.read_bytes() == before
    assert registry["key"] not in revoked.stderr + revoked.stdout


def test_a_dead_token_given_as_null_does_not_empty_the_file(registry, tmp_path, settings):
    from accounts.models import Account

    site = tmp_path / "site"
    args = ("--registry", registry["url"], "--dir", str(site), "--account", "shop_feed")
    assert run(*args, key=registry["key"]).returncode == 0
    before = (site / "shop_feed").read_bytes()
    settings.TOKEN_FILE_DEAD_TOKEN = "empty"
    Account.objects.filter(pk=registry["feed"].pk).update(status="needs_reauth")
    dead = run(*args, key=registry["key"])
    assert dead.returncode == 1 and "no usable token" in dead.stderr
    assert (site / "shop_feed").read_bytes() == before


def test_a_file_that_cannot_be_written_is_a_failure(registry, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    failed = run("--registry", registry["url"], "--dir", str(blocker / "site"), "--account",
                 "shop_feed", key=registry["key"])
    assert failed.returncode == 1 and "cannot write" in failed.stderr


@pytest.mark.parametrize("args", [
    ("--account", "../etc/passwd"),
    ("--account", "shop:../x"),
    ("--mode", "rw"),
    ("--mode", "01777"),
])
def test_bad_arguments_exit_2_with_a_reason(tmp_path, args):
    done = run("--registry", "http://127.0.0.1:1", "--dir", str(tmp_path),
               *(("--account", "shop_feed") if args[0] != "--account" else ()), *args,
               key="igr_x")
    assert done.returncode == 2 and "igregistry-sync: error:" in done.stderr


def test_no_key_is_a_usage_error(tmp_path):
    done = run("--registry", "http://127.0.0.1:1", "--dir", str(tmp_path), "--account", "a")
    assert done.returncode == 2 and "no API key" in done.stderr


def test_a_new_format_mode_or_an_outside_chmod_is_applied_despite_the_etag(registry, tmp_path):
    site = tmp_path / "site"
    base = ("--registry", registry["url"], "--dir", str(site), "--account", "shop_feed")
    path = site / "shop_feed"
    assert run(*base, "--format", "json", key=registry["key"]).returncode == 0
    assert json.loads(path.read_text())["access_token"] == registry["feed"].token.value
    # Same token (the registry would answer 304), another format asked: rewritten.
    assert run(*base, "--format", "text", key=registry["key"]).returncode == 0
    assert path.read_text() == registry["feed"].token.value
    assert run(*base, "--mode", "0600", key=registry["key"]).returncode == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o666)  # someone made it world-readable
    assert run(*base, "--mode", "0600", key=registry["key"]).returncode == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_state_file_of_another_shape_is_survived(registry, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / ".igregistry-sync.json").write_text('{"shop_feed": "x", "other": [1]}')
    done = run("--registry", registry["url"], "--dir", str(site), "--account", "shop_feed",
               key=registry["key"])
    assert done.returncode == 0, done.stderr
    assert (site / "shop_feed").read_text() == registry["feed"].token.value


def test_two_accounts_into_one_file_is_a_usage_error(tmp_path):
    done = run("--registry", "http://127.0.0.1:1", "--dir", str(tmp_path), "--account", "1:dup",
               "--account", "2:dup", key="igr_x")
    assert done.returncode == 2 and "already another account's" in done.stderr


def test_an_account_without_a_token_file_is_synced_by_its_name(registry, tmp_path):
    """Export off at the registry (the website is elsewhere): the API gives no token
    file name, and the account is still found and written under the name asked for."""
    from accounts.models import Account

    Account.objects.filter(pk=registry["feed"].pk).update(export_enabled=False)
    site = tmp_path / "site"
    done = run("--registry", registry["url"], "--dir", str(site), "--account", "shop_feed",
               key=registry["key"])
    assert done.returncode == 0, done.stderr
    assert (site / "shop_feed").read_text() == registry["feed"].token.value
