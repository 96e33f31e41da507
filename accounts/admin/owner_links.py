"""Owner authorization links: a read-only list (never the hash), and revoking for those
who may authorize. Links are created from the account's page (`account_pages`).

Who may do what follows the account's permissions, since a link is a way to authorize
an account: whoever may view accounts sees the links, whoever may authorize them
(`accounts.authorize_account`, the operators) revokes them. Nobody adds, edits or
deletes a link here: the list is its history.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from .. import selectors, services
from ..models import OwnerLink
from ..selectors import OwnerLinkState
from .base import AppFilter, RegistryModelAdmin


class OwnerLinkStateFilter(admin.SimpleListFilter):
    """Open, used, expired or revoked, now."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list:
        return list(OwnerLinkState.LABELS.items())

    def queryset(self, request: HttpRequest, queryset: QuerySet[OwnerLink]) -> QuerySet:
        if self.value() not in OwnerLinkState.LABELS:
            return queryset
        # get_queryset annotates `state` (owner_links_with_state).
        return queryset.filter(state=self.value())


@admin.register(OwnerLink)
class OwnerLinkAdmin(RegistryModelAdmin):
    list_display = ["account", "created_by", "created_at", "expires_at", "state", "used_at",
                    "revoked_by"]
    list_filter = [OwnerLinkStateFilter, ("account__app", AppFilter)]
    search_fields = ["account__label"]
    list_select_related = ["account", "created_by", "revoked_by"]
    date_hierarchy = "created_at"
    # The hash is left out everywhere: it is what the secret is checked against.
    fields = ["account", "created_by", "created_at", "expires_at", "state", "used_at",
              "revoked_at", "revoked_by"]
    readonly_fields = fields
    actions = ["revoke_action"]

    @admin.display(description="state", ordering="state")
    def state(self, obj: OwnerLink) -> str:
        return OwnerLinkState.LABELS.get(obj.state, obj.state)

    def get_queryset(self, request: HttpRequest) -> QuerySet[OwnerLink]:
        return selectors.owner_links_with_state(now=timezone.now(),
                                                queryset=super().get_queryset(request))

    # --- permissions: those of the account ---
    def has_view_permission(self, request: HttpRequest, obj: OwnerLink | None = None) -> bool:
        return request.user.is_active and request.user.has_perm("accounts.view_account")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.has_perm("accounts.authorize_account")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: OwnerLink | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: OwnerLink | None = None) -> bool:
        return False

    @admin.action(description="Revoke selected links", permissions=["revoke"])
    def revoke_action(self, request: HttpRequest, queryset: QuerySet[OwnerLink]) -> None:
        now, revoked, skipped = timezone.now(), 0, 0
        for link in queryset:
            if services.owner_link_revoke(link=link, user=request.user, now=now):
                revoked += 1
            else:
                skipped += 1
        if revoked:
            self.message_user(request, f"Revoked {revoked} link{'s' if revoked != 1 else ''}.",
                              messages.SUCCESS)
        if skipped:
            self.message_user(request, f"{skipped} link{'s were' if skipped != 1 else ' was'} "
                              f"already used or revoked: left as they were.", messages.WARNING)
