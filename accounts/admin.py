"""Django admin for apps, accounts and the event log. Thin: every write is a service call."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from . import dashboard, selectors, services
from .forms import AccountForm, ImportTokenForm, InstagramAppForm, PasteForm
from .instagram import mask
from .models import Account, Event, InstagramApp, TokenFile
from .selectors import FileState
from .services import Actor, FlowError, Outcome


@admin.register(InstagramApp)
class InstagramAppAdmin(admin.ModelAdmin):
    form = InstagramAppForm
    list_display = ["name", "flavour", "app_id", "redirect_uri", "secret_hint"]
    list_filter = ["flavour"]
    search_fields = ["name", "app_id"]

    @admin.display(description="app secret")
    def secret_hint(self, obj: InstagramApp) -> str:
        return mask(obj.app_secret)

    # Error reports (DEBUG pages) must not show the typed secret.
    @method_decorator(sensitive_post_parameters("app_secret"))
    def changeform_view(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        return super().changeform_view(*args, **kwargs)


def redirects_here(request: HttpRequest, redirect_uri: str) -> bool:
    """Whether Instagram's redirect lands on this registry's callback for this browser."""
    parts = urlsplit(redirect_uri)
    return parts.path == reverse("oauth-callback") and parts.netloc == request.get_host()


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    form = AccountForm
    list_display = [
        "label", "app", "username", "status", "expires_at", "token_hint", "file_state"
    ]
    list_filter = ["status", "app"]
    search_fields = ["label", "username", "ig_user_id"]
    list_select_related = ["app", "token"]
    actions = ["authorize_action", "refresh_action", "verify_action", "export_action"]
    change_form_template = "admin/accounts/account/change_form.html"
    fieldsets = [
        (None, {"fields": ["app", "label"]}),
        ("Token file", {"fields": ["token_filename", "export_enabled", "export_format",
                                   "file_name", "file_health", "file_written_at",
                                   "file_error"]}),
        ("Instagram", {"fields": ["username", "ig_user_id", "status", "last_error"]}),
        ("Token", {"fields": ["token_hint", "token_kind", "obtained_at", "expires_at",
                              "last_refreshed_at", "permissions"]}),
    ]
    readonly_fields = [
        "username", "ig_user_id", "status", "last_error", "file_written_at", "file_error",
        "file_name", "file_health",
        "token_hint", "token_kind", "obtained_at", "expires_at", "last_refreshed_at",
        "permissions",
    ]

    # --- columns (the token value itself is never rendered) ---
    @admin.display(description="token")
    def token_hint(self, obj: Account) -> str:
        token = getattr(obj, "token", None)
        return mask(token.value) if token else "—"

    @admin.display(description="token kind")
    def token_kind(self, obj: Account) -> str:
        token = getattr(obj, "token", None)
        return token.get_kind_display() if token else "—"

    @admin.display(description="obtained")
    def obtained_at(self, obj: Account):  # noqa: ANN201
        token = getattr(obj, "token", None)
        return token.obtained_at if token else "—"

    @admin.display(description="expires", ordering="token__expires_at")
    def expires_at(self, obj: Account):  # noqa: ANN201
        token = getattr(obj, "token", None)
        return token.expires_at if token else "—"

    @admin.display(description="last refreshed")
    def last_refreshed_at(self, obj: Account):  # noqa: ANN201
        token = getattr(obj, "token", None)
        return (token.last_refreshed_at if token else None) or "—"

    @admin.display(description="permissions")
    def permissions(self, obj: Account) -> str:
        token = getattr(obj, "token", None)
        return ", ".join(token.permissions) if token and token.permissions else "—"

    @admin.display(description="token file")
    def file_state(self, obj: Account) -> str:
        if not obj.export_enabled:
            return "off"
        label = FileState.LABELS.get(obj.file_state, obj.file_state)
        return f"{obj.token_filename or obj.username or '—'}: {label}"

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
            label += f" (checked {obj.file_checked_at:%Y-%m-%d %H:%M} UTC)"
        orphans = selectors.token_files_orphaned().filter(account=obj)
        names = ", ".join(record.name for record in orphans)
        if names:
            label += f"; orphaned file(s) left on disk: {names}"
        return label

    # --- actions ---
    @admin.action(description="Authorize with Instagram (one account)")
    def authorize_action(self, request: HttpRequest, queryset: QuerySet[Account]):  # noqa: ANN201
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one account to authorize.",
                              messages.ERROR)
            return None
        return self._start_authorize(request, queryset.get())

    @admin.action(description="Refresh token now (if Instagram allows)",
                  permissions=["change"])
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
                self.message_user(request, f"{account}: {result.outcome.replace('_', ' ')}"
                                  f"{': ' + result.message if result.message else ''}",
                                  messages.WARNING if result.outcome in (
                                      Outcome.PAUSED, Outcome.BUSY) else messages.ERROR)

    @admin.action(description="Verify token with Instagram (/me)")
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

    @admin.action(description="Export token file")
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

    # --- extra pages ---
    def get_urls(self):  # noqa: ANN201
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/authorize/", wrap(require_POST(self.authorize_view)),
                 name="accounts_account_authorize"),
            path("<int:pk>/paste/",
                 wrap(sensitive_post_parameters("redirected_url")(self.paste_view)),
                 name="accounts_account_paste"),
            path("<int:pk>/take-over-file/", wrap(require_POST(self.take_over_view)),
                 name="accounts_account_take_over_file"),
            path("<int:pk>/import-token/",
                 wrap(sensitive_post_parameters("access_token")(self.import_view)),
                 name="accounts_account_import"),
            path("dashboard/", wrap(self.dashboard_view), name="accounts_account_dashboard"),
            *super().get_urls(),
        ]

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

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict | None = None) -> HttpResponse:
        extra_context = extra_context or {}
        account = Account.objects.filter(pk=object_id).first() if object_id.isdigit() else None
        if account is not None and account.file_state == FileState.NAME_TAKEN:
            name = selectors.token_file_name(account=account)
            blocker = selectors.token_file_blocker(account=account, name=name)
            extra_context["file_blocker"] = blocker
            extra_context["can_take_over"] = blocker is not None and request.user.has_perm(
                "accounts.take_over_tokenfile")
        return super().change_view(request, object_id, form_url, extra_context)

    def take_over_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Give this account the file name another account owns (permission
        accounts.take_over_tokenfile; logged on both accounts)."""
        account = self._account_or_403(request, pk)
        if not request.user.has_perm("accounts.take_over_tokenfile"):
            raise PermissionDenied
        try:
            path = services.token_file_take_over(account=account, actor=Actor(user=request.user),
                                                 now=timezone.now())
        except FlowError as exc:
            messages.error(request, exc.message)
        else:
            account.refresh_from_db()
            if path is None:
                messages.warning(request, f"{account}: took over the file name, but the file "
                                 f"was not written: {account.file_error or 'no token yet'}")
            else:
                messages.success(request, f"{account}: took over and wrote {path}.")
        return HttpResponseRedirect(reverse("admin:accounts_account_change", args=[pk]))

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        """Every account by urgency, with counts per state and the expiry timeline."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = timezone.now()
        context = {
            **self.admin_site.each_context(request),
            "title": "Expiry dashboard",
            "opts": self.opts,
            "dash": dashboard.build(params=request.GET, now=now),
            "now": now,
            "chart_width": dashboard.CHART_WIDTH,
            "chart_height": dashboard.CHART_HEIGHT,
            "chart_baseline": dashboard.CHART_HEIGHT - dashboard.CHART_PAD,
            "chart_right": dashboard.CHART_WIDTH - dashboard.CHART_PAD,
        }
        return TemplateResponse(request, "admin/accounts/dashboard.html", context)

    def _account_or_403(self, request: HttpRequest, pk: int) -> Account:
        account = get_object_or_404(Account.objects.select_related("app"), pk=pk)
        if not self.has_change_permission(request, account):
            raise PermissionDenied
        return account

    def _start_authorize(self, request: HttpRequest, account: Account) -> HttpResponse:
        url = services.oauth_start(account=account, user=request.user, now=timezone.now())
        if redirects_here(request, account.app.redirect_uri):
            return HttpResponseRedirect(url)
        # Instagram will send the browser to another website: staff paste the URL back.
        return self._paste_page(request, account, PasteForm(), authorize_url=url)

    def authorize_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        return self._start_authorize(request, self._account_or_403(request, pk))

    def _paste_page(self, request: HttpRequest, account: Account, form: PasteForm,
                    authorize_url: str | None = None, status: int = 200) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": f"Authorize {account}",
            "account": account,
            "opts": self.opts,
            "form": form,
            "authorize_url": authorize_url,
        }
        return TemplateResponse(request, "admin/accounts/account/paste.html", context,
                                status=status)

    def paste_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        account = self._account_or_403(request, pk)
        form = PasteForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                services.oauth_paste(account=account, text=form.cleaned_data["redirected_url"],
                                     user=request.user, now=timezone.now())
            except FlowError as exc:
                form.add_error(None, exc.message)
            else:
                return self._done(request, account, "authorized")
        return self._paste_page(request, account, form,
                                status=400 if request.method == "POST" else 200)

    def import_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        account = self._account_or_403(request, pk)
        form = ImportTokenForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                services.token_import(
                    account=account,
                    access_token=form.cleaned_data["access_token"],
                    kind=form.cleaned_data["kind"],
                    expires_at=form.cleaned_data["expires_at"],
                    actor=Actor(user=request.user),
                    now=timezone.now(),
                )
            except FlowError as exc:
                form.add_error(None, exc.message)
            else:
                return self._done(request, account, "imported")
        context = {
            **self.admin_site.each_context(request),
            "title": f"Import a token for {account}",
            "account": account,
            "opts": self.opts,
            "form": form,
        }
        return TemplateResponse(request, "admin/accounts/account/import.html", context,
                                status=400 if request.method == "POST" else 200)

    def _done(self, request: HttpRequest, account: Account, verb: str) -> HttpResponse:
        summary = selectors.account_summary(account_id=account.pk, verb=verb)
        level = messages.SUCCESS if summary.file_ok else messages.WARNING
        messages.add_message(request, level, summary.text)
        return HttpResponseRedirect(reverse("admin:accounts_account_change", args=[account.pk]))


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
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


@admin.register(TokenFile)
class TokenFileAdmin(admin.ModelAdmin):
    """Which account writes which token file; orphaned files wait here for an operator."""

    list_display = ["name", "owner", "status", "written_at", "orphaned_at"]
    list_filter = ["status"]
    search_fields = ["name", "account_label"]
    list_select_related = ["account"]
    actions = ["remove_action"]

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

    def has_change_permission(self, request: HttpRequest, obj: TokenFile | None = None) -> bool:
        return False
