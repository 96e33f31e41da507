"""Second-factor devices: administrators may list and delete them, nothing else.

django-otp's own admin lets a superuser reassign a device or add one with a key of their
choosing, i.e. learn or set another person's TOTP secret. Here a lost device is deleted
and its owner sets up a new one on their own Two-factor page."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django_otp.plugins.otp_totp.models import TOTPDevice

from .base import RegistryModelAdmin

if admin.site.is_registered(TOTPDevice):
    admin.site.unregister(TOTPDevice)


@admin.register(TOTPDevice)
class TOTPDeviceAdmin(RegistryModelAdmin):
    list_display = ["user", "name", "confirmed", "created_at", "last_used_at"]
    list_filter = ["confirmed"]
    search_fields = ["user__username", "name"]
    fields = ["user", "name", "confirmed", "created_at", "last_used_at"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: TOTPDevice | None = None
                              ) -> bool:
        return False
