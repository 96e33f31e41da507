"""Every URL the registry serves to parties other than signed-in staff, in one place:
Instagram's OAuth redirect, Meta's callbacks, the data-deletion status page, owner
authorization links, and the health and metrics endpoints. The admin is in
igregistry/urls.py. Each path here is reachable without an admin login; each view
checks what it needs itself (a state, Meta's signature, a link's secret, a token)."""

from django.urls import path

from .views import api, healthz, liveness, metrics, oauth_callback, owner_links
from .views.meta_callbacks import meta_data_deletion, meta_data_deletion_status, meta_deauthorize

urlpatterns = [
    # Must match the path of the redirect URI registered at Meta, trailing slash included.
    # Completes flows started by staff (Authorize) and by owners (owner links).
    path("oauth/callback/", oauth_callback, name="oauth-callback"),
    # Meta's callbacks, one pair per app (each is signed with that app's secret): pasted
    # into the app's settings at Meta as "Deauthorize callback URL" and "Data deletion
    # request URL" (the app's admin page shows both, absolute). POST only, no CSRF token.
    path("meta/apps/<int:app_pk>/deauthorize/", meta_deauthorize, name="meta-deauthorize"),
    path("meta/apps/<int:app_pk>/data-deletion/", meta_data_deletion,
         name="meta-data-deletion"),
    # The status page the data-deletion answer points the user to (no login).
    path("meta/data-deletion/<str:code>/", meta_data_deletion_status,
         name="meta-data-deletion-status"),
    # Owner authorization links: the link itself (?link=<secret>; GET shows, POST starts),
    # and the page the owner lands on once the token is stored. Never cached or indexed,
    # and they send no Referer.
    path("owner/authorize/", owner_links.owner_authorize,
         name="owner-authorize"),
    path("owner/authorized/<str:done>/", owner_links.owner_authorized,
         name="owner-authorized"),
    # The token API for websites on other hosts (an API key; README "Token API").
    path("api/v1/tokens/<str:account>", api.token_read, name="api-token"),
    path("api/v1/openapi.json", api.openapi, name="api-openapi"),
    path("healthz", healthz, name="healthz"),
    path("healthz/live", liveness, name="liveness"),
    path("metrics", metrics, name="metrics"),
]
