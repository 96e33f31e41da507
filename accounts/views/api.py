"""The token API: `GET /api/v1/tokens/<account>` for websites on other hosts (README
"Token API"; its OpenAPI document is accounts/openapi.json, served at
/api/v1/openapi.json).

A caller presents an API key (`Authorization: Bearer igr_...`); the key must be live and
scoped to the account. The answer carries an ETag and honours `If-None-Match` (304, no
body), so a poller costs little. Each read is logged (the key's prefix, never the token);
one that hands out the token is also an event on the account."""

from __future__ import annotations

import logging
from pathlib import Path

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.cache import get_conditional_response
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from ..models import SAFE_FILENAME
from ..selectors import api as api_selectors
from ..services import api_keys

logger = logging.getLogger(__name__)

_OPENAPI = Path(__file__).resolve().parent.parent / "openapi.json"


def _error(status: int, code: str, detail: str) -> JsonResponse:
    response = JsonResponse({"error": code, "detail": detail}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="igregistry"'
    response["Cache-Control"] = "no-store"
    return response


@csrf_exempt  # no cookies, no session: a bearer key, so nothing for CSRF to protect
def token_read(request: HttpRequest, account: str) -> HttpResponse:
    """The account's token, expiry and Instagram ids as JSON (200, with an ETag), 304
    when `If-None-Match` names the current ETag; 400 for a malformed name or header,
    401 without a live key, 404 for an account the key may not read, an unknown one
    (the same answer: a key learns nothing of accounts outside its scope) or one without
    a token; 405 (JSON) for a method other than GET."""
    if request.method != "GET":
        response = _error(405, "method_not_allowed", "Only GET is allowed.")
        response["Allow"] = "GET"
        return response
    given = request.headers.get("Authorization", "")
    scheme, _, presented = given.partition(" ")
    key = None
    if scheme.lower() == "bearer" and presented.strip():
        key = api_selectors.api_key_for(presented=presented.strip())
    if key is None:
        logger.info("api read refused: %s key, account=%.100r",
                    "no" if not given else "unknown or revoked", account)
        if not given:
            return _error(401, "missing_key", "Send the API key: Authorization: Bearer igr_...")
        return _error(401, "invalid_key", "That API key is unknown or revoked.")
    # The shape of a token file name (an id is one too): anything else names no account.
    if not SAFE_FILENAME.fullmatch(account):
        return _error(400, "bad_request", "Name the account by its id or token file name.")
    if len(request.headers.get("If-None-Match", "")) > 200:
        return _error(400, "bad_request", "If-None-Match is too long to be an ETag.")
    target = api_selectors.account_for_api(name=account)
    if target is None or not api_selectors.api_key_may_read(key=key, account=target):
        # The log (for operators) says which; the caller gets one answer for both.
        logger.info("api read key=%s account=%.100r: %s", key.prefix, account,
                    "no such account" if target is None else "out of the key's scope")
        return _error(404, "not_found", "This key may read no account with that id or "
                      "token file name.")
    answer = api_selectors.api_token(account=target)
    if answer is None:
        logger.info("api read key=%s account=%s: no token", key.prefix, target.pk)
        return _error(404, "no_token", f"The account holds no token (status "
                      f"{target.status}): it needs authorizing.")
    now = timezone.now()
    unchanged = get_conditional_response(request, etag=answer.etag)
    if unchanged is not None and unchanged.status_code == 304:
        logger.info("api read key=%s account=%s: unchanged (304)", key.prefix, target.pk)
        api_keys.api_key_touch(key=key, now=now)
        return _headers(unchanged, answer.etag)
    api_keys.api_read_record(key=key, account=target, now=now)
    logger.info("api read key=%s account=%s: token given", key.prefix, target.pk)
    return _headers(HttpResponse(answer.body, content_type="application/json"), answer.etag)


def _headers(response: HttpResponse, etag: str) -> HttpResponse:
    response["ETag"] = etag
    # The client may keep it but must ask again each time; no shared cache may keep it.
    response["Cache-Control"] = "private, no-cache"
    response["Vary"] = "Authorization"
    return response


@require_GET
def openapi(request: HttpRequest) -> HttpResponse:
    """The token API's OpenAPI 3 document (public: it holds no secret), as the file is."""
    return HttpResponse(_OPENAPI.read_bytes(), content_type="application/json")
