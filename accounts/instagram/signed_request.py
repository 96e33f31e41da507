"""Meta's `signed_request`: what its deauthorize and data-deletion callbacks POST.

Format (shared/instagram-api.md, section 7; Meta's docs pages "Deauthorize Callback" and
"Data Deletion Request Callback"): `<sig>.<payload>`, both base64url without padding;
`sig` is the HMAC-SHA256 of the *encoded* payload string, keyed with the app secret;
the payload is a JSON object such as
`{"algorithm": "HMAC-SHA256", "issued_at": 1291836800, "expires": 1291840400,
"user_id": "218471"}` (`expires` may be absent).

`signed_request_parse` checks everything before anything else reads the payload: size,
alphabet, signature (constant-time), then the JSON, the algorithm, the times and the
user id. Anything wrong is one exception, `SignedRequestInvalid`, whose `reason` is a
short sentence safe to answer to the caller (it never holds the secret or the payload).
No Django imports: the services call it with the app's secret and the time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime

from .usage import json_depth_ok

# A real signed_request is a few hundred characters; anything near this is not Meta's.
MAX_SIGNED_REQUEST_CHARS = 8 * 1024
# The payload is a flat object; nesting deeper than this is not Meta's either.
MAX_JSON_DEPTH = 4
# Instagram's ids are at most 20-odd digits; the registry stores up to 32.
MAX_USER_ID_DIGITS = 32
# Meta's clock and ours may disagree a little; not more.
CLOCK_SKEW_SECONDS = 300
# Meta sends the callback when the owner acts; an `issued_at` older than this is a replay
# of an old request (or a delivery so late that the owner may have authorized again).
MAX_AGE_SECONDS = 24 * 3600

ALGORITHM = "HMAC-SHA256"
# base64url, with or without '=' padding (Meta sends none; some proxies and SDKs add it).
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_DIGITS = re.compile(r"[0-9]+")


class SignedRequestInvalid(ValueError):
    """The signed_request is missing, malformed, forged or expired. `reason` says which,
    in words safe to return to the caller (never the secret, the payload or the id)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SignedRequest:
    """A verified signed_request. `user_id` is the Instagram user's id as text (ASCII
    digits; it may exceed 2**53 and never passes through a float); `issued_at` and
    `expires` (None when absent) are Unix times in seconds."""

    user_id: str
    issued_at: int
    expires: int | None
    # The request as received, the signature's optional padding removed: the one text a
    # replay of this request always has (the signature's padding is not signed).
    canonical: str


def signed_request_parse(
    signed_request: object,
    *,
    app_secret: str,
    now: datetime,
    max_age_seconds: int = MAX_AGE_SECONDS,
    skew_seconds: int = CLOCK_SKEW_SECONDS,
) -> SignedRequest:
    """Verify `signed_request` with the app's secret at time `now` (timezone-aware) and
    return what it says.

    Raises SignedRequestInvalid when it is not a string, is empty or longer than
    MAX_SIGNED_REQUEST_CHARS, is not two base64url parts joined by one dot, its signature
    is not the 32-byte HMAC-SHA256 of the encoded payload under `app_secret`, the payload
    is not a small JSON object, `algorithm` is not HMAC-SHA256 (any case), `issued_at`
    is not an integer, lies more than `skew_seconds` ahead of `now` or more than
    `max_age_seconds` behind it, `expires` (when present) is not an integer or has
    passed, or `user_id` is not 1 to MAX_USER_ID_DIGITS ASCII digits (a JSON string or a
    non-negative integer)."""
    if not isinstance(signed_request, str) or not signed_request:
        raise SignedRequestInvalid("signed_request is missing.")
    if len(signed_request) > MAX_SIGNED_REQUEST_CHARS:
        raise SignedRequestInvalid("signed_request is too large.")
    if not app_secret:
        raise SignedRequestInvalid("the app has no secret to check the signature with.")
    parts = signed_request.split(".")
    if len(parts) != 2:
        raise SignedRequestInvalid("signed_request is malformed: expected <signature>.<payload>.")
    encoded_sig, encoded_payload = parts
    signature = _b64url_decode(encoded_sig, what="signature")
    if len(signature) != hashlib.sha256().digest_size:
        raise SignedRequestInvalid("signed_request is malformed: the signature is not 32 bytes.")
    payload_bytes = _b64url_decode(encoded_payload, what="payload")
    # The signature covers the payload exactly as it was sent (its encoded text).
    expected = hmac.new(app_secret.encode("utf-8"), encoded_payload.encode("ascii"),
                        hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise SignedRequestInvalid("the signature does not match this app's secret.")
    payload = _json_object(payload_bytes)

    algorithm = payload.get("algorithm")
    # ASCII only: str.upper() maps other letters onto ASCII ones ("ſ" -> "S").
    if not isinstance(algorithm, str) or not algorithm.isascii() or (
            algorithm.upper() != ALGORITHM):
        raise SignedRequestInvalid("unsupported algorithm: only HMAC-SHA256 is accepted.")
    issued_at = payload.get("issued_at")
    if not _is_int(issued_at):
        raise SignedRequestInvalid("issued_at is missing or not an integer.")
    expires = payload.get("expires")
    if expires is not None and not _is_int(expires):
        raise SignedRequestInvalid("expires is not an integer.")
    at = now.timestamp()
    if issued_at > at + skew_seconds:
        raise SignedRequestInvalid("issued_at lies in the future.")
    if issued_at < at - max_age_seconds:
        raise SignedRequestInvalid("signed_request has expired (issued too long ago).")
    if expires is not None and expires <= at - skew_seconds:
        raise SignedRequestInvalid("signed_request has expired.")
    return SignedRequest(user_id=_user_id(payload.get("user_id")), issued_at=issued_at,
                         expires=expires,
                         canonical=f"{encoded_sig.rstrip('=')}.{encoded_payload}")


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str, *, what: str) -> bytes:
    """Strict base64url: its alphabet only, padding optional but right when present, and
    the canonical encoding of what it decodes to (no stray bits in the last character)."""
    bad = SignedRequestInvalid(f"signed_request is malformed: the {what} is not base64url.")
    if not _BASE64URL.fullmatch(text):
        raise bad
    bare = text.rstrip("=")
    if len(bare) % 4 == 1 or (text != bare and len(text) % 4 != 0):
        raise bad
    try:
        data = base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))
    except (binascii.Error, ValueError):
        raise bad from None
    if _b64url_encode(data) != bare:
        raise bad
    return data


def _json_object(data: bytes) -> dict:
    bad = SignedRequestInvalid("signed_request is malformed: the payload is not a JSON object.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise bad from None
    if not json_depth_ok(text, MAX_JSON_DEPTH):
        raise bad
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicate_keys,
                           parse_constant=_no_constant)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; so are ours
        raise bad from None
    if not isinstance(value, dict):
        raise bad
    return value


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    # Two "user_id"s would let a parser elsewhere read the other one.
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _is_int(value: object) -> bool:
    # bool is an int subclass: `true` is not a time.
    return isinstance(value, int) and not isinstance(value, bool)


def _user_id(value: object) -> str:
    bad = SignedRequestInvalid("user_id is missing or not a string of digits.")
    if _is_int(value):
        if value < 0:
            raise bad
        value = str(value)
    if not isinstance(value, str) or not _DIGITS.fullmatch(value):
        raise bad
    if len(value) > MAX_USER_ID_DIGITS:
        raise bad
    return value
