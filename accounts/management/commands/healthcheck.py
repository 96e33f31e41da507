"""manage.py healthcheck: /healthz's report on stdout, exit status 1 when unhealthy."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts import health


class Command(BaseCommand):
    help = ("Run /healthz's checks (database, broker, sweep age, worker liveness) and print "
            "its JSON report; exit 1 when unhealthy. For cron where no uptime monitor "
            "watches /healthz: --quiet prints only a failing report, so cron mails only then.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--quiet", action="store_true",
                            help="Print nothing when healthy.")

    def handle(self, *args, **options) -> None:  # noqa: ANN002, ANN003
        report = health.health_report(now=timezone.now())
        if not (report.healthy and options["quiet"]):
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        if not report.healthy:
            raise CommandError(f"unhealthy: {', '.join(report.failed)}", returncode=1)
