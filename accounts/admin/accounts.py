"""Accounts in the admin: columns, fields and saving. Actions live in `account_actions`,
extra pages in `account_pages`; neither holds a token, and a token is never rendered."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from .. import selectors, services
from ..crypto import DecryptionError, decrypt
from ..forms import AccountForm
from ..instagram import mask, with_advice
from ..models import Account
from ..selectors import FileState
from ..services import Actor
from ..timeutil import days_text, deadline_text, local_text
from .account_actions import AccountActionsMixin
from .account_pages import AccountPagesMixin
from .base import AppFilter, RegistryModelAdmin


@admin.register(Account)
class AccountAdmin(AccountActionsMixin, AccountPagesMixin, RegistryModelAdmin):
    form = AccountForm
    list_display = [
        "label", "app", "username", "status", "expires_in", "token_hint", "token_file"
    ]
    list_filter = ["status", ("app", AppFilter)]
    # Exact ids, as Meta's tools and webhooks name them: any of the three finds it.
    search_fields = ["label", "username", "=ig_id", "=ig_user_id", "=ig_exchange_user_id"]
    change_form_template = "admin/accounts/account/change_form.html"
    fieldsets = [
        (None, {"fields": ["app", "label"]}),
        ("Token file", {"fields": ["token_filename", "export_enabled", "export_format",
                                   "file_name", "file_health", "file_written_at",
                                   "file_error"]}),
        ("Instagram", {"fields": ["username", "ig_id", "ig_user_id", "ig_exchange_user_id",
                                  "status", "last_error_guided"]}),
        ("Token", {"fields": ["token_hint", "token_kind", "obtained_at", "expires_at",
                              "last_refreshed_at", "permissions"]}),
    ]
    readonly_fields = [
        "username", "ig_id", "ig_user_id", "ig_exchange_user_id", "status", "last_error_guided",
        "file_written_at", "file_error",
        "file_name", "file_health",
        "token_hint", "token_kind", "obtained_at", "expires_at", "last_refreshed_at",
        "permissions",
    ]

    # --- columns (the token value itself is never rendered) ---
    @admin.display(description="token")
    def token_hint(self, obj: Account) -> str:
        token = getattr(obj, "token", None)
        if token is None:
            return "—"
        # The stored text comes with every row (get_queryset); '' only for an empty value.
        stored = obj.token_ciphertext
        try:
            return mask(decrypt(stored) if stored else "")
        except DecryptionError:
            return "cannot be decrypted (ENCRYPTION_KEYS)"

    def delete_model(self, request: HttpRequest, obj: Account) -> None:
        self.delete_queryset(request, Account.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        # Their files stay on disk (websites may read them), listed as orphaned.
        actor, now = Actor(user=request.user), timezone.now()
        for account in queryset:
            services.token_file_release(account=account, reason="the account was deleted",
                                        actor=actor, now=now)
        super().delete_queryset(request, queryset)

    def get_list_display(self, request: HttpRequest) -> list[str]:
        return self._without_token_hint(request, super().get_list_display(request))

    def get_fieldsets(self, request: HttpRequest, obj: Account | None = None) -> list:
        return [(name, {**options, "fields": self._without_token_hint(request, options["fields"])})
                for name, options in super().get_fieldsets(request, obj)]

    def _without_token_hint(self, request: HttpRequest, fields: list[str]) -> list[str]:
        # Even the last characters of a token are for those who may act on it.
        if self.has_change_permission(request):
            return list(fields)
        return [field for field in fields if field != "token_hint"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Account]:
        # The token is decrypted one row at a time (for the hint), from its stored text
        # loaded with the row: a value no key decrypts spoils its own cell, not the whole
        # list, and no row costs a query of its own. The app comes with the row too.
        return (
            super().get_queryset(request)
            .select_related("app", "token")
            .defer("token__value", "app__app_secret")
            .annotate(token_ciphertext=Cast("token__value", output_field=TextField()),
                      # The file's name for the list, loaded with the row.
                      current_file_name=selectors.current_file_name_expression())
        )

    @admin.display(description="token kind")
    def token_kind(self, obj: Account) -> str:
        token = getattr(obj, "token", None)
        return token.get_kind_display() if token else "—"

    # Times as every page shows them (accounts.timeutil), with the days left where the
    # time is a deadline: Django would print a method's datetime with its microseconds.
    @admin.display(description="obtained")
    def obtained_at(self, obj: Account) -> str:
        token = getattr(obj, "token", None)
        return local_text(token.obtained_at) if token else "—"

    @admin.display(description="expires", ordering="token__expires_at")
    def expires_at(self, obj: Account) -> str:
        token = getattr(obj, "token", None)
        return deadline_text(token.expires_at, now=timezone.now()) if token else "—"

    @admin.display(description="expires", ordering="token__expires_at")
    def expires_in(self, obj: Account) -> str:
        """The list's short form: days left, the exact time in the cell's title."""
        token = getattr(obj, "token", None)
        if token is None:
            return "—"
        return format_html('<span title="{}">{}</span>', local_text(token.expires_at),
                           days_text(token.expires_at, now=timezone.now()))

    @admin.display(description="last refreshed")
    def last_refreshed_at(self, obj: Account) -> str:
        token = getattr(obj, "token", None)
        if token is None or token.last_refreshed_at is None:
            return "—"
        return deadline_text(token.last_refreshed_at, now=timezone.now())

    @admin.display(description="permissions")
    def permissions(self, obj: Account) -> str:
        token = getattr(obj, "token", None)
        if not token or not token.permissions:
            return "—"
        if token.permissions_requested:
            return f"{', '.join(token.permissions)} (requested; Instagram did not say)"
        return ", ".join(token.permissions)

    @admin.display(description="last error")
    def last_error_guided(self, obj: Account) -> str:
        """The last error, followed by what to do when it is a known one of Meta's and
        the text does not say it yet (errors recorded before the guidance existed)."""
        if not obj.last_error:
            return "—"
        return with_advice(obj.last_error, flavour=obj.app.flavour, lead="What to do: ")

    # Not named file_state: Django would show the model's field of that name (the raw
    # `not_exported`) rather than this method.
    @admin.display(description="token file", ordering="token_filename")
    def token_file(self, obj: Account) -> str:
        """The file's name (as the dashboard names it: the explicit one, the one it
        writes now, else the username it will take) and its state in words."""
        token = getattr(obj, "token", None)
        label = FileState.describe(FileState.shown(account=obj, token=token),
                                   export_enabled=obj.export_enabled)
        name = selectors.token_file_name_of(account=obj,
                                            current_name=getattr(obj, "current_file_name", None))
        return f"{name}: {label}" if name else label

    @admin.display(description="file written")
    def file_name(self, obj: Account) -> str:
        name = selectors.token_file_name(account=obj)
        current = selectors.token_file_current(account=obj)
        if not name:
            return "— (no name yet: the Instagram username once authorized)"
        if current is not None and current.name == name and not obj.token_filename and (
                obj.username and obj.username != name):
            return f"{name} (named after a former username; set a token file name to rename)"
        return name

    @admin.display(description="file state")
    def file_health(self, obj: Account) -> str:
        label = FileState.LABELS.get(obj.file_state, obj.file_state)
        if obj.file_checked_at:
            label += f" (checked {local_text(obj.file_checked_at)})"
        orphans = selectors.token_files_orphaned().filter(account=obj)
        names = ", ".join(record.name for record in orphans)
        if names:
            label += f"; orphaned file(s) left on disk: {names}"
        return label

    def save_model(self, request: HttpRequest, obj: Account, form, change: bool) -> None:  # noqa: ANN001
        super().save_model(request, obj, form, change)
        if change and {"token_filename", "export_enabled", "export_format"} & set(
                form.changed_data):
            # A rename, a format change or export turned on takes effect now, not at the
            # next reconcile run; the old file of a rename is left on disk, orphaned.
            path = services.token_export(account=obj, actor=Actor(user=request.user),
                                         now=timezone.now())
            obj.refresh_from_db()
            if path is not None:
                self.message_user(request, f"{obj}: wrote {path}.", messages.SUCCESS)
            elif obj.file_error:
                self.message_user(request, f"{obj}: {obj.file_error}", messages.WARNING)

    def response_post_save_add(self, request: HttpRequest, obj: Account) -> HttpResponse:
        """A new account needs authorizing next: *Save* opens its page (with the
        Authorize button), not the list."""
        return HttpResponseRedirect(reverse("admin:accounts_account_change", args=[obj.pk]))

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "may": self.permissions_of(request)}
        account = (Account.objects.select_related("app").defer("app__app_secret")
                   .filter(pk=object_id).first() if object_id.isdigit() else None)
        if account is not None:
            steps = selectors.account_onboarding(account=account)
            extra_context["onboarding"] = steps
            extra_context["onboarding_open"] = sum(not step.done for step in steps)
        if account is not None and account.file_state == FileState.NAME_TAKEN:
            name = selectors.token_file_name(account=account)
            extra_context["file_blocker"] = selectors.token_file_blocker(account=account,
                                                                         name=name)
        return super().change_view(request, object_id, form_url, extra_context)
