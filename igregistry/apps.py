"""The admin app, with the registry's own site (sign-in lockout and second factor)."""

from django.contrib.admin.apps import AdminConfig


class RegistryAdminConfig(AdminConfig):
    default_site = "igregistry.admin_site.RegistryAdminSite"
