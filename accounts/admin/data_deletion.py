"""Meta's data-deletion requests: an audit record each, read-only for everyone."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from ..models import DataDeletionRequest
from .base import AppFilter, RegistryModelAdmin


@admin.register(DataDeletionRequest)
class DataDeletionRequestAdmin(RegistryModelAdmin):
    """What Meta asked and what the registry did (written by `data_deletion_apply` only).
    Holds no personal data: the user's id is not stored, only a keyed hash of the
    request."""

    list_display = ["received_at", "confirmation_code", "app", "status", "accounts_erased",
                    "completed_at"]
    list_filter = ["status", ("app", AppFilter)]
    search_fields = ["confirmation_code"]
    date_hierarchy = "received_at"
    fields = ["confirmation_code", "app", "status", "accounts_erased", "received_at",
              "completed_at"]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[DataDeletionRequest]:
        # The app's name only: its secret is never decrypted for this list.
        return super().get_queryset(request).select_related("app").defer("app__app_secret")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest,
                              obj: DataDeletionRequest | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest,
                              obj: DataDeletionRequest | None = None) -> bool:
        return False
