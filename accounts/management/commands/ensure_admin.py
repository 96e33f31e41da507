"""manage.py ensure_admin: create a first superuser for a local run, if there is none."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = (
        "When no superuser exists, create one (default name 'admin') with a random password "
        "written to VAR_DIR/admin-password.txt (mode 0600) and print where to find it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args, **options) -> None:  # noqa: ANN002, ANN003
        users = get_user_model()
        password_file = Path(settings.VAR_DIR) / "admin-password.txt"
        if users.objects.filter(is_superuser=True).exists():
            if password_file.exists():
                self.stdout.write(f"Admin login: see {password_file}")
            return
        password = secrets.token_urlsafe(12)
        users.objects.create_superuser(username=options["username"], password=password,
                                       email="")
        password_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"username: {options['username']}\npassword: {password}\n")
        self.stdout.write(
            f"Created superuser '{options['username']}'; password in {password_file}"
        )
