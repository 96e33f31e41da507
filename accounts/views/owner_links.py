"""Public pages of owner authorization links: the page an owner opens from the link,
the start of their authorization, their return from Instagram and the thank-you page.

No login: the link's secret (in the URL) is the credential, so every page here is kept
out of caches, search engines and Referer headers, and shows nothing secret and no admin
link. Only a POST (CSRF-protected) starts anything: a mail scanner fetching the link
changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from .. import selectors, services
from ..models import OwnerLink
from ..selectors import OwnerLinkState
from ..services import OwnerFlowFailed, OwnerLinkRefused
from ..timeutil import utc_text

PRODUCT_NAME = "igregistry"
LINK_PARAM = selectors.OWNER_LINK_PARAM
# The browser that opened a link is bound to the OAuth states it started: their hashes, in
# a signed cookie (django.core.signing), read back when Instagram redirects to the
# callback. A few at once: an owner may open two links (two accounts) in one browser.
# The hashes are hex, joined by ".": with the signer's ":" and URL-safe base64, the value
# stays within RFC 6265's cookie-octets, which browsers and cookie jars keep verbatim
# (JSON's quotes and commas are not among them: Python's jar quotes and escapes them).
FLOW_COOKIE = "igregistry_owner_flow"
FLOW_COOKIE_SEPARATOR = "."
_STATE_HASH = re.compile(r"[0-9a-f]{64}")  # oauth_state_issue's SHA-256, hex
FLOW_COOKIE_SALT = "accounts.owner_links.flow"
FLOW_COOKIE_KEEP = 5
DONE_SALT = "accounts.owner_links.done"
# The thank-you page's address works this long (it names the account, nothing else).
DONE_MAX_AGE_SECONDS = 3600
# Status of a refused link: gone for good (410) unless it never existed (404).
_REFUSED_STATUS = {OwnerLinkState.USED: 410, OwnerLinkState.EXPIRED: 410,
                   OwnerLinkState.REVOKED: 410, OwnerLinkRefused.UNKNOWN: 404}


def public_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Never cached, never indexed, never sent as a Referer (the secret is in the URL):
    `no-referrer` unless the view chose otherwise (see `owner_authorize`)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response["X-Robots-Tag"] = "noindex, nofollow"
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    return never_cache(wrapped)


def _context(**context: object) -> dict[str, object]:
    return {"product": PRODUCT_NAME, **context}


def _asker(link: OwnerLink | None) -> str:
    """Whom the owner asks for a new link: the creator's full name when staff gave one
    (never the login name), else the sender."""
    name = link.created_by.get_full_name().strip() if link and link.created_by else ""
    return name or "the person who sent you this link"


def _refused(request: HttpRequest, refusal: OwnerLinkRefused) -> HttpResponse:
    return render(request, "accounts/owner/refused.html",
                  _context(title="This link cannot be used", refusal=refusal,
                           reason=refusal.reason, link=refusal.link,
                           account=refusal.link.account if refusal.link else None,
                           asker=_asker(refusal.link)),
                  status=_REFUSED_STATUS.get(refusal.reason, 400))


@public_page
@require_http_methods(["GET", "POST"])
def owner_authorize(request: HttpRequest) -> HttpResponse:
    """The link: /owner/authorize/?link=<secret>. The secret travels in the query string,
    which the access log leaves out (gunicorn.conf.py) and the log filter masks; a path
    would be logged with every request.

    GET: the page naming the registry and the account, with a "Continue to Instagram"
    button; a link that cannot be used gets a page saying why (404 unknown, 410 used,
    expired or revoked). Nothing changes on a GET.

    POST: start the owner's authorization and send the browser to Instagram, binding it
    to the state (signed cookie)."""
    now = timezone.now()
    secret = request.GET.get(LINK_PARAM, "")
    if request.method == "POST":
        try:
            start = services.owner_link_start(secret=secret, now=now)
        except OwnerLinkRefused as exc:
            return _refused(request, exc)
        response = HttpResponseRedirect(start.authorize_url)
        hashes = [start.state_hash, *_bound_state_hashes(request)][:FLOW_COOKIE_KEEP]
        response.set_signed_cookie(
            FLOW_COOKIE, FLOW_COOKIE_SEPARATOR.join(hashes), salt=FLOW_COOKIE_SALT,
            max_age=settings.OAUTH_STATE_TTL_SECONDS, path="/", httponly=True,
            # Lax: sent on Instagram's redirect (a top-level GET), never on cross-site POSTs.
            samesite="Lax", secure=settings.SESSION_COOKIE_SECURE,
        )
        return response
    link = selectors.owner_link_find(secret=secret)
    refusal = services.owner_link_refusal(link=link, now=now)
    if refusal is not None:
        return _refused(request, refusal)
    response = render(request, "accounts/owner/authorize.html",
                      _context(title=f"Authorize {link.account.label}", link=link,
                               account=link.account, site_url=settings.SITE_URL,
                               expires=utc_text(link.expires_at)))
    # Not no-referrer on the page with the form: browsers then send "Origin: null" with
    # its POST, which the CSRF check must refuse. same-origin still gives no other site
    # a Referer (Instagram gets none: the redirect to it says no-referrer).
    response["Referrer-Policy"] = "same-origin"
    return response


def _bound_state_hashes(request: HttpRequest) -> list[str]:
    """The state hashes this browser was bound to (none when the cookie is missing,
    forged or older than OAUTH_STATE_TTL_SECONDS)."""
    value = request.get_signed_cookie(FLOW_COOKIE, default=None, salt=FLOW_COOKIE_SALT,
                                      max_age=settings.OAUTH_STATE_TTL_SECONDS)
    if not value:
        return []
    return [h for h in value.split(FLOW_COOKIE_SEPARATOR) if _STATE_HASH.fullmatch(h)]


@public_page
def owner_callback(request: HttpRequest) -> HttpResponse:
    """Instagram's redirect for a state an owner link started (the OAuth callback hands it
    over): complete the authorization, then send the browser to the thank-you page. A
    denial or a failure is a public error page (400); the link stays usable."""
    try:
        account = services.owner_link_callback(
            params=request.GET, bound_state_hashes=_bound_state_hashes(request),
            now=timezone.now())
    except OwnerLinkRefused as exc:
        return _refused(request, exc)
    except OwnerFlowFailed as exc:
        return render(request, "accounts/owner/failed.html",
                      _context(title="Authorization not completed", failure=exc,
                               account=exc.account, link=exc.link, asker=_asker(exc.link),
                               expires=utc_text(exc.link.expires_at)),
                      status=400)
    # Away from the callback's URL (it held the code): a reload must not replay it.
    done = signing.dumps(account.pk, salt=DONE_SALT, compress=True)
    return HttpResponseRedirect(reverse("owner-authorized", args=[done]))


@public_page
@require_GET
def owner_authorized(request: HttpRequest, done: str) -> HttpResponse:
    """The thank-you page: the account's label and @username, nothing more."""
    try:
        account_id = signing.loads(done, salt=DONE_SALT, max_age=DONE_MAX_AGE_SECONDS)
    except signing.BadSignature:
        account_id = None
    account = (selectors.owner_page_account(account_id=account_id)
               if isinstance(account_id, int) else None)
    if account is None:
        return _refused(request, services.owner_link_refusal(link=None, now=timezone.now()))
    return render(request, "accounts/owner/done.html",
                  _context(title="Thank you", account=account))
