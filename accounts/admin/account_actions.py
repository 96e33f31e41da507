"""What may be done to accounts from the list (and the dashboard's buttons), and who may.

Each action declares its permission; Django offers an action only to users for whom the
matching `has_<name>_permission` answers yes, and refuses it to everyone else even when
posted by hand. The permissions (accounts.models.Account.Meta.permissions) and who holds
them (the *viewers* and *operators* groups) are listed in README, "Roles".
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils import timezone

from .. import selectors, services
from ..models import Account
from ..return_to import safe_next
from ..services import Actor, FlowError, Outcome


class AccountActionsMixin:
    """The account list's actions, and the permission checks every account page shares."""

    actions = ["authorize_action", "refresh_action", "verify_action", "export_action"]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None
                        ) -> HttpResponse:
        """Django's list; an action posted with a safe `next` (the dashboard's buttons)
        returns there rather than to the list, whether it succeeded or was refused. An
        action that answers with a page of its own (Authorize) keeps it."""
        response = super().changelist_view(request, extra_context)
        back = safe_next(request) if request.method == "POST" else None
        if (back is not None and isinstance(response, HttpResponseRedirect)
                and response.url == request.get_full_path()):
            return HttpResponseRedirect(back)
        return response

    # --- permissions: one place that says who may do what ---
    def _may(self, request: HttpRequest, codename: str) -> bool:
        return request.user.is_active and request.user.has_perm(f"accounts.{codename}")

    def has_authorize_permission(self, request: HttpRequest) -> bool:
        return self._may(request, "authorize_account")

    def has_verify_permission(self, request: HttpRequest) -> bool:
        return self._may(request, "verify_account")

    def has_refresh_permission(self, request: HttpRequest) -> bool:
        return self._may(request, "refresh_account")

    def has_export_permission(self, request: HttpRequest) -> bool:
        return self._may(request, "export_account")

    def has_import_permission(self, request: HttpRequest) -> bool:
        return self._may(request, "import_token")

    def has_take_over_permission(self, request: HttpRequest) -> bool:
        return self._may(request, "take_over_tokenfile")

    # --- actions ---
    @admin.action(description="Authorize with Instagram (one account)",
                  permissions=["authorize"])
    def authorize_action(self, request: HttpRequest,
                         queryset: QuerySet[Account]) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one account to authorize.",
                              messages.ERROR)
            return None
        return self._start_authorize(request, queryset.get())

    @admin.action(description="Refresh token now (if Instagram allows)",
                  permissions=["refresh"])
    def refresh_action(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        actor, now = Actor(user=request.user), timezone.now()
        for account in queryset:
            result = services.token_refresh(account_id=account.pk, actor=actor, now=now,
                                            force=True)
            summary = selectors.account_summary(account_id=account.pk, verb="refreshed")
            if result.outcome == Outcome.REFRESHED:
                level = messages.SUCCESS if summary.file_ok else messages.WARNING
                self.message_user(request, summary.text, level)
            elif result.outcome == Outcome.NOT_DUE:
                self.message_user(
                    request, f"{account}: not refreshed: Instagram refreshes only tokens at "
                    f"least 24 hours old and unexpired, of an authorized account.",
                    messages.WARNING)
            else:
                level = (messages.WARNING if result.outcome in (Outcome.PAUSED, Outcome.BUSY)
                         else messages.ERROR)
                detail = f": {result.message}" if result.message else ""
                self.message_user(
                    request, f"{account}: {result.outcome.replace('_', ' ')}{detail}", level)

    @admin.action(description="Verify token with Instagram (/me)", permissions=["verify"])
    def verify_action(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        actor, now = Actor(user=request.user), timezone.now()
        for account in queryset.select_related("app"):
            try:
                profile = services.account_verify(account=account, actor=actor, now=now)
            except FlowError as exc:
                self.message_user(request, f"{account}: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, f"{account}: token belongs to @{profile.username}.",
                                  messages.SUCCESS)

    @admin.action(description="Export token file", permissions=["export"])
    def export_action(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        actor, now = Actor(user=request.user), timezone.now()
        for account in queryset:
            path = services.token_export(account=account, actor=actor, now=now)
            account.refresh_from_db()
            if path is not None and account.status == Account.Status.NEEDS_REAUTH:
                self.message_user(request, f"{account}: wrote {path}, but the token in it is "
                                  f"dead: authorize the account again.", messages.WARNING)
            elif path is not None:
                self.message_user(request, f"{account}: wrote {path}.", messages.SUCCESS)
            else:
                reason = account.file_error or "export is off or there is no long-lived token"
                self.message_user(request, f"{account}: not written ({reason}).",
                                  messages.WARNING)
