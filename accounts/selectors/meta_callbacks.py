"""Reads for Meta's callbacks: the app a callback names, the callback URLs to paste at
Meta, and the data-deletion records the public status page shows."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Max
from django.urls import reverse

from ..models import DataDeletionRequest, Event, InstagramApp

# What `data_deletion_apply` issues (letters and digits), within the column's length.
_CONFIRMATION_CODE = re.compile(r"[A-Za-z0-9]{1,32}")


@dataclass(frozen=True)
class MetaCallbackUrls:
    """The absolute (SITE_URL) URLs to paste into the app's settings at Meta: its
    "Deauthorize callback URL" and its "Data deletion request URL"."""

    deauthorize: str
    data_deletion: str


def meta_callback_urls(*, app_pk: int) -> MetaCallbackUrls:
    """The app's two callback URLs, absolute from SITE_URL (no query; not secret)."""
    return MetaCallbackUrls(
        deauthorize=_absolute(reverse("meta-deauthorize", args=[app_pk])),
        data_deletion=_absolute(reverse("meta-data-deletion", args=[app_pk])),
    )


def data_deletion_status_url(*, confirmation_code: str) -> str:
    """The public status page of a data-deletion request, absolute from SITE_URL: what
    the data-deletion callback answers Meta, which shows it to the user."""
    return _absolute(reverse("meta-data-deletion-status", args=[confirmation_code]))


def instagram_app_for_callback(*, app_pk: int) -> InstagramApp | None:
    """The app a callback URL names, or None when there is none (the view's 404)."""
    return InstagramApp.objects.filter(pk=app_pk).first()


# The events `token_store` records when a token the owner granted lands (an authorization,
# by staff or through an owner link, or an import); a refresh records "refresh".
_GRANT_ACTIONS = ("authorize", "import")


def account_last_granted_at(*, account_id: int) -> datetime | None:
    """When a token the owner granted last landed for the account (its latest successful
    authorization or import), or None if none ever did. Not the token's `obtained_at`:
    every refresh moves that to its own time, and a refresh is no new consent."""
    return (Event.objects
            .filter(account_id=account_id, action__in=_GRANT_ACTIONS, outcome=Event.Outcome.OK)
            .aggregate(latest=Max("created_at"))["latest"])


def data_deletion_request_find(*, confirmation_code: str) -> DataDeletionRequest | None:
    """The data-deletion record with this confirmation code, or None for an unknown code
    or a text that cannot be one (not 1 to 32 ASCII letters or digits). Exact match."""
    if not _CONFIRMATION_CODE.fullmatch(confirmation_code):
        return None
    return DataDeletionRequest.objects.filter(confirmation_code=confirmation_code).first()


def _absolute(path: str) -> str:
    # Meta and the user's browser call these from outside: the public base URL, as the
    # alerts build theirs (a request's Host header is the caller's to choose).
    return f"{settings.SITE_URL}{path}"
