"""manage.py refresh_tokens: the refresh sweep without Celery, for cron."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts import selectors, services
from accounts.models import Account
from accounts.services import Actor, Outcome


class Command(BaseCommand):
    help = (
        "Refresh every due token now, on the same code path as the Celery sweep (for "
        "people who run cron instead of Celery). Exits 1 if any refresh failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--account", action="append", default=[],
                            help="Only this account (id or exact label); repeatable.")
        parser.add_argument("--dry-run", action="store_true",
                            help="List what would be refreshed; change nothing.")
        parser.add_argument("--force", action="store_true",
                            help="Refresh even if not due yet (never a token under 24 hours "
                            "old or expired: Instagram refuses those).")

    def handle(self, *args, **options) -> None:  # noqa: ANN002, ANN003
        now = timezone.now()
        actor = Actor(job="command:refresh_tokens")
        candidates = (selectors.tokens_refreshable(now=now) if options["force"]
                      else selectors.tokens_due(now=now))
        if options["account"]:
            ids = []
            for key in options["account"]:
                try:
                    ids.append(selectors.account_find(key=key).pk)
                except (Account.DoesNotExist, Account.MultipleObjectsReturned):
                    raise CommandError(f"No single account with id or label {key!r}.")
            candidates = candidates.filter(account_id__in=ids)
        if options["dry_run"]:
            for token in candidates.select_related("account"):
                self.stdout.write(f"{token.account.label}: would refresh (expires "
                                  f"{token.expires_at:%Y-%m-%d %H:%M} UTC)")
            return
        plan = services.refresh_sweep(actor=actor, now=now)
        for account_id in plan.swap_ids:
            services.pending_swap(account_id=account_id, actor=actor, now=now)
        if plan.throttled_until:
            self.stderr.write(f"Paused: Instagram asked to slow down until "
                              f"{plan.throttled_until:%Y-%m-%d %H:%M} UTC.")
            candidates = candidates.none()
        failures = 0
        ids = list(candidates.values_list("account_id", flat=True))
        labels = dict(Account.objects.filter(pk__in=ids).values_list("pk", "label"))
        for account_id in ids:
            result = services.token_refresh(account_id=account_id, actor=actor, now=now,
                                            force=options["force"])
            self.stdout.write(f"{labels[account_id]}: {result.outcome}"
                              + (f" ({result.message})" if result.message else ""))
            if result.outcome not in (Outcome.REFRESHED, Outcome.NOT_DUE, Outcome.BUSY):
                failures += 1
        services.sweep_record_success(enqueued=len(ids), now=now)
        if failures:
            raise CommandError(f"{failures} of {len(ids)} refreshes failed; see the events.")
