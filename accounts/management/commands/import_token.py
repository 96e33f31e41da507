"""manage.py import_token: adopt a token obtained by hand (the manual curl procedure)."""

from __future__ import annotations

import sys
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts import selectors, services
from accounts.management.output import terminal_safe
from accounts.models import Account, Token
from accounts.services import Actor, FlowError
from accounts.timeutil import parse_utc


class Command(BaseCommand):
    help = (
        "Import an existing access token for an account: checked with Instagram (/me), "
        "swapped if short-lived, stored encrypted and exported. The token is read from "
        "standard input (or --token-file), never from the command line, where `ps` shows it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--account", required=True, help="Account id or exact label.")
        parser.add_argument("--token-file", help="Read the token from this file instead of stdin.")
        parser.add_argument("--kind", choices=[k.value for k in Token.Kind], default="long")
        parser.add_argument(
            "--expires-at",
            help="Expiry of a long-lived token (ISO 8601, e.g. 2027-01-20T10:00:00Z). "
            "Without it the token is refreshed once to learn its expiry.",
        )

    def handle(self, *args, **options) -> None:  # noqa: ANN002, ANN003
        try:
            account = selectors.account_find(key=options["account"])
        except (Account.DoesNotExist, Account.MultipleObjectsReturned):
            raise CommandError(f"No single account with id or label {options['account']!r}.")
        expires_at = _parse_when(options["expires_at"]) if options["expires_at"] else None
        if options["token_file"]:
            try:
                with open(options["token_file"], encoding="utf-8") as handle:
                    raw = handle.read()
            except OSError as exc:
                raise CommandError(f"Cannot read {options['token_file']}: {exc.strerror}.")
        else:
            raw = sys.stdin.read()
        try:
            services.token_import(
                account=account,
                access_token=raw,
                kind=options["kind"],
                expires_at=expires_at,
                actor=Actor(job="command:import_token"),
                now=timezone.now(),
            )
        except FlowError as exc:
            raise CommandError(exc.message)
        summary = selectors.account_summary(account_id=account.pk, verb="imported")
        self.stdout.write(terminal_safe(summary.text))
        if not summary.file_ok:
            # The token is stored, but the website does not have it: cron must hear of it.
            raise CommandError("The token was stored but its file was not written; the "
                               "website still reads the old one. See the message above.")


def _parse_when(text: str) -> datetime:
    value = parse_utc(text)
    if value is None:
        raise CommandError(f"--expires-at: {text!r} is not an ISO 8601 date and time "
                           f"(e.g. 2027-01-20T10:00:00Z; without an offset it is read as UTC).")
    return value
