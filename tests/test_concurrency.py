"""Refreshes overlap their round trips to Instagram: bounded by REFRESH_CONCURRENCY, held
by a rate-limit pause, and still exactly once, on the cron path and in Celery's chunks.

PostgreSQL: the threads use connections of their own, so the rows are committed
(transactional_db); SQLite always refreshes one at a time."""

from __future__ import annotations

import contextlib
import io
import time

import pytest
from django.core.management import CommandError, call_command

from tests.conftest import active_account, make_app
from tests.fake_instagram import delay, rate_limited
from tests.test_refresh_celery import (
    CHUNK_TASK,
    broker,  # noqa: F401  (fixture)
    queued_messages,
    run_in_threads,
)

REFRESH = "/refresh_access_token"


@pytest.fixture
def accounts(postgres, transactional_db, fake):
    app = make_app(fake, "instagram_login")
    return [active_account(fake, app, f"Shop {i}") for i in range(12)]


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_refresh_tokens_overlaps_calls_up_to_the_setting(accounts, fake, in_flight, settings):
    settings.REFRESH_CONCURRENCY = 4
    fake.inject(REFRESH, *[delay(0.4) for _ in accounts])
    started = time.monotonic()
    out = run("refresh_tokens")
    elapsed = time.monotonic() - started
    assert out.count("refreshed") == len(accounts)
    assert in_flight["most"] == 4  # overlapping, never more than the setting
    assert elapsed < len(accounts) * 0.4 / 2  # one after another would take 4.8 s
    assert len(fake.calls(REFRESH)) == len(accounts)


def test_a_pause_that_begins_mid_run_stops_the_calls(accounts, fake, in_flight, settings):
    settings.REFRESH_CONCURRENCY = 4
    fake.inject(REFRESH, *[rate_limited() for _ in range(4)])
    with pytest.raises(CommandError, match="deferred by Instagram's rate-limit pause"):
        run("refresh_tokens")
    # Only what was already in flight when the pause began reached Instagram.
    assert len(fake.calls(REFRESH)) <= 4


def test_two_concurrent_runs_refresh_each_token_once(accounts, fake, settings):
    settings.REFRESH_CONCURRENCY = 4
    fake.inject(REFRESH, *[delay(0.2) for _ in accounts])

    def one_run() -> None:
        # Either run may find rows the other holds ("busy"): its exit status is not the point.
        with contextlib.suppress(CommandError):
            run("refresh_tokens")

    run_in_threads(2, one_run)
    tokens = [call.query.get("access_token") for call in fake.calls(REFRESH)]
    assert len(tokens) == len(set(tokens)) == len(accounts)


def test_the_sweep_hands_out_chunks_of_the_configured_size(broker, accounts, settings):  # noqa: F811
    from accounts import tasks

    settings.REFRESH_CHUNK_SIZE = 5
    assert tasks.refresh_sweep()["refresh"] == len(accounts)
    chunks = [m["args"][0] for m in queued_messages(broker) if m["task"] == CHUNK_TASK]
    assert sorted(len(chunk) for chunk in chunks) == [2, 5, 5]
    assert sorted(i for chunk in chunks for i in chunk) == sorted(a.pk for a in accounts)
