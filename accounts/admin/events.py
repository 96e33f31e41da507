"""The append-only event log: read-only for everyone."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from ..models import Event
from ..return_to import safe_next
from .base import KeepsNextChangeList, RegistryModelAdmin


@admin.register(Event)
class EventAdmin(RegistryModelAdmin):
    """The append-only log: read-only for everyone."""

    # The message (with its guidance) early, where it is seen without scrolling sideways.
    list_display = ["created_at", "account_label", "action", "outcome", "message", "actor"]
    list_filter = ["action", "outcome"]
    search_fields = ["account_label", "message"]
    date_hierarchy = "created_at"
    list_select_related = ["actor_user"]
    change_list_template = "admin/accounts/event/change_list.html"

    def get_changelist(self, request: HttpRequest, **kwargs: object) -> type:
        return KeepsNextChangeList

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None
                        ) -> HttpResponse:
        # Opened from the dashboard's History: a way back to that page, as it was.
        extra_context = {**(extra_context or {}), "back_url": safe_next(request)}
        return super().changelist_view(request, extra_context)

    @admin.display(description="by")
    def actor(self, obj: Event) -> str:
        if obj.actor_user:
            return obj.actor_user.get_username()
        # "celery:refresh_accounts:<task id>" is told apart by its first two parts; the
        # whole is in the cell's title.
        job = obj.actor_job or "—"
        short = ":".join(job.split(":")[:2])
        return format_html('<span title="{}">{}</span>', job, short) if short != job else job

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Event | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Event | None = None) -> bool:
        return False


