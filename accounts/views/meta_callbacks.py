"""Meta's deauthorize and data-deletion callbacks, and the public data-deletion status
page (shared/instagram-api.md, section 7). Thin: a service verifies and acts, a
selector reads; these turn the outcome into Meta's JSON or a page."""

from __future__ import annotations

import logging
from io import BytesIO

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .. import selectors, services
from ..crypto import DecryptionError
from ..instagram import SignedRequestInvalid
from ..instagram.signed_request import MAX_SIGNED_REQUEST_CHARS
from ..models import InstagramApp

logger = logging.getLogger(__name__)

# The form Meta posts holds one field of at most MAX_SIGNED_REQUEST_CHARS; anything much
# larger is refused, read no further than one byte past this, whatever the framing.
MAX_BODY_BYTES = MAX_SIGNED_REQUEST_CHARS + 1024


class _Refused(Exception):
    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason, self.status = reason, status


@csrf_exempt  # Meta posts from its servers, with a signature instead of a CSRF token
@never_cache
@require_POST
def meta_deauthorize(request: HttpRequest, app_pk: int) -> HttpResponse:
    """Meta's deauthorize callback for one app: 200 `{"status": "ok"}` once applied (also
    for a replay or a user the registry does not know); 400 `{"error": ...}` with nothing
    changed for a missing, oversized, malformed, forged or expired signed_request; 404
    for an unknown app."""
    try:
        app, signed_request = _app_and_signed_request(request, app_pk)
        services.deauthorize_apply(app=app, signed_request=signed_request, now=timezone.now())
    except _Refused as exc:
        return JsonResponse({"error": exc.reason}, status=exc.status)
    except SignedRequestInvalid as exc:
        return JsonResponse({"error": exc.reason}, status=400)
    except DecryptionError:
        return _secret_unreadable(app_pk)
    return JsonResponse({"status": "ok"})


@csrf_exempt  # Meta posts from its servers, with a signature instead of a CSRF token
@never_cache
@require_POST
def meta_data_deletion(request: HttpRequest, app_pk: int) -> HttpResponse:
    """Meta's data-deletion callback for one app: 200 with `{"url": <the status page,
    absolute from SITE_URL>, "confirmation_code": <letters and digits>}` once the data is
    deleted (the same answer for a replay); 400 `{"error": ...}` with nothing changed for
    a missing, oversized, malformed, forged or expired signed_request; 404 for an unknown
    app; 503 when the deletion could not be completed (Meta retries)."""
    try:
        app, signed_request = _app_and_signed_request(request, app_pk)
        record = services.data_deletion_apply(app=app, signed_request=signed_request,
                                              now=timezone.now())
    except _Refused as exc:
        return JsonResponse({"error": exc.reason}, status=exc.status)
    except SignedRequestInvalid as exc:
        return JsonResponse({"error": exc.reason}, status=400)
    except services.DataDeletionFailed as exc:
        return JsonResponse({"error": exc.message}, status=503)
    except DecryptionError:
        return _secret_unreadable(app_pk)
    code = record.confirmation_code
    return JsonResponse({
        "url": selectors.data_deletion_status_url(confirmation_code=code),
        "confirmation_code": code,
    })


@never_cache
@require_GET
def meta_data_deletion_status(request: HttpRequest, code: str) -> HttpResponse:
    """The public status page of one data-deletion request (no login): its confirmation
    code, its state and its date, nothing else. An unknown code is a 404 page."""
    record = selectors.data_deletion_request_find(confirmation_code=code)
    if record is None:
        raise Http404("No data deletion request has this confirmation code.")
    return render(request, "accounts/data_deletion_status.html", {"record": record})


def _app_and_signed_request(request: HttpRequest,
                            app_pk: int) -> tuple[InstagramApp, str | None]:
    app = selectors.instagram_app_for_callback(app_pk=app_pk)
    if app is None:
        raise _Refused("unknown app.", status=404)
    values = _form(request).getlist("signed_request")
    if len(values) > 1:
        raise _Refused("signed_request is malformed: given more than once.")
    # A missing or empty one is the parser's to refuse ("signed_request is missing.").
    return app, values[0] if values else None


def _form(request: HttpRequest) -> QueryDict:
    """The posted form, from at most MAX_BODY_BYTES of body: a larger body is refused
    whether its size is announced (Content-Length, refused unread) or not (a chunked
    body under ASGI, which Django would otherwise read up to DATA_UPLOAD_MAX_MEMORY_SIZE,
    2.5 MB by default). URL-encoded (what Meta sends) or multipart; anything else is an
    empty form."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise _Refused("the request's Content-Length is not a number.") from None
    if length > MAX_BODY_BYTES:
        raise _Refused("signed_request is too large.")
    try:
        body = request.read(MAX_BODY_BYTES + 1)
    except OSError:  # the caller went away mid-body
        raise _Refused("the request's body could not be read.") from None
    if len(body) > MAX_BODY_BYTES:
        raise _Refused("signed_request is too large.")
    try:
        if request.content_type == "application/x-www-form-urlencoded":
            return QueryDict(body, encoding="utf-8")
        if request.content_type == "multipart/form-data":
            # The parser reads as many bytes as Content-Length says: the ones read here.
            meta = {**request.META, "CONTENT_LENGTH": str(len(body))}
            form, _files = request.parse_file_upload(meta, BytesIO(body))
            return form
    except RequestDataTooBig:
        raise _Refused("signed_request is too large.") from None
    except (MultiPartParserError, SuspiciousOperation):
        raise _Refused("signed_request is malformed: the form cannot be read.") from None
    return QueryDict()


def _secret_unreadable(app_pk: int) -> HttpResponse:
    logger.error("meta callback: the secret of app %s cannot be decrypted with any key in "
                 "ENCRYPTION_KEYS; the callback was not applied", app_pk)
    return JsonResponse({"error": "the registry cannot check signatures for this app now."},
                        status=503)
