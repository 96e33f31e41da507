"""Encryption at rest for tokens and app secrets (Fernet, several keys).

The first key in settings.ENCRYPTION_KEYS encrypts; every listed key decrypts, so keys can
be rotated: add the new key first, run `manage.py rotate_encryption_keys`, then drop the
old one. https://cryptography.io/en/latest/fernet/#cryptography.fernet.MultiFernet
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


class DecryptionError(Exception):
    """A stored value could not be decrypted with any configured key."""


@lru_cache(maxsize=4)
def _multifernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("ENCRYPTION_KEYS is empty.")
    try:
        return MultiFernet([Fernet(key.strip().encode()) for key in keys])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            "ENCRYPTION_KEYS must hold Fernet keys (32 url-safe base64-encoded bytes); "
            "make one with `manage.py generate_encryption_key`."
        ) from exc


def _fernet() -> MultiFernet:
    return _multifernet(tuple(settings.ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    """Encrypt with the newest key."""
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    """Decrypt with whichever configured key fits; DecryptionError if none does."""
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise DecryptionError(
            "A stored secret could not be decrypted with any key in ENCRYPTION_KEYS."
        ) from None


def rotate(ciphertext: str) -> str:
    """Re-encrypt a stored value with the newest key (no-op in meaning, new bytes)."""
    try:
        return _fernet().rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise DecryptionError(
            "A stored secret could not be decrypted with any key in ENCRYPTION_KEYS."
        ) from None


class EncryptedTextField(models.TextField):
    """A text column stored Fernet-encrypted; Python code sees the plaintext.

    Not searchable (each encryption is randomised), so never filter on it.
    """

    def from_db_value(self, value, expression, connection):  # noqa: ANN001 - Django API
        if value is None or value == "":
            return value
        return decrypt(value)

    def get_prep_value(self, value):  # noqa: ANN001 - Django API
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt(value)
