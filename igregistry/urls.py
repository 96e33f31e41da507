"""URL configuration."""

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from accounts import views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:accounts_account_dashboard",
                                  permanent=False)),
    path("admin/", admin.site.urls),
    # Must match the path of the redirect URI registered at Meta, trailing slash included.
    path("oauth/callback/", views.oauth_callback, name="oauth-callback"),
    path("healthz", views.healthz, name="healthz"),
    path("healthz/live", views.liveness, name="liveness"),
    path("metrics", views.metrics, name="metrics"),
]
