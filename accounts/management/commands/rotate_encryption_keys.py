"""manage.py rotate_encryption_keys: re-encrypt every secret with the newest key."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from accounts import services


class Command(BaseCommand):
    help = (
        "Re-encrypt every app secret and token with the first key of ENCRYPTION_KEYS. "
        "Put the new key first, run this, then remove the old key. Safe to run again."
    )

    def handle(self, *args, **options) -> None:  # noqa: ANN002, ANN003
        count = services.secrets_reencrypt()
        self.stdout.write(f"Re-encrypted {count} secrets with the newest key.")
