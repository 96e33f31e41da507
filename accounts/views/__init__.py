"""Public views: Instagram's OAuth redirect, health and metrics. Owner links' pages are in
`owner_links`; Meta's callbacks and the data-deletion status page in `meta_callbacks`; the
token API in `api`."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib import admin, messages
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .. import health, selectors, services
from ..return_to import return_to_take
from ..services import FlowError
from . import owner_links


@never_cache
@require_GET
def oauth_callback(request: HttpRequest) -> HttpResponse:
    """Instagram's redirect after the owner allowed (or denied) the app.

    Only the staff user who started the authorization can complete it, and only while
    they still hold the `authorize_account` permission; anything wrong
    (no state, forged, expired or replayed state, a denial, a refused code) is a 400
    page that says why, and nothing is stored.

    A state an owner link started is the owner's: no login is asked, and the owner link
    pages take it over (`views.owner_links.owner_callback`)."""
    if selectors.oauth_state_of_owner_link(state=request.GET.get("state")):
        return owner_links.owner_callback(request)
    # The admin's own test: active staff, signed in with the second factor where the user
    # has one. The callback is outside the admin, so it asks the same question itself.
    if not admin.site.has_permission(request):
        return _error(request, "Sign in to the registry's admin, then start the authorization "
                      "again from the account's Authorize action.", status=403)
    # Checked now, not only when the flow started: a permission withdrawn meanwhile holds.
    # (The state is bound to the user who started the flow, so this is that user.)
    if not request.user.has_perm("accounts.authorize_account"):
        return _error(request, "You may no longer authorize accounts: nothing was stored.",
                      advice="Ask an administrator for the operators role.", status=403)
    try:
        account = services.oauth_callback(params=request.GET, user=request.user,
                                          now=timezone.now())
    except FlowError as exc:
        return _error(request, exc.message, account=exc.account, advice=exc.advice)
    summary = selectors.account_summary(account_id=account.pk, verb="authorized")
    # A token the website cannot read yet is not a success.
    messages.add_message(request, messages.SUCCESS if summary.file_ok else messages.WARNING,
                         summary.text)
    # Started from the dashboard: back to that page, its filters kept.
    back = return_to_take(request, account_id=account.pk)
    return HttpResponseRedirect(
        back or reverse("admin:accounts_account_change", args=[account.pk]))


def _error(request: HttpRequest, message: str, *, account=None, advice: str = "",  # noqa: ANN001
           status: int = 400) -> HttpResponse:
    """The callback's refusal, inside the admin's frame (site header, user menu): what went
    wrong, that nothing was stored (said once), what to do, and the way back."""
    context = {
        **admin.site.each_context(request),
        "title": "Authorization failed",
        "message": message,
        "advice": advice,
        # The message may say it already, or say that something was kept (the swap).
        "say_nothing_stored": not any(words in message.lower()
                                      for words in ("nothing was stored", "is kept")),
        "account": account,
    }
    return render(request, "accounts/oauth_error.html", context, status=status)


@never_cache
@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """200 when the database and broker answer, the last sweep is recent and a worker takes
    the queued refreshes in time; 503 if not, within HEALTH_CHECK_TIMEOUT_SECONDS (about).

    Says which check failed, never how to reach it (no URLs, hosts or users)."""
    report = health.health_report(now=timezone.now())
    return JsonResponse(report.as_dict(), status=200 if report.healthy else 503)


@never_cache
@require_GET
def liveness(request: HttpRequest) -> HttpResponse:
    """The web process answers (for a container's health check)."""
    return HttpResponse("ok", content_type="text/plain")


_registry = CollectorRegistry(auto_describe=False)
_registry.register(health.RegistryCollector())


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format. With METRICS_TOKEN set, a bearer token is required;
    without it, only METRICS_ALLOWED_IPS may scrape."""
    if settings.METRICS_TOKEN:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), settings.METRICS_TOKEN.encode()):
            return HttpResponse("A bearer token is required.\n", status=401,
                                content_type="text/plain",
                                headers={"WWW-Authenticate": "Bearer"})
    elif request.META.get("REMOTE_ADDR") not in settings.METRICS_ALLOWED_IPS:
        return HttpResponse("Not from this address: set METRICS_TOKEN or METRICS_ALLOWED_IPS.\n",
                            status=403, content_type="text/plain")
    try:
        text = generate_latest(_registry)
    except DatabaseError:
        # Say so at once (a scraper's own timeout would only say "down"); /healthz tells more.
        return HttpResponse("The database does not answer: no metrics.\n", status=503,
                            content_type="text/plain")
    return HttpResponse(text, content_type=CONTENT_TYPE_LATEST)
