"""The account's own pages beyond Django's: Authorize, paste, owner link, import, take
over a file, and the expiry dashboard. Each checks the permission it needs when it acts."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from .. import dashboard, selectors, services
from ..forms import ImportTokenForm, OwnerLinkForm, PasteForm
from ..models import Account
from ..return_to import return_to_remember, return_to_take
from ..services import Actor, FlowError
from ..timeutil import local_text


def redirects_here(request: HttpRequest, redirect_uri: str) -> bool:
    """Whether Instagram's redirect lands on this registry's callback for this browser."""
    parts = urlsplit(redirect_uri)
    return parts.path == reverse("oauth-callback") and parts.netloc == request.get_host()


class AccountPagesMixin:
    """Extra admin pages of AccountAdmin (which provides the has_*_permission checks)."""

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/authorize/", wrap(require_POST(self.authorize_view)),
                 name="accounts_account_authorize"),
            path("<int:pk>/paste/",
                 wrap(sensitive_post_parameters("redirected_url")(self.paste_view)),
                 name="accounts_account_paste"),
            path("<int:pk>/owner-link/", wrap(self.owner_link_view),
                 name="accounts_account_owner_link"),
            path("<int:pk>/take-over-file/", wrap(require_POST(self.take_over_view)),
                 name="accounts_account_take_over_file"),
            path("<int:pk>/confirm-role/", wrap(require_POST(self.confirm_role_view)),
                 name="accounts_account_confirm_role"),
            path("<int:pk>/import-token/",
                 wrap(sensitive_post_parameters("access_token")(self.import_view)),
                 name="accounts_account_import"),
            path("dashboard/", wrap(self.dashboard_view), name="accounts_account_dashboard"),
            *super().get_urls(),
        ]

    def _account_or_403(self, request: HttpRequest, pk: int, *, allowed: bool) -> Account:
        if not allowed:
            raise PermissionDenied
        return get_object_or_404(Account.objects.select_related("app"), pk=pk)

    def _page(self, request: HttpRequest, template: str, status: int = 200,
              **context: object) -> HttpResponse:
        context = {**self.admin_site.each_context(request), "opts": self.opts, **context}
        return TemplateResponse(request, template, context, status=status)

    def _done(self, request: HttpRequest, account: Account, verb: str) -> HttpResponse:
        summary = selectors.account_summary(account_id=account.pk, verb=verb)
        level = messages.SUCCESS if summary.file_ok else messages.WARNING
        messages.add_message(request, level, summary.text)
        back = return_to_take(request, account_id=account.pk)
        return HttpResponseRedirect(
            back or reverse("admin:accounts_account_change", args=[account.pk]))

    # --- authorize and paste (permission: authorize_account) ---
    def _start_authorize(self, request: HttpRequest, account: Account) -> HttpResponse:
        url = services.oauth_start(account=account, user=request.user, now=timezone.now())
        if redirects_here(request, account.app.redirect_uri):
            return HttpResponseRedirect(url)
        # Instagram will send the browser to another website: staff paste the URL back.
        return self._paste_page(request, account, PasteForm(), authorize_url=url)

    def authorize_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        account = self._account_or_403(request, pk, allowed=self.has_authorize_permission(request))
        # Started from the dashboard: back there once the callback (or the paste) is done.
        return_to_remember(request, account_id=account.pk)
        return self._start_authorize(request, account)

    def _paste_page(self, request: HttpRequest, account: Account, form: PasteForm,
                    authorize_url: str | None = None, status: int = 200,
                    advice: str = "") -> HttpResponse:
        return self._page(request, "admin/accounts/account/paste.html", status,
                          title=f"Authorize {account}", account=account, form=form,
                          authorize_url=authorize_url, advice=advice)

    def paste_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        account = self._account_or_403(request, pk, allowed=self.has_authorize_permission(request))
        form = PasteForm(request.POST or None)
        advice = ""
        if request.method == "POST" and form.is_valid():
            try:
                services.oauth_paste(account=account, text=form.cleaned_data["redirected_url"],
                                     user=request.user, now=timezone.now())
            except FlowError as exc:
                form.add_error(None, exc.message)
                advice = exc.advice
            else:
                return self._done(request, account, "authorized")
        return self._paste_page(request, account, form, advice=advice,
                                status=400 if request.method == "POST" else 200)

    # --- onboarding: the role at Meta, ticked by staff (permission: authorize_account) ---
    def confirm_role_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Tick (or untick, `confirmed=0`) the checklist's "tester / role confirmed" step;
        recorded as an event."""
        account = self._account_or_403(request, pk, allowed=self.has_authorize_permission(request))
        confirmed = request.POST.get("confirmed") != "0"
        services.account_role_confirm(account=account, confirmed=confirmed,
                                      actor=Actor(user=request.user), now=timezone.now())
        messages.success(request, f"{account}: role at Meta "
                         + ("confirmed." if confirmed else "no longer marked as confirmed."))
        return HttpResponseRedirect(
            reverse("admin:accounts_account_change", args=[pk]) + "#onboarding")

    # --- owner link (permission: authorize_account) ---
    def owner_link_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """GET: the lifetime form. POST: create the link and show it, this once (only its
        hash is kept). The admin's views are never cached."""
        account = self._account_or_403(request, pk, allowed=self.has_authorize_permission(request))
        form = OwnerLinkForm(request.POST or None)
        context = {"title": f"Owner authorization link for {account}", "account": account,
                   "form": form,
                   "completes_here": selectors.owner_link_completes_here(
                       redirect_uri=account.app.redirect_uri),
                   "callback_url": selectors.callback_url()}
        if request.method == "POST" and form.is_valid():
            link, secret = services.owner_link_create(
                account=account, user=request.user, now=timezone.now(),
                lifetime=timedelta(days=form.cleaned_data["days"]))
            context.update(link=link, link_url=selectors.owner_link_url(secret=secret),
                           expires=local_text(link.expires_at))
        return self._page(request, "admin/accounts/account/owner_link.html",
                          400 if request.method == "POST" and not form.is_valid() else 200,
                          **context)

    # --- import (permission: import_token) ---
    def import_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        account = self._account_or_403(request, pk, allowed=self.has_import_permission(request))
        form = ImportTokenForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                services.token_import(
                    account=account,
                    access_token=form.cleaned_data["access_token"],
                    kind=form.cleaned_data["kind"],
                    expires_at=form.cleaned_data["expires_at"],
                    actor=Actor(user=request.user),
                    now=timezone.now(),
                )
            except FlowError as exc:
                form.add_error(None, exc.message)
            else:
                return self._done(request, account, "imported")
        return self._page(request, "admin/accounts/account/import.html",
                          400 if request.method == "POST" else 200,
                          title=f"Import a token for {account}", account=account, form=form)

    # --- take over a token file (permission: take_over_tokenfile) ---
    def take_over_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Give this account the file name another account owns (logged on both)."""
        account = self._account_or_403(request, pk, allowed=self.has_take_over_permission(request))
        try:
            path_ = services.token_file_take_over(account=account,
                                                  actor=Actor(user=request.user),
                                                  now=timezone.now())
        except FlowError as exc:
            messages.error(request, exc.message)
        else:
            account.refresh_from_db()
            if path_ is None:
                messages.warning(request, f"{account}: took over the file name, but the file "
                                 f"was not written: {account.file_error or 'no token yet'}")
            elif account.status == Account.Status.NEEDS_REAUTH:
                messages.warning(request, f"{account}: took over and wrote {path_}, but the "
                                 f"token in it is dead: authorize the account again.")
            else:
                messages.success(request, f"{account}: took over and wrote {path_}.")
        return HttpResponseRedirect(reverse("admin:accounts_account_change", args=[pk]))

    # --- the dashboard (permission: view_account) ---
    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        """Every account by urgency, with counts per state and the expiry timeline."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = timezone.now()
        return self._page(
            request, "admin/accounts/dashboard.html",
            title="Expiry dashboard",
            dash=dashboard.build(params=request.GET, now=now),
            now=now,
            may=self.permissions_of(request),
            # Where the page's buttons come back to: this page, filters and all.
            here=request.get_full_path(),
            time_zone=timezone.localtime(now).tzname(),
            chart_width=dashboard.CHART_WIDTH,
            chart_height=dashboard.CHART_HEIGHT,
            chart_pad=dashboard.CHART_PAD,
            chart_inner=dashboard.CHART_HEIGHT - 2 * dashboard.CHART_PAD,
            chart_baseline=dashboard.CHART_HEIGHT - dashboard.CHART_PAD,
            chart_right=dashboard.CHART_WIDTH - dashboard.CHART_PAD,
        )

    def permissions_of(self, request: HttpRequest) -> dict[str, bool]:
        """Which buttons to show this user (each action checks again when it runs)."""
        return {
            "authorize": self.has_authorize_permission(request),
            "verify": self.has_verify_permission(request),
            "refresh": self.has_refresh_permission(request),
            "export": self.has_export_permission(request),
            "import": self.has_import_permission(request),
            "take_over": self.has_take_over_permission(request),
        }
