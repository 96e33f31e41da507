"""manage.py generate_encryption_key: print a new Fernet key for ENCRYPTION_KEYS."""

from __future__ import annotations

from cryptography.fernet import Fernet
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Print a new key for ENCRYPTION_KEYS (put it first; keep old keys until rotated)."

    def handle(self, *args, **options) -> None:  # noqa: ANN002, ANN003
        self.stdout.write(Fernet.generate_key().decode())
