"""manage.py token_status: one row per account, as a table or JSON."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandParser

from accounts import selectors
from accounts.management.output import terminal_safe


class Command(BaseCommand):
    help = ("One row per account: app, username, status, expiry, last refresh, last error "
            "and token file. --json for machines (format in README).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="A JSON array on stdout.")

    def handle(self, *args, **options) -> None:  # noqa: ANN002, ANN003
        rows = selectors.token_status_rows()
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        columns = ["id", "app", "label", "username", "status", "expires_at",
                   "last_refreshed_at", "token_file", "file_state", "last_error"]
        table = [[terminal_safe(row[c] if row[c] is not None else "-") for c in columns]
                 for row in rows]
        widths = [max([len(c)] + [len(r[i]) for r in table]) for i, c in enumerate(columns)]
        self.stdout.write("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
        for r in table:
            self.stdout.write("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
