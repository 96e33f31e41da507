"""URL configuration: the admin here; every public URL in accounts/public_urls.py."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    # `/?state=needs_reauth` opens the dashboard so filtered (bookmarks, alert links).
    path("", RedirectView.as_view(pattern_name="admin:accounts_account_dashboard",
                                  permanent=False, query_string=True)),
    path("admin/", admin.site.urls),
    path("", include("accounts.public_urls")),
]
