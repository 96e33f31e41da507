"""Celery tasks. Thin: they take primary keys, call a service, and decide about retries.

No token or secret ever travels in a task's arguments: the broker is readable.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone
from kombu.exceptions import OperationalError

from . import services
from .services import Actor, Outcome

logger = logging.getLogger(__name__)


@shared_task(bind=True, max_retries=settings.REFRESH_MAX_RETRIES)
def refresh_account(self, account_id: int) -> str:  # noqa: ANN001
    """Refresh one account's token if it is due; retry temporary failures with back-off."""
    # Claimed under the task's id: this message, delivered again after its worker died,
    # takes the token over at once.
    result = services.token_refresh(
        account_id=account_id, actor=Actor(job="celery:refresh_account"), now=timezone.now(),
        claim=self.request.id or "",
    )
    return _retry_or_return(self, account_id, result)


# A chunk refreshes REFRESH_CONCURRENCY accounts at a time, each call bounded by the
# deadline; its time limit follows, and stays well inside Redis' visibility timeout.
_CHUNK_ROUNDS = -(-settings.REFRESH_CHUNK_SIZE // settings.REFRESH_CONCURRENCY)
CHUNK_SOFT_TIME_LIMIT = 60 + _CHUNK_ROUNDS * int(settings.INSTAGRAM_DEADLINE_SECONDS + 15)
CHUNK_TIME_LIMIT = CHUNK_SOFT_TIME_LIMIT + 30  # accounts.checks holds it to the broker's


@shared_task(bind=True, soft_time_limit=CHUNK_SOFT_TIME_LIMIT,
             time_limit=CHUNK_TIME_LIMIT)
def refresh_accounts(self, account_ids: list[int]) -> dict[str, int]:  # noqa: ANN001
    """Refresh a chunk of accounts, REFRESH_CONCURRENCY at a time (ids only, never a
    token). A temporary failure is retried by its own `refresh_account` task after its
    back-off; the rest is recorded by the refresh itself."""
    counts: dict[str, int] = {}
    actor = Actor(job="celery:refresh_accounts")
    for account_id, result in services.tokens_refresh_many(
            account_ids=account_ids, actor=actor, now=timezone.now(),
            claim=self.request.id or ""):  # see refresh_account
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
        if result.outcome == Outcome.RETRY:
            services.refresh_mark_queued(
                account_ids=[account_id],
                starts_at=[timezone.now() + timedelta(seconds=result.retry_in or 0)],
            )
            refresh_account.apply_async((account_id,), countdown=result.retry_in)
    return counts


@shared_task(bind=True, max_retries=settings.REFRESH_MAX_RETRIES)
def swap_pending_token(self, account_id: int) -> str:  # noqa: ANN001
    """Finish an interrupted authorization by swapping its short-lived token."""
    result = services.pending_swap(
        account_id=account_id, actor=Actor(job="celery:swap_pending_token"), now=timezone.now()
    )
    return _retry_or_return(self, account_id, result)


def _retry_or_return(task, account_id: int, result: services.RefreshResult) -> str:  # noqa: ANN001
    if result.outcome == Outcome.RETRY:
        if task.request.retries < task.max_retries:
            if task.name == refresh_account.name:
                services.refresh_mark_queued(
                    account_ids=[account_id],
                    starts_at=[timezone.now() + timedelta(seconds=result.retry_in or 0)],
                )
            raise task.retry(countdown=result.retry_in)
        logger.error(
            "account %s: giving up after %s retries; the next sweep tries again (%s)",
            account_id, task.request.retries, result.message,
        )
    elif result.outcome == Outcome.PAUSED:
        logger.info("account %s: %s", account_id, result.message)
    return result.outcome


# The sweep reads (and marks) this many chunks of due accounts at a time.
SWEEP_PAGE_CHUNKS = 16


@shared_task
def refresh_sweep() -> dict[str, int]:
    """Flag expired tokens and enqueue the due accounts' refreshes (ids only): in chunks
    of REFRESH_CHUNK_SIZE, each refreshed REFRESH_CONCURRENCY at a time by one worker; one
    task per account, spaced out, while Instagram asks us to slow down."""
    now = timezone.now()
    plan = services.refresh_sweep(actor=Actor(job="celery:refresh_sweep"), now=now)
    if plan.throttled_until:
        logger.warning("sweep paused: Instagram asked us to slow down until %s",
                       plan.throttled_until.isoformat())
    refreshes = 0
    try:
        # Page by page (memory stays flat), each page's queue markers committed in one
        # statement before its chunks are sent: a worker may take a task the moment it
        # is sent, and must find the marker to clear.
        size = settings.REFRESH_CHUNK_SIZE
        for page in plan.refresh_pages(size * SWEEP_PAGE_CHUNKS):
            if plan.spacing_seconds:
                # Instagram asked us to slow down: one task per account, spaced out.
                countdowns = [(refreshes + i) * plan.spacing_seconds for i in range(len(page))]
                services.refresh_mark_queued(
                    account_ids=page,
                    starts_at=[now + timedelta(seconds=seconds) for seconds in countdowns],
                )
                for account_id, countdown in zip(page, countdowns, strict=True):
                    refresh_account.apply_async((account_id,), countdown=countdown or None)
            else:
                services.refresh_mark_queued(account_ids=page, starts_at=[now] * len(page))
                for start in range(0, len(page), size):
                    refresh_accounts.apply_async((page[start:start + size],))
            refreshes += len(page)
        for account_id in plan.swap_ids:
            swap_pending_token.apply_async((account_id,))
    except OperationalError:
        # Loud on purpose: nothing was lost (the next sweep selects the same accounts),
        # but nobody is refreshing anything until the broker is back.
        logger.exception("sweep could not enqueue refreshes: the broker is unreachable")
        raise
    services.sweep_record_success(enqueued=refreshes + len(plan.swap_ids), now=now)
    logger.info("sweep enqueued %s refreshes and %s swaps, flagged %s",
                refreshes, len(plan.swap_ids), plan.flagged)
    return {"refresh": refreshes, "swap": len(plan.swap_ids), "flagged": plan.flagged}


@shared_task
def swap_pending_tokens() -> dict[str, int]:
    """Every few minutes: finish interrupted authorizations before their hour is up."""
    plan = services.pending_sweep(actor=Actor(job="celery:swap_pending_tokens"),
                                  now=timezone.now())
    for account_id in plan.swap_ids:
        swap_pending_token.apply_async((account_id,))
    return {"swap": len(plan.swap_ids), "flagged": plan.flagged}


@shared_task
def reconcile_token_files() -> dict[str, int]:
    """Rewrite token files that are missing, stale or have the wrong mode or group."""
    report = services.token_files_reconcile(
        actor=Actor(job="celery:reconcile_token_files"), now=timezone.now()
    )
    if report.rewritten or report.failed:
        logger.info("reconcile: %s checked, %s rewritten, %s failed",
                    report.checked, report.rewritten, report.failed)
    return {"checked": report.checked, "rewritten": report.rewritten, "failed": report.failed}


@shared_task
def send_alerts() -> dict[str, int]:
    """Tell staff about accounts (and the refresh workers) whose state changed, remind them
    of what lasts, and send or retry every alert delivery that is due."""
    report = services.alerts_dispatch(now=timezone.now())
    return {"alerts": report.alerts, "reminders": report.reminders, "resolved": report.resolved}


@shared_task
def send_webhooks() -> dict[str, int]:
    """Tell API keys' consumers which of their tokens changed (Standard Webhooks), and send
    or retry every change webhook that is due."""
    queued, report = services.token_webhooks_dispatch(now=timezone.now())
    return {"queued": queued, "delivered": len(report.delivered),
            "failed": len(report.failed), "abandoned": len(report.abandoned)}
