"""API keys for the token API: operators create them (the key is shown once, on the page
that follows) and revoke them; viewers see names, scopes and prefixes, never a key."""

from __future__ import annotations

from urllib.parse import urlsplit

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import FilteredSelectMultiple
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache

from .. import services
from ..models import Account, ApiKey, InstagramApp
from ..services import FlowError
from ..timeutil import local_text
from .base import RegistryModelAdmin


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Who uses it, e.g. the website's host.")
    accounts = forms.ModelMultipleChoiceField(
        queryset=Account.objects.order_by("label"), required=False,
        widget=FilteredSelectMultiple("accounts", is_stacked=False),
        help_text="The accounts whose tokens it may read.")
    apps = forms.ModelMultipleChoiceField(
        queryset=InstagramApp.objects.order_by("name"), required=False,
        widget=FilteredSelectMultiple("apps", is_stacked=False),
        help_text="Every account of these apps, now and later.")
    webhook_url = forms.URLField(
        label="Change webhook URL", required=False, max_length=500, assume_scheme="https",
        help_text="Optional: called (POST, Standard Webhooks) when one of these tokens "
        "changes.")

    def clean(self) -> dict:
        data = super().clean()
        if not data.get("accounts") and not data.get("apps"):
            raise forms.ValidationError("Choose at least one account or app the key may read.")
        if data.get("name") and ApiKey.objects.filter(name=data["name"]).exists():
            self.add_error("name", "There is already a key with this name.")
        return data


@admin.register(ApiKey)
class ApiKeyAdmin(RegistryModelAdmin):
    list_display = ["name", "prefix", "scope", "webhook", "created_at", "last_used_at", "state"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    actions = ["revoke_action"]
    fields = ["name", "prefix", "scope", "webhook_url", "created_by", "created_at",
              "last_used_at", "state"]
    readonly_fields = [*fields, "webhook_host"]

    @admin.display(description="change webhook")
    def webhook_host(self, obj: ApiKey) -> str:
        if not obj.webhook_url:
            return "—"
        parts = urlsplit(obj.webhook_url)
        return f"{parts.scheme}://{parts.hostname}/… (the whole URL is shown to operators)"

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        # A webhook URL may carry the consumer's own key in its path or query: only
        # those who may change keys see it whole.
        if self.has_change_permission(request, obj):
            return self.fields
        return [name if name != "webhook_url" else "webhook_host" for name in self.fields]

    @admin.display(description="may read")
    def scope(self, obj: ApiKey) -> str:
        names = [a.label for a in obj.accounts.all()]
        names += [f"app {a.name} (all its accounts)" for a in obj.apps.all()]
        return ", ".join(names) or "—"

    @admin.display(description="webhook", boolean=True)
    def webhook(self, obj: ApiKey) -> bool:
        return bool(obj.webhook_url)

    @admin.display(description="state")
    def state(self, obj: ApiKey) -> str:
        return f"revoked {local_text(obj.revoked_at)}" if obj.revoked_at else "live"

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        return (super().get_queryset(request).defer("webhook_secret")
                .prefetch_related("accounts", "apps"))

    # Read-only once made: a key's scope is what it was created with (revoke and create
    # another to change it). Change permission is what revoking needs.
    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_action(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        now = timezone.now()
        revoked = sum(services.api_key_revoke(key=key, user=request.user, now=now)
                      for key in queryset)
        self.message_user(request, f"{revoked} key(s) revoked: their next call gets 401.",
                          messages.SUCCESS)

    @method_decorator(never_cache)
    def add_view(self, request: HttpRequest, form_url: str = "",
                 extra_context: dict | None = None) -> HttpResponse:
        """The key is made by the service and shown on the page that answers the POST,
        once: never stored in a message or a session."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ApiKeyForm(request.POST or None)
        context = {**self.admin_site.each_context(request), "opts": self.opts,
                   "title": "Add API key", "form": form, "media": self.media + form.media}
        if request.method == "POST" and form.is_valid():
            try:
                key, secret, webhook_secret = services.api_key_create(
                    name=form.cleaned_data["name"], accounts=form.cleaned_data["accounts"],
                    apps=form.cleaned_data["apps"],
                    webhook_url=form.cleaned_data["webhook_url"], user=request.user,
                    now=timezone.now())
            except FlowError as exc:
                form.add_error(None, exc.message)
            else:
                context.update(title="API key created", key=key, secret=secret,
                               webhook_secret=webhook_secret,
                               example_url=request.build_absolute_uri(reverse("api-token", args=[
                                   "ACCOUNT"])))
                # never_cache marks it no-store: the key stays out of every cache.
                return TemplateResponse(request, "admin/accounts/apikey/created.html", context)
        return TemplateResponse(request, "admin/accounts/apikey/add.html", context,
                                status=400 if request.method == "POST" else 200)
