"""System checks (`manage.py check`, run by `runserver` and `migrate` too) for settings
whose combination, not any one value, is wrong."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Warning, register


@register()
def chunk_time_within_visibility(app_configs, **kwargs) -> list[Warning]:  # noqa: ANN001, ANN003
    """A chunk task may run for its time limit; Redis delivers a message again once it has
    been out for CELERY_VISIBILITY_TIMEOUT, so the limit must stay well inside it (else a
    second worker may start the same chunk while the first still runs)."""
    from .tasks import CHUNK_TIME_LIMIT

    visibility = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}).get(
        "visibility_timeout", 3600)
    if visibility >= CHUNK_TIME_LIMIT * 2:
        return []
    return [Warning(
        f"A refresh chunk task may run {CHUNK_TIME_LIMIT} s (REFRESH_CHUNK_SIZE "
        f"{settings.REFRESH_CHUNK_SIZE} in rounds of REFRESH_CONCURRENCY "
        f"{settings.REFRESH_CONCURRENCY}, each up to INSTAGRAM_DEADLINE_SECONDS), more than "
        f"half of CELERY_VISIBILITY_TIMEOUT ({visibility} s): Redis could hand the same "
        f"chunk to a second worker while the first still runs it.",
        hint="Lower REFRESH_CHUNK_SIZE, raise REFRESH_CONCURRENCY, or raise "
             "CELERY_VISIBILITY_TIMEOUT.",
        id="accounts.W001",
    )]
