"""manage.py refresh_tokens: the refresh sweep without Celery, for cron."""

from __future__ import annotations

import argparse

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count, Max
from django.utils import timezone

from accounts import selectors, services
from accounts.management.output import terminal_safe
from accounts.models import Account
from accounts.services import Actor, Outcome
from accounts.timeutil import utc_text


def _concurrency(text: str) -> int:
    """--concurrency: 1-64, as REFRESH_CONCURRENCY (what Instagram sees at most)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"must be 1-64, not {value}")
    return value


# Results printed (and their accounts read) this many at a time.
REPORT_BATCH = 64


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
        parser.add_argument("--concurrency", type=_concurrency, default=None,
                            help="Refresh calls in flight at once, 1-64 (default "
                            "REFRESH_CONCURRENCY).")
        parser.add_argument("--force", action="store_true",
                            help="Refresh even if not due yet (never a token under 24 hours "
                            "old or expired: Instagram refuses those).")

    def handle(self, *args, **options) -> None:  # noqa: ANN002, ANN003
        now = timezone.now()
        actor = Actor(job="command:refresh_tokens")
        candidates = (selectors.tokens_refreshable(now=now) if options["force"]
                      else selectors.tokens_due(now=now))
        chosen = self._chosen_ids(options["account"])
        if chosen is not None:
            candidates = candidates.filter(account_id__in=chosen)
            # Say why an account asked for by name is left alone, rather than nothing.
            left = set(chosen) - set(candidates.values_list("account_id", flat=True))
            for account in (Account.objects.filter(pk__in=left).select_related("token")
                            .defer("token__value").order_by("label")):
                why = self._why_left(account, now=now, force=options["force"])
                self.stdout.write(terminal_safe(f"{account.label}: {why}"))
        if options["dry_run"]:
            would = 0
            for token in candidates.select_related("account"):
                would += 1
                self.stdout.write(f"{terminal_safe(token.account.label)}: would refresh (expires "
                                  f"{utc_text(token.expires_at)})")
            if not would:
                self.stdout.write("Nothing is due: no token would be refreshed now.")
            return
        failures = 0
        if chosen is None:
            # The whole sweep: flags expired tokens, finds interrupted authorizations.
            plan = services.refresh_sweep(actor=actor, now=now)
            swap_ids, throttled_until = plan.swap_ids, plan.throttled_until
        else:
            swap_ids = list(selectors.pending_tokens(now=now).filter(account_id__in=chosen)
                            .values_list("account_id", flat=True))
            state = selectors.sweep_state()
            throttled_until = state.throttled_until if (
                state.throttled_until and state.throttled_until > now) else None
        failures += self._report_many(
            [(account_id, services.pending_swap(account_id=account_id, actor=actor, now=now))
             for account_id in swap_ids], "swap")
        ids = list(candidates.values_list("account_id", flat=True))
        deferred = 0
        if throttled_until:
            deferred = len(ids)
            self.stderr.write(f"Paused: Instagram asked to slow down until "
                              f"{utc_text(throttled_until)}; {deferred} due "
                              f"refresh(es) not attempted.")
            ids = []
        batch: list[tuple[int, services.RefreshResult]] = []
        for item in services.tokens_refresh_many(
                account_ids=ids, actor=actor, now=now, force=options["force"],
                concurrency=options["concurrency"]):
            if item[1].outcome == Outcome.PAUSED:
                # Instagram rate-limited an earlier refresh of this run: stop calling it.
                deferred += 1
            batch.append(item)
            if len(batch) == REPORT_BATCH:
                failures += self._report_many(batch, "refresh")
                batch = []
        failures += self._report_many(batch, "refresh")
        if chosen is None:
            services.sweep_record_success(enqueued=len(ids) + len(swap_ids), now=now)
            claimed = selectors.tokens_claimed(now=now).aggregate(
                n=Count("pk"), lapse=Max("refresh_claimed_until"))
            if claimed["n"]:
                self.stdout.write(f"{claimed['n']} token(s) left alone: another run or "
                                  f"worker is refreshing them (their claims lapse by "
                                  f"{utc_text(claimed['lapse'])} if it died).")
        problems = []
        if failures:
            problems.append(f"{failures} of {len(ids) + len(swap_ids)} refreshes failed or "
                            f"left a token file unwritten; see the events")
        if deferred:
            problems.append(f"{deferred} due refresh(es) deferred by Instagram's rate-limit "
                            f"pause; the next run after it takes them")
        if problems:
            raise CommandError("; ".join(problems) + ".")

    def _why_left(self, account: Account, *, now, force: bool) -> str:  # noqa: ANN001
        """Why an account asked for by name is not refreshed by this run."""
        token = getattr(account, "token", None)
        if token is not None and token.refresh_claimed_until and token.refresh_claimed_until > now:
            return (f"busy: another run or worker is refreshing it (its claim lapses at "
                    f"{utc_text(token.refresh_claimed_until)} if it died)")
        if token is None or not selectors.tokens_refreshable(now=now).filter(
                pk=token.pk).exists():
            return ("not refreshable now: Instagram refreshes only a long-lived token at "
                    "least 24 hours old and unexpired, of an authorized account")
        if token.next_attempt_at and token.next_attempt_at > now:
            return (f"waiting until {utc_text(token.next_attempt_at)}: backing off after a "
                    f"temporary failure or Instagram's rate-limit pause (--force refreshes it "
                    f"anyway)")
        return "not due (--force refreshes it anyway)"

    def _chosen_ids(self, keys: list[str]) -> list[int] | None:
        if not keys:
            return None
        ids = []
        for key in keys:
            try:
                ids.append(selectors.account_find(key=key).pk)
            except (Account.DoesNotExist, Account.MultipleObjectsReturned):
                raise CommandError(f"No single account with id or label {key!r}.")
        return ids

    def _report_many(self, results: list[tuple[int, services.RefreshResult]],
                     what: str) -> int:
        """Print one line per account (one query for them all); return how many count as
        failures (exit status 1)."""
        accounts = Account.objects.only("label", "file_error").in_bulk(
            [account_id for account_id, _ in results])
        return sum(self._report(accounts[account_id], what, result)
                   for account_id, result in results if account_id in accounts)

    def _report(self, account: Account, what: str, result: services.RefreshResult) -> int:
        """Print one line; return 1 if it counts as a failure (exit status 1)."""
        line = f"{account.label}: " + (f"{what} " if what != "refresh" else "") + result.outcome
        failed = result.outcome not in (
            Outcome.REFRESHED, Outcome.NOT_DUE, Outcome.BUSY, Outcome.PAUSED
        )
        if result.message:
            line += f" ({result.message})"
        if result.outcome == Outcome.REFRESHED and account.file_error:
            line += f" but {account.file_error}"
            failed = True
        self.stdout.write(terminal_safe(line))
        return int(failed)
