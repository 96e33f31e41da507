"""Encryption at rest: raw columns, key rotation, unknown keys, key generation and the
production start-up checks."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import call_command
from django.db import connection

from accounts.crypto import DecryptionError
from accounts.models import Account, InstagramApp, Token

REPO_ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SECRET = "plain-app-secret-0123456789abcdef"
TOKEN = "IGAAplaintexttoken0123456789abcdefghijklmnopqrstuvwxyz"


def make_rows() -> tuple[InstagramApp, Token]:
    app = InstagramApp.objects.create(
        name="Test app", flavour="instagram_login", app_id="1000000000000001",
        app_secret=SECRET, redirect_uri="https://example.com/cb/",
    )
    account = Account.objects.create(app=app, label="Shop feed")
    token = Token.objects.create(account=account, value=TOKEN, kind="long", obtained_at=NOW,
                                 expires_at=NOW + timedelta(days=60))
    return app, token


def raw_secret(app: InstagramApp) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT app_secret FROM accounts_instagramapp WHERE id = %s", [app.pk])
        return cursor.fetchone()[0]


def raw_token(token: Token) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT value FROM accounts_token WHERE id = %s", [token.pk])
        return cursor.fetchone()[0]


def fernet_decrypt(key: str, ciphertext: str) -> str:
    return Fernet(key.encode()).decrypt(ciphertext.encode()).decode()


def read_back(app: InstagramApp, token: Token) -> tuple[str, str]:
    return (InstagramApp.objects.get(pk=app.pk).app_secret,
            Token.objects.get(pk=token.pk).value)


# --- at rest ------------------------------------------------------------------------


def test_raw_columns_hold_ciphertext_under_the_first_key(db, settings):
    first_key = settings.ENCRYPTION_KEYS[0]
    app, token = make_rows()

    stored_secret, stored_token = raw_secret(app), raw_token(token)

    assert SECRET not in stored_secret
    assert TOKEN not in stored_token
    assert fernet_decrypt(first_key, stored_secret) == SECRET
    assert fernet_decrypt(first_key, stored_token) == TOKEN
    assert read_back(app, token) == (SECRET, TOKEN)


def test_test_settings_configure_two_keys(settings):
    # Rotation is exercised by the suite only when two keys are configured.
    assert len(settings.ENCRYPTION_KEYS) == 2
    for key in settings.ENCRYPTION_KEYS:
        Fernet(key.encode())


def test_each_save_encrypts_afresh(db):
    app, _ = make_rows()
    first = raw_secret(app)

    app.save()

    assert raw_secret(app) != first  # Fernet is randomised
    assert InstagramApp.objects.get(pk=app.pk).app_secret == SECRET


def test_second_key_still_decrypts(db, settings):
    configured = list(settings.ENCRYPTION_KEYS)
    settings.ENCRYPTION_KEYS = [configured[1]]
    app, token = make_rows()
    settings.ENCRYPTION_KEYS = configured

    assert read_back(app, token) == (SECRET, TOKEN)


# --- rotation -----------------------------------------------------------------------


def test_key_rotation(db, settings):
    old_key = settings.ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [old_key]
    app, token = make_rows()
    assert fernet_decrypt(old_key, raw_secret(app)) == SECRET

    # The new key goes first; the old one still decrypts.
    settings.ENCRYPTION_KEYS = [new_key, old_key]
    assert read_back(app, token) == (SECRET, TOKEN)

    out = StringIO()
    call_command("rotate_encryption_keys", stdout=out)
    assert "Re-encrypted 2 secrets" in out.getvalue()

    for ciphertext, plaintext in ((raw_secret(app), SECRET), (raw_token(token), TOKEN)):
        assert fernet_decrypt(new_key, ciphertext) == plaintext
        with pytest.raises(InvalidToken):
            fernet_decrypt(old_key, ciphertext)

    # The old key can go now.
    settings.ENCRYPTION_KEYS = [new_key]
    assert read_back(app, token) == (SECRET, TOKEN)

    # Again: harmless.
    out = StringIO()
    call_command("rotate_encryption_keys", stdout=out)
    assert "Re-encrypted 2 secrets" in out.getvalue()
    assert fernet_decrypt(new_key, raw_secret(app)) == SECRET
    assert fernet_decrypt(new_key, raw_token(token)) == TOKEN
    assert read_back(app, token) == (SECRET, TOKEN)


def test_rotation_keeps_other_columns(db, settings):
    old_key = settings.ENCRYPTION_KEYS[0]
    settings.ENCRYPTION_KEYS = [old_key]
    app, token = make_rows()
    before_app = InstagramApp.objects.values().get(pk=app.pk)
    before_token = Token.objects.values().get(pk=token.pk)
    settings.ENCRYPTION_KEYS = [Fernet.generate_key().decode(), old_key]

    call_command("rotate_encryption_keys", stdout=StringIO())

    assert InstagramApp.objects.values().get(pk=app.pk) == before_app
    assert Token.objects.values().get(pk=token.pk) == before_token


def test_rotation_with_nothing_stored(db):
    out = StringIO()
    call_command("rotate_encryption_keys", stdout=out)
    assert "Re-encrypted 0 secrets" in out.getvalue()


# --- unknown key --------------------------------------------------------------------


def test_value_under_a_retired_key_raises_a_clean_error(db, settings):
    retired = Fernet.generate_key().decode()
    current = Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [retired]
    app, token = make_rows()
    settings.ENCRYPTION_KEYS = [current]

    for read in (lambda: InstagramApp.objects.get(pk=app.pk),
                 lambda: Token.objects.get(pk=token.pk)):
        with pytest.raises(DecryptionError) as excinfo:
            read()
        message = str(excinfo.value)
        assert "ENCRYPTION_KEYS" in message
        for material in (retired, current, retired[:20], current[:20], SECRET, TOKEN):
            assert material not in message
            assert material not in repr(excinfo.value)
        assert excinfo.value.__cause__ is None  # `from None`: no InvalidToken chained


# --- key generation -----------------------------------------------------------------


def test_generate_encryption_key_prints_a_fernet_key():
    out = StringIO()
    call_command("generate_encryption_key", stdout=out)
    key = out.getvalue().strip()

    fernet = Fernet(key.encode())
    assert fernet.decrypt(fernet.encrypt(b"x")) == b"x"
    assert out.getvalue() == key + "\n"

    again = StringIO()
    call_command("generate_encryption_key", stdout=again)
    assert again.getvalue().strip() != key


# --- production start-up ------------------------------------------------------------

SETUP = ("import django, os; os.environ['DJANGO_SETTINGS_MODULE']='igregistry.settings'; "
         "django.setup()")


def _production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    if (REPO_ROOT / ".env").exists():
        pytest.skip(f"{REPO_ROOT / '.env'} exists and would feed the settings; "
                    "this test needs a repository without a .env")
    env = {k: v for k, v in os.environ.items()
           if k not in {"SECRET_KEY", "ENCRYPTION_KEYS", "DEBUG", "DJANGO_SETTINGS_MODULE"}}
    env["DEBUG"] = "false"
    env["VAR_DIR"] = str(tmp_path / "var")
    env.update(extra)
    return env


def _setup(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SETUP], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)


def test_production_without_secret_key_fails(tmp_path):
    result = _setup(_production_env(tmp_path))

    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_production_without_encryption_keys_fails(tmp_path):
    result = _setup(_production_env(tmp_path, SECRET_KEY="production-secret-key-for-test"))

    assert result.returncode != 0
    assert "ENCRYPTION_KEYS must be set" in result.stderr


def test_production_with_both_starts(tmp_path):
    env = _production_env(tmp_path, SECRET_KEY="production-secret-key-for-test",
                          ENCRYPTION_KEYS=Fernet.generate_key().decode())

    result = _setup(env)

    assert result.returncode == 0, result.stderr
