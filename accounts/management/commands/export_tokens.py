"""manage.py export_tokens: write every token file (or only the out-of-date ones)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts import services
from accounts.services import Actor


class Command(BaseCommand):
    help = "Write every account's token file atomically. Exits 1 if any write failed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--only-out-of-date", action="store_true",
                            help="Only files that are missing, stale or have the wrong mode "
                            "or group (what the reconcile task does).")

    def handle(self, *args, **options) -> None:  # noqa: ANN002, ANN003
        report = services.token_files_reconcile(
            actor=Actor(job="command:export_tokens"), now=timezone.now(),
            rewrite_all=not options["only_out_of_date"],
        )
        self.stdout.write(f"{report.checked} checked, {report.rewritten} written, "
                          f"{report.failed} failed.")
        if report.failed:
            raise CommandError(f"{report.failed} token files could not be written; "
                               f"see each account's file error.")
