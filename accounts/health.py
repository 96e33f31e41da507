"""Health and metrics: what /healthz, `manage.py healthcheck` and /metrics report. Reads only.

The checks run in threads joined against one deadline (HEALTH_CHECK_TIMEOUT_SECONDS): a
database or broker that accepts connections and never answers makes its check fail with
"timeout" instead of holding the answer back. The database checks use their thread's own
connection, closed when the thread ends, so a check left behind never touches the caller's.
A check says which part failed and how (an exception's class name), never how to reach it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import DatabaseError, connection
from kombu import Connection
from kombu.exceptions import ChannelError
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from . import selectors

_TIMEOUT = {"ok": False, "error": "timeout"}
_NO_DATABASE = {"ok": False, "error": "database unreachable"}


@dataclass
class HealthReport:
    """Each check's verdict and details; healthy only when every check passed."""

    checks: dict[str, dict] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return all(check["ok"] for check in self.checks.values())

    @property
    def failed(self) -> list[str]:
        """Names of the checks that failed, in report order."""
        return [name for name, check in self.checks.items() if not check["ok"]]

    def as_dict(self) -> dict:
        """The JSON document /healthz and `manage.py healthcheck` show."""
        return {"status": "ok" if self.healthy else "fail", "checks": self.checks}


def health_report(*, now: datetime) -> HealthReport:
    """Database reachable; broker reachable (with its queue depth, for information); last
    successful sweep recent enough; queued refreshes taken by a worker within
    REFRESH_QUEUE_MAX_LAG_MINUTES of their planned start (worker liveness).

    Returns within HEALTH_CHECK_TIMEOUT_SECONDS (plus thread start-up): a check without an
    answer by then fails with error "timeout"; the sweep and queue checks fail with
    "database unreachable" when the database check failed."""
    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    found: dict[str, dict] = {}
    lock = threading.Lock()

    def record(name: str, check: dict) -> None:
        with lock:
            found[name] = check

    deadline = time.monotonic() + timeout
    threads = [
        _start(lambda: _database_checks(record=record, now=now)),
        _start(lambda: record("broker", _broker_check(timeout=timeout))),
    ]
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))
    with lock:
        done = dict(found)  # what a late thread records from now on is ignored

    report = HealthReport()
    report.checks["database"] = done.get("database") or dict(_TIMEOUT)
    report.checks["broker"] = done.get("broker") or dict(_TIMEOUT)
    database_ok = report.checks["database"]["ok"]
    for name, bounds in (("sweep", _sweep_bounds()), ("refresh_queue", _queue_bounds())):
        report.checks[name] = done.get(name) or {
            **bounds, **(_TIMEOUT if database_ok else _NO_DATABASE)
        }
    return report


def _start(target: Callable[[], object]) -> threading.Thread:
    # Daemon: a check stuck past the deadline must not keep the process from exiting.
    thread = threading.Thread(target=target, name="health-check", daemon=True)
    thread.start()
    return thread


def _database_checks(*, record: Callable[[str, dict], None], now: datetime) -> None:
    """The database ping, then the checks that read from it, each recorded as it answers."""
    try:
        database = _guarded(_database_ping)
        record("database", database)
        if database["ok"]:
            record("sweep", _guarded(lambda: _sweep_check(now=now), _sweep_bounds()))
            record("refresh_queue", _guarded(lambda: _queue_check(now=now), _queue_bounds()))
    finally:
        connection.close()  # this thread's own connection; nobody else will close it


def _guarded(check: Callable[[], dict], bounds: dict | None = None) -> dict:
    try:
        return check()
    except DatabaseError as exc:
        # The class name only: driver messages can carry host names and user names.
        return {**(bounds or {}), "ok": False, "error": type(exc).__name__}


def _database_ping() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"ok": True}


def _sweep_bounds() -> dict:
    return {"max_age_seconds": int(settings.HEALTH_MAX_SWEEP_AGE_MINUTES * 60)}


def _sweep_check(*, now: datetime) -> dict:
    check = _sweep_bounds()
    last = selectors.sweep_state().last_succeeded_at
    if last is None:
        return {**check, "ok": False, "error": "no sweep has succeeded yet",
                "last_success": None}
    age = now - last
    return {**check, "ok": age <= timedelta(seconds=check["max_age_seconds"]),
            "last_success": last.isoformat(), "age_seconds": int(age.total_seconds())}


def _queue_bounds() -> dict:
    return {"max_lag_seconds": int(settings.REFRESH_QUEUE_MAX_LAG_MINUTES * 60)}


def _queue_check(*, now: datetime) -> dict:
    """Worker liveness: the sweep marks each refresh it hands to the broker and the attempt
    clears the mark, so a mark older than the bound means no worker is taking the queue
    (none running, or all stuck)."""
    check = _queue_bounds()
    backlog = selectors.refresh_backlog(now=now)
    oldest = backlog.oldest_due_at
    return {**check,
            "ok": backlog.lag_seconds <= check["max_lag_seconds"] and not backlog.unattended,
            "queued": backlog.queued, "lag_seconds": int(backlog.lag_seconds),
            "oldest_due_at": oldest.isoformat() if oldest else None,
            "unattended": backlog.unattended}


def _broker_check(*, timeout: float) -> dict:
    started = time.monotonic()
    try:
        with _broker_connection(timeout=timeout) as conn:
            conn.ensure_connection(max_retries=0, timeout=timeout)
            depth = _queue_depth(conn)
    except Exception as exc:  # kombu raises transport-specific errors; all mean "down"
        return {"ok": False, "error": type(exc).__name__}
    check: dict = {"ok": True, "seconds": round(time.monotonic() - started, 3)}
    if depth is not None:
        check["queue_depth"] = depth  # information: a long queue is not by itself a failure
    return check


def broker_queue_depth(*, timeout: float) -> int | None:
    """Messages waiting (not yet delivered to a worker) in Celery's default queue; None
    when the broker is down, cannot say, or takes longer than `timeout` seconds."""
    answer: list[int | None] = []

    def ask() -> None:
        try:
            with _broker_connection(timeout=timeout) as conn:
                conn.ensure_connection(max_retries=0, timeout=timeout)
                answer.append(_queue_depth(conn))
        except Exception:  # down or unsupported: the gauge is simply absent
            answer.append(None)

    _start(ask).join(timeout)
    return answer[0] if answer else None


def broker_queue_name() -> str:
    """The queue the refresh tasks go to (Celery's default queue)."""
    from igregistry.celery import app

    return app.conf.task_default_queue


def _broker_connection(*, timeout: float) -> Connection:
    """A connection of its own to the broker, with short socket timeouts on this connection
    only (the worker's and the publisher's connections keep theirs)."""
    from igregistry.celery import app

    url = settings.CELERY_BROKER_URL
    options: dict = {}
    if urlsplit(url).scheme in ("redis", "rediss"):
        options = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    return app.connection_for_write(url, transport_options=options, connect_timeout=timeout)


def _queue_depth(conn: Connection) -> int | None:
    """A passive declare answers with the message count (Redis, the filesystem transport,
    AMQP). A queue that does not exist holds nothing: Redis drops an empty list."""
    channel = conn.channel()
    try:
        _, count, _ = channel.queue_declare(queue=broker_queue_name(), passive=True)
    except ChannelError as exc:
        if str(getattr(exc, "reply_code", "")) == "404":
            return 0
        raise
    except NotImplementedError:
        return None
    finally:
        channel.close()
    return int(count)


class RegistryCollector:
    """Prometheus collector that reads the registry's state at scrape time, so every web
    process reports the same numbers whatever process did the work."""

    def collect(self) -> Iterator[Metric]:
        from django.utils import timezone

        now = timezone.now()
        accounts = GaugeMetricFamily("igregistry_accounts", "Accounts per state.",
                                     labels=["state"])
        for state, count in selectors.state_counts(now=now).items():
            accounts.add_metric([state], count)
        yield accounts

        earliest = selectors.earliest_expiry(now=now)
        expiry = GaugeMetricFamily(
            "igregistry_earliest_expiry_seconds",
            "Seconds until the earliest expiry among live tokens (absent when none).",
        )
        if earliest is not None:
            expiry.add_metric([], (earliest - now).total_seconds())
        yield expiry

        refreshes = CounterMetricFamily("igregistry_refreshes", "Refresh attempts by outcome.",
                                        labels=["outcome"])
        outcomes = selectors.refresh_outcome_counts()
        for outcome in ("ok", "failed"):
            refreshes.add_metric([outcome], outcomes.get(outcome, 0))
        yield refreshes

        last = selectors.sweep_state().last_succeeded_at
        sweep = GaugeMetricFamily("igregistry_last_sweep_success_timestamp_seconds",
                                  "Unix time of the last successful refresh sweep.")
        if last is not None:
            sweep.add_metric([], last.timestamp())
        yield sweep
        yield from self._queue_metrics(now=now)
        yield from self._alert_delivery_metrics()
        yield from self._webhook_delivery_metrics()

    def _queue_metrics(self, *, now: datetime) -> Iterator[Metric]:
        """Worker liveness: queued refreshes no worker has attempted, how late the oldest
        is, and (where the broker can say) how many messages wait in its queue."""
        backlog = selectors.refresh_backlog(now=now)
        lag = GaugeMetricFamily(
            "igregistry_refresh_queue_lag_seconds",
            "Seconds the longest-waiting queued refresh is past its planned start (0 if none).",
        )
        lag.add_metric([], backlog.lag_seconds)
        yield lag
        queued = GaugeMetricFamily(
            "igregistry_refreshes_queued",
            "Due refreshes handed to the broker that no worker has attempted yet.",
        )
        queued.add_metric([], backlog.queued)
        yield queued
        unattended = GaugeMetricFamily(
            "igregistry_refreshes_unattended",
            "Due tokens no sweep has queued for longer than a sweep interval plus the bound.",
        )
        unattended.add_metric([], backlog.unattended)
        yield unattended
        depth = GaugeMetricFamily(
            "igregistry_broker_queue_depth",
            "Messages waiting in the broker's queue (absent when the broker cannot say).",
            labels=["queue"],
        )
        waiting = broker_queue_depth(timeout=settings.HEALTH_CHECK_TIMEOUT_SECONDS)
        if waiting is not None:
            depth.add_metric([broker_queue_name()], waiting)
        yield depth

    def _alert_delivery_metrics(self) -> Iterator[Metric]:
        """The alert outbox per channel: deliveries delivered or abandoned, failed attempts,
        deliveries waiting to be sent. One query."""
        counts = selectors.alert_delivery_counts()
        deliveries = CounterMetricFamily(
            "igregistry_alert_deliveries", "Alert deliveries by channel and final outcome.",
            labels=["channel", "outcome"],
        )
        failures = CounterMetricFamily(
            "igregistry_alert_delivery_failures",
            "Failed alert delivery attempts by channel (each is retried until abandoned).",
            labels=["channel"],
        )
        pending = GaugeMetricFamily(
            "igregistry_alert_deliveries_pending",
            "Alert deliveries not yet delivered nor abandoned, by channel.",
            labels=["channel"],
        )
        for channel, count in counts.items():
            deliveries.add_metric([channel, "delivered"], count.delivered)
            deliveries.add_metric([channel, "abandoned"], count.abandoned)
            failures.add_metric([channel], count.failed_attempts)
            pending.add_metric([channel], count.pending)
        yield deliveries
        yield failures
        yield pending

    def _webhook_delivery_metrics(self) -> Iterator[Metric]:
        """The change webhooks' outbox: delivered and abandoned deliveries, failed
        attempts, deliveries waiting. One query."""
        count = selectors.webhook_delivery_counts()
        deliveries = CounterMetricFamily(
            "igregistry_webhook_deliveries",
            "Change webhooks to API keys' consumers by final outcome.", labels=["outcome"])
        deliveries.add_metric(["delivered"], count.delivered)
        deliveries.add_metric(["abandoned"], count.abandoned)
        yield deliveries
        failures = CounterMetricFamily(
            "igregistry_webhook_delivery_failures",
            "Failed change webhook attempts (each is retried until abandoned).")
        failures.add_metric([], count.failed_attempts)
        yield failures
        pending = GaugeMetricFamily(
            "igregistry_webhook_deliveries_pending",
            "Change webhooks not yet delivered nor abandoned.")
        pending.add_metric([], count.pending)
        yield pending
