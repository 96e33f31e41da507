"""Public views: Instagram's OAuth redirect lands here."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import selectors, services
from .services import FlowError


@never_cache
@require_GET
def oauth_callback(request: HttpRequest) -> HttpResponse:
    """Instagram's redirect after the owner allowed (or denied) the app.

    Only the staff user who started the authorization can complete it; anything wrong
    (no state, forged, expired or replayed state, a denial, a refused code) is a 400
    page that says why, and nothing is stored."""
    if not (request.user.is_authenticated and request.user.is_staff):
        return _error(request, "Sign in to the registry's admin, then start the authorization "
                      "again from the account's Authorize action.", status=403)
    try:
        account = services.oauth_callback(params=request.GET, user=request.user,
                                          now=timezone.now())
    except FlowError as exc:
        return _error(request, exc.message, account=exc.account)
    messages.success(request, selectors.account_summary(account_id=account.pk, verb="authorized"))
    return HttpResponseRedirect(reverse("admin:accounts_account_change", args=[account.pk]))


def _error(request: HttpRequest, message: str, *, account=None, status: int = 400) -> HttpResponse:  # noqa: ANN001
    return render(request, "accounts/oauth_error.html",
                  {"message": message, "account": account, "title": "Authorization failed"},
                  status=status)
