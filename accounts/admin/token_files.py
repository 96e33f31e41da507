"""Token files: which account writes which file; orphaned files wait for an operator."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from .. import selectors, services
from ..models import TokenFile
from ..services import Actor, FlowError
from .base import RegistryModelAdmin


class OrphanedFilter(admin.SimpleListFilter):
    """Orphaned means no account writes the file: renamed away, export off, or deleted."""

    title = "status"
    parameter_name = "orphaned"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list:
        return [("yes", "Orphaned"), ("no", "Current")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[TokenFile]) -> QuerySet:
        orphaned = selectors.token_files_orphaned().values("pk")
        if self.value() == "yes":
            return queryset.filter(pk__in=orphaned)
        if self.value() == "no":
            return queryset.exclude(pk__in=orphaned)
        return queryset


@admin.register(TokenFile)
class TokenFileAdmin(RegistryModelAdmin):
    """Read-only list; removing an orphaned file is the one action (delete permission)."""

    list_display = ["name", "owner", "state", "written_at", "orphaned_at"]
    list_filter = [OrphanedFilter]
    search_fields = ["name", "account_label"]
    list_select_related = ["account"]
    actions = ["remove_action"]

    @admin.display(description="status")
    def state(self, obj: TokenFile) -> str:
        if obj.account_id is None or obj.status == TokenFile.Status.ORPHANED:
            return "Orphaned: no account writes it"
        return "Written by its account"

    @admin.display(description="account")
    def owner(self, obj: TokenFile) -> str:
        return str(obj.account) if obj.account else f"{obj.account_label} (deleted)"

    @admin.action(description="Remove orphaned files from disk", permissions=["delete"])
    def remove_action(self, request: HttpRequest, queryset: QuerySet[TokenFile]) -> None:
        actor, now = Actor(user=request.user), timezone.now()
        for record in queryset:
            try:
                existed = services.token_file_remove(token_file=record, actor=actor, now=now)
            except FlowError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                self.message_user(request, f"Removed {record.name}" + (
                    "." if existed else " (it was no longer on disk)."), messages.SUCCESS)

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # removal goes through the service, logged
        return actions

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: TokenFile | None = None
                              ) -> bool:
        # Only through the action, which removes orphaned files from disk and refuses a
        # file an account still writes; Django's own delete page would drop the record
        # of who owns a live file and let another account write it.
        return obj is None and super().has_delete_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: TokenFile | None = None) -> bool:
        return False
