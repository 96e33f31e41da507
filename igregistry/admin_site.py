"""The admin site: the sign-in that guards every customer's token.

Repeated failed sign-ins are locked out by django-axes (settings LOGIN_FAILURE_LIMIT,
LOGIN_LOCKOUT_HOURS, LOGIN_LOCKOUT_BY). A second factor (TOTP, django-otp) is offered to
every staff user on the *Two-factor authentication* page; once a user has confirmed an
authenticator, their sign-in needs its code, and a session signed in without it does not
reach the admin. https://django-axes.readthedocs.io/ https://django-otp-official.readthedocs.io/
"""

from __future__ import annotations

import base64
import io

from axes.handlers.proxy import AxesProxyHandler
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.forms import AdminAuthenticationForm, AdminPasswordChangeForm
from django.contrib.auth.signals import user_login_failed
from django.contrib.auth.views import PasswordChangeView
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.debug import sensitive_post_parameters
from django_otp import devices_for_user, user_has_device
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp.qr import write_qrcode_image


class RegistryAuthenticationForm(AdminAuthenticationForm):
    """Username and password, plus the authenticator's code for users who set one up.

    A wrong or missing code counts as a failed sign-in (django-axes sees it), so the code
    cannot be guessed faster than a password; the device's own throttling applies too."""

    otp_token = forms.CharField(
        label="Authentication code", required=False, max_length=12,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
        help_text="Only if you set up two-factor authentication.",
    )

    def clean(self) -> dict:
        cleaned = super().clean()
        user = self.get_user()
        if user is None:
            return cleaned
        devices = list(devices_for_user(user, confirmed=True))
        if not devices:
            return cleaned
        token = (cleaned.get("otp_token") or "").strip()
        device = None
        if token:
            device = next((d for d in devices if d.verify_is_allowed()[0]
                           and d.verify_token(token)), None)
        if device is None:
            user_login_failed.send(sender=__name__, request=self.request,
                                   credentials={"username": user.get_username()})
            # One message for a wrong password and a wrong code: which of the two was
            # right is not for a guesser to learn.
            raise forms.ValidationError(
                "Please enter a correct username, password and, if you set one up, the "
                "current code from your authenticator app.",
                code="otp_invalid",
            )
        user.otp_device = device  # django_otp marks the session verified at login
        return cleaned


class _CountedPasswordChangeForm(AdminPasswordChangeForm):
    def __init__(self, *args: object, request: HttpRequest, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.request = request

    def clean_old_password(self) -> str:
        try:
            return super().clean_old_password()
        except forms.ValidationError:
            user_login_failed.send(sender=__name__, request=self.request,
                                   credentials={"username": self.user.get_username()})
            raise


class _CountedPasswordChangeView(PasswordChangeView):
    form_class = _CountedPasswordChangeForm

    def get_form_kwargs(self) -> dict:
        return {**super().get_form_kwargs(), "request": self.request}


def client_ip(request: HttpRequest) -> str | None:
    """The client's address for the sign-in lockout. With LOGIN_PROXY_COUNT proxies in
    front, it is the X-Forwarded-For entry the outermost of them appended (entries to its
    left are the client's to forge); without proxies, REMOTE_ADDR, and the header is
    ignored (a client could otherwise pick the address that gets locked)."""
    from django.conf import settings

    count = settings.LOGIN_PROXY_COUNT
    forwarded = [part.strip() for part in
                 request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if count > 0 and len(forwarded) >= count:
        return forwarded[-count]
    return request.META.get("REMOTE_ADDR")


def _has_device(request: HttpRequest, user: object) -> bool:
    """Whether the user has a confirmed authenticator, asked once per request: every admin
    page asks twice (the gate, then the page's context). Kept with the user it answers
    for; the pages that add or remove a device redirect, so no answer outlives a change."""
    cached = getattr(request, "_registry_has_device", None)
    if cached is not None and cached[0] == user.pk:
        return cached[1]
    answer = user_has_device(user)
    request._registry_has_device = (user.pk, answer)
    return answer


class RegistryAdminSite(admin.AdminSite):
    site_header = "igregistry"
    site_title = "igregistry"
    # The lists (accounts, events) need the width at 1280 px; the index and the
    # breadcrumbs lead everywhere the sidebar did.
    enable_nav_sidebar = False
    index_title = "Instagram token registry"
    login_form = RegistryAuthenticationForm
    login_template = "admin/registry_login.html"

    def has_permission(self, request: HttpRequest) -> bool:
        # A user with an authenticator must have signed in with it in this session.
        user = request.user
        return super().has_permission(request) and (
            user.is_verified() or not _has_device(request, user)
        )

    def password_change(self, request: HttpRequest,
                        extra_context: dict | None = None) -> HttpResponse:
        """Django's page, but a wrong current password counts as a failed sign-in: the
        page is no password oracle for someone holding a session."""
        if not AxesProxyHandler.is_allowed(
                request, credentials={"username": request.user.get_username()}):
            return HttpResponse("Too many failed attempts: try again later.", status=429,
                                content_type="text/plain")
        request.current_app = self.name
        return sensitive_post_parameters()(_CountedPasswordChangeView.as_view(
            success_url=reverse("admin:password_change_done", current_app=self.name),
            extra_context={**self.each_context(request), **(extra_context or {})},
        ))(request)

    def login(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return sensitive_post_parameters("password", "otp_token")(super().login)(
            request, extra_context)

    def autocomplete_view(self, request: HttpRequest) -> HttpResponse:
        # Django answers a request missing these parameters with a server error.
        if not {"app_label", "model_name", "field_name"} <= request.GET.keys():
            return HttpResponseBadRequest("app_label, model_name and field_name are required.",
                                          content_type="text/plain")
        return super().autocomplete_view(request)

    def get_urls(self) -> list[URLPattern]:
        return [
            path("two-factor/", self.admin_view(self.two_factor_view), name="two_factor"),
            *super().get_urls(),
        ]

    def two_factor_view(self, request: HttpRequest) -> HttpResponse:
        """Set up (or remove) the signed-in user's own authenticator (TOTP)."""
        user = request.user
        confirmed = list(devices_for_user(user, confirmed=True))
        error = ""
        if request.method == "POST":
            token = request.POST.get("otp_token", "").strip()
            if confirmed and "disable" in request.POST:
                if any(d.verify_token(token) for d in confirmed):
                    TOTPDevice.objects.filter(user=user).delete()
                    messages.success(request, "Two-factor authentication is off.")
                    return HttpResponseRedirect(reverse("admin:two_factor"))
                error = "That code is not valid: two-factor authentication stays on."
            elif not confirmed:
                device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
                if device is not None and token and device.verify_token(token):
                    device.confirmed = True
                    device.save(update_fields=["confirmed"])
                    otp_login(request, device)
                    messages.success(request, "Two-factor authentication is on: sign-ins "
                                     "now ask for a code from your authenticator app.")
                    return HttpResponseRedirect(reverse("admin:two_factor"))
                error = "That code is not valid. Scan the code again and type the current one."
        context = {**self.each_context(request), "title": "Two-factor authentication",
                   "enabled": bool(confirmed), "error": error}
        if not confirmed:
            device, _ = TOTPDevice.objects.get_or_create(
                user=user, confirmed=False, defaults={"name": "authenticator"})
            svg = io.BytesIO()
            write_qrcode_image(device.config_url, svg)
            # As an image: the library's SVG uses a namespace prefix that inline HTML
            # does not draw.
            context["qr_src"] = "data:image/svg+xml;base64," + base64.b64encode(
                svg.getvalue()).decode()
            context["secret"] = base64.b32encode(device.bin_key).decode()
        return TemplateResponse(request, "admin/two_factor.html", context,
                                status=400 if error else 200)
