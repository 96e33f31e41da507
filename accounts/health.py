"""Health and metrics: what /healthz and /metrics report. Reads only."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from . import selectors


@dataclass
class HealthReport:
    """Each check's verdict and details; healthy only when every check passed."""

    checks: dict[str, dict] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return all(check["ok"] for check in self.checks.values())


def health_report(*, now: datetime) -> HealthReport:
    """Database reachable, broker reachable, last successful sweep recent enough."""
    report = HealthReport()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        report.checks["database"] = {"ok": True}
    except DatabaseError as exc:
        # The class name only: driver messages can carry host names and user names.
        report.checks["database"] = {"ok": False, "error": type(exc).__name__}
    report.checks["broker"] = _broker_check()
    report.checks["sweep"] = _sweep_check(now=now, database_ok=report.checks["database"]["ok"])
    return report


def _broker_check() -> dict:
    from igregistry.celery import app

    started = time.monotonic()
    try:
        with app.connection_for_write(settings.CELERY_BROKER_URL) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)
    except Exception as exc:  # kombu raises transport-specific errors; all mean "down"
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, "seconds": round(time.monotonic() - started, 3)}


def _sweep_check(*, now: datetime, database_ok: bool) -> dict:
    max_age = timedelta(minutes=settings.HEALTH_MAX_SWEEP_AGE_MINUTES)
    check: dict = {"max_age_seconds": int(max_age.total_seconds())}
    if not database_ok:
        return {**check, "ok": False, "error": "database unreachable"}
    last = selectors.sweep_state().last_succeeded_at
    if last is None:
        return {**check, "ok": False, "error": "no sweep has succeeded yet",
                "last_success": None}
    age = now - last
    return {**check, "ok": age <= max_age, "last_success": last.isoformat(),
            "age_seconds": int(age.total_seconds())}


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

        yield from self._alert_delivery_metrics()

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
