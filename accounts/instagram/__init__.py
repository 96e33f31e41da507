"""The only code that speaks HTTP to Instagram. It imports nothing from Django.

- `transport`: the session, timeouts and the per-call deadline;
- `answers`: typed results built only from values that pass explicit rules;
- `errors`: Instagram's refusals as exceptions (TokenInvalid, RateLimited, Transient,
  MalformedAnswer, InstagramError);
- `usage`: bounded JSON and the usage headers; `callback`: the redirect and pasted URLs;
- `redaction`: secrets masked in text and logs; `flavours`: the two API flavours and
  their scopes; `guidance`: Meta's error messages turned into what staff should do;
- `signed_request`: Meta's signed callbacks (deauthorize, data deletion), verified.

Everything above it deals in these results and exceptions, never in HTTP. Secrets never
appear in an exception message, a repr, or a URL that gets logged. Endpoint facts:
shared/instagram-api.md.
"""

from .answers import LongLivedToken, Profile, ShortLivedToken
from .callback import CallbackParams, clean_code, parse_callback, parse_pasted
from .client import InstagramClient
from .errors import (
    InstagramError,
    MalformedAnswer,
    RateLimited,
    TokenInvalid,
    Transient,
    Unreachable,
)
from .flavours import (
    ALLOWED_SCOPES,
    BASIC_DISPLAY_SHUTDOWN,
    BUSINESS_SCOPES_RETIRED,
    DEFAULT_SCOPES,
    Flavour,
    ScopeCheck,
    scopes_check,
)
from .guidance import Guidance, failure_text, guidance_for, guidance_for_error, with_advice
from .redaction import RedactSecretsFilter, mask, redact_secrets
from .signed_request import (
    SignedRequest,
    SignedRequestInvalid,
    signed_request_parse,
)
from .usage import Usage

__all__ = [
    "ALLOWED_SCOPES",
    "BASIC_DISPLAY_SHUTDOWN",
    "BUSINESS_SCOPES_RETIRED",
    "DEFAULT_SCOPES",
    "CallbackParams",
    "Flavour",
    "Guidance",
    "InstagramClient",
    "InstagramError",
    "LongLivedToken",
    "MalformedAnswer",
    "Profile",
    "RateLimited",
    "RedactSecretsFilter",
    "ScopeCheck",
    "ShortLivedToken",
    "SignedRequest",
    "SignedRequestInvalid",
    "TokenInvalid",
    "Transient",
    "Unreachable",
    "Usage",
    "clean_code",
    "failure_text",
    "guidance_for",
    "guidance_for_error",
    "mask",
    "parse_callback",
    "parse_pasted",
    "redact_secrets",
    "scopes_check",
    "signed_request_parse",
    "with_advice",
]
