"""The append-only event log: read-only for everyone."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from ..models import Event
from .base import RegistryModelAdmin


@admin.register(Event)
class EventAdmin(RegistryModelAdmin):
    """The append-only log: read-only for everyone."""

    list_display = ["created_at", "account_label", "action", "outcome", "actor", "message"]
    list_filter = ["action", "outcome"]
    search_fields = ["account_label", "message"]
    date_hierarchy = "created_at"
    list_select_related = ["actor_user"]

    @admin.display(description="by")
    def actor(self, obj: Event) -> str:
        return obj.actor_user.get_username() if obj.actor_user else obj.actor_job or "—"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Event | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Event | None = None) -> bool:
        return False


