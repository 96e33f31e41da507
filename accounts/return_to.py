"""Keeping staff's place: an action started from the dashboard returns to that page, with
its filters, search, sort and page number.

The page a button was pressed on travels as `next` (a form field, or a query parameter
of a link) and is followed only when it is a path on this host
(`url_has_allowed_host_and_scheme`): an open redirect would let a crafted link send
signed-in staff anywhere. An authorization leaves for Instagram and comes back through
the callback, so its `next` waits in the session, for that account, until the flow ends.
"""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.http import url_has_allowed_host_and_scheme

NEXT = "next"
_SESSION_KEY = "igregistry_return_to"


def safe_next(request: HttpRequest, value: str | None = None) -> str | None:
    """`value` (by default the request's `next`, posted or in the query string) when it is
    a path on this host, else None."""
    if value is None:
        value = request.POST.get(NEXT) or request.GET.get(NEXT)
    if not value or not value.startswith("/") or len(value) > 2000:
        return None
    if not url_has_allowed_host_and_scheme(value, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        return None
    return value


def return_to_remember(request: HttpRequest, *, account_id: int) -> None:
    """Keep the request's safe `next` for when the authorization of `account_id` ends
    (forgotten when there is none: an older one must not hijack this flow)."""
    back = safe_next(request)
    places = dict(request.session.get(_SESSION_KEY, {}))
    if back is None:
        if places.pop(str(account_id), None) is not None:
            request.session[_SESSION_KEY] = places
        return
    places[str(account_id)] = back
    request.session[_SESSION_KEY] = places


def return_to_take(request: HttpRequest, *, account_id: int) -> str | None:
    """The place kept for `account_id`'s authorization, once (None when there is none)."""
    if not hasattr(request, "session"):
        return None
    places = dict(request.session.get(_SESSION_KEY, {}))
    back = places.pop(str(account_id), None)
    if back is not None:
        request.session[_SESSION_KEY] = places
    return safe_next(request, back) if back else None

