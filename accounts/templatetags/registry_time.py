"""Template filters for the one way pages show a time (accounts.timeutil).

`{% load registry_time %}`, then `{{ value|when }}` (`2027-01-27 20:25 UTC`),
`{{ value|days_left }}` (`58 days left`, `2 days ago`) or `{{ value|deadline }}` (both).
"""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone

from ..timeutil import days_text, deadline_text, local_text

register = template.Library()


@register.filter
def when(value: datetime | None) -> str:
    """The minute in the configured time zone, labelled; '' for None."""
    return local_text(value) if isinstance(value, datetime) else ""


@register.filter
def days_left(value: datetime | None) -> str:
    """`58 days left` / `2 days ago` from now; '' for None."""
    return days_text(value, now=timezone.now()) if isinstance(value, datetime) else ""


@register.filter
def deadline(value: datetime | None) -> str:
    """`2027-01-27 20:25 UTC (58 days left)`; '' for None."""
    return deadline_text(value, now=timezone.now()) if isinstance(value, datetime) else ""
