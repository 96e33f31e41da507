"""Instagram apps: the secret is write-only, and never shown to someone who may only look."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils.decorators import method_decorator
from django.utils.safestring import SafeString
from django.views.decorators.debug import sensitive_post_parameters

from .. import selectors
from ..crypto import DecryptionError
from ..forms import InstagramAppForm
from ..instagram import mask, scopes_check
from ..models import InstagramApp
from .base import RegistryModelAdmin


@admin.register(InstagramApp)
class InstagramAppAdmin(RegistryModelAdmin):
    form = InstagramAppForm
    list_display = ["name", "flavour", "app_id", "redirect_uri", "secret_hint"]
    list_filter = ["flavour"]
    search_fields = ["name", "app_id"]
    readonly_fields = ["secret_hint", "secret_withheld", "meta_setup"]

    @admin.display(description="app secret")
    def secret_hint(self, obj: InstagramApp) -> str:
        try:
            return mask(obj.app_secret)
        except DecryptionError:
            return "cannot be decrypted (ENCRYPTION_KEYS): enter it again"

    @admin.display(description="app secret")
    def secret_withheld(self, obj: InstagramApp) -> str:
        return "set (its last characters are shown only to those who may change apps)"

    def get_list_display(self, request: HttpRequest) -> list[str]:
        # Not even the last characters for someone who may only look (README, "Roles").
        if self.has_change_permission(request):
            return self.list_display
        return [name for name in self.list_display if name != "secret_hint"]

    # Everything to enter at Meta, ready to copy (Meta's callback URLs too, once the app is
    # saved: not secret, each request is signed with the app's secret, so viewers see them),
    # and what the flavour asks of accounts.
    @admin.display(description="set up at Meta")
    def meta_setup(self, obj: InstagramApp) -> SafeString:
        setup = selectors.meta_setup(app=obj if obj.pk else None, flavour=obj.flavour)
        return render_to_string("admin/accounts/instagramapp/meta_setup.html",
                                {"setup": setup})

    def save_model(self, request: HttpRequest, obj: InstagramApp, form, change: bool) -> None:  # noqa: ANN001
        super().save_model(request, obj, form, change)
        # Meta adds permissions the registry may not know yet: saved, with a word.
        unknown = scopes_check(obj.flavour_enum, obj.scope_list()).unknown
        if unknown:
            self.message_user(
                request, f"{obj}: the registry does not know the scope(s) "
                f"{', '.join(unknown)}. Saved: check the spelling against the app's "
                f"permissions at Meta (Instagram refuses a scope it does not know, at the "
                f"authorization).", messages.WARNING)

    def get_queryset(self, request: HttpRequest) -> QuerySet[InstagramApp]:
        return super().get_queryset(request).defer("app_secret")

    def get_fields(self, request: HttpRequest, obj: InstagramApp | None = None) -> list[str]:
        fields = ["name", "flavour", "app_id", "meta_app_id", "app_secret", "redirect_uri",
                  "scopes"]
        if obj is not None and not self.has_change_permission(request, obj):
            # Django shows a read-only field's model value: for a viewer that would be the
            # whole secret. Someone who cannot change it sees that it is set, nothing more.
            fields[fields.index("app_secret")] = "secret_withheld"
        return [*fields, "meta_setup"]

    # Error reports (DEBUG pages) must not show the typed secret.
    @method_decorator(sensitive_post_parameters("app_secret"))
    def changeform_view(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        return super().changeform_view(*args, **kwargs)
