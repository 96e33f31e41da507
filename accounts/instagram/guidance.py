"""Meta's error messages turned into what staff should do, in one table.

Each known message of the code exchange, the authorize dialog (Instagram's own error page
or its redirect) and the refresh maps to one sentence saying what to change in Meta's
dashboard or on Instagram. `permanent` marks what no retry can fix: the refresh sweep
leaves such an account alone until staff act. Every failure is also worded by what it is:
no answer ("could not reach Instagram"), an unusable answer ("Instagram failed: …"),
Instagram's refusal ("Instagram refused: …") or our own fault ("the registry failed: …").
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InstagramError, Transient, Unreachable
from .flavours import BASIC_DISPLAY_SHUTDOWN, Flavour

# Where an invited Instagram account's owner accepts a tester invitation (Instagram →
# Settings → Apps and websites → Tester invites).
TESTER_INVITES_URL = "https://www.instagram.com/accounts/manage_access/"


@dataclass(frozen=True)
class Guidance:
    """What to do about one kind of failure. `permanent`: no retry can fix it.
    `reauth`: once it is fixed, the account must be authorized again."""

    key: str
    advice: str
    permanent: bool = False
    reauth: bool = False


INSUFFICIENT_ROLE = Guidance(
    "insufficient_role",
    "The Instagram account has no role on this app: at Meta add it under App roles → "
    "Roles → Instagram Testers, have its owner accept the invitation on Instagram "
    f"({TESTER_INVITES_URL}, Tester invites), then authorize again.",
    permanent=True, reauth=True,
)
REDIRECT_MISMATCH = Guidance(
    "redirect_mismatch",
    "The redirect URI differs from the one registered at Meta: make the app's redirect URI "
    "here identical (trailing slash included) to a Valid OAuth Redirect URI in Meta's "
    "dashboard, then authorize again.",
    permanent=True,
)
INVALID_PLATFORM_APP = Guidance(
    "invalid_platform_app",
    "Instagram does not know this app ID for this API: copy the Instagram app ID from Meta's "
    "dashboard (not the Facebook app ID) into the app here, and check that its API flavour "
    "matches the product added at Meta and that the app is not disabled there.",
    permanent=True,
)
INVALID_SECRET = Guidance(
    "invalid_secret",
    "The app secret is not this app's: copy the Instagram app secret from Meta's dashboard "
    "into the app here, then authorize again.",
    permanent=True,
)
CODE_USED = Guidance(
    "code_used",
    "Each authorization code works once: press Authorize again for a fresh one (do not "
    "reload the callback page or paste the same address twice).",
)
CODE_NOT_FOUND = Guidance(
    "code_not_found",
    "The code is unknown, expired (a code lives one hour) or already used: press Authorize "
    "again and paste the address of that attempt within the hour.",
)
RETIRED_API = Guidance(
    "retired_api",
    f"The Basic Display API was shut down on {BASIC_DISPLAY_SHUTDOWN}: its tokens can no "
    "longer be refreshed. Create an app with the Instagram API with Instagram Login (a "
    "Business or Creator account), move this account to it and authorize again.",
    permanent=True, reauth=True,
)
INVALID_SCOPE = Guidance(
    "invalid_scope",
    "Instagram refused a requested permission: keep only current instagram_business_* "
    "scopes on the app here (or leave them blank for the default) and check the permission "
    "is added to the app at Meta.",
    permanent=True,
)
DENIED = Guidance(
    "denied",
    "The owner pressed Cancel at Instagram: nothing changes until they allow the app; press "
    "Authorize again (or send an owner link) when they are ready.",
)
NETWORK = Guidance(
    "network",
    "Nothing is wrong at Meta: check this server's connection to Instagram (DNS, proxy, "
    "firewall) and try again in a few minutes.",
)
INSTAGRAM_FAILED = Guidance(
    "instagram_failed",
    "Nothing to change here or at Meta: Instagram answered with an error of its own. Try "
    "again in a few minutes; refreshes are tried again by themselves.",
)


@dataclass(frozen=True)
class _Rule:
    """Matches a message holding every fragment (case-insensitively), and the code and
    the app's flavour when they are given."""

    fragments: tuple[str, ...]
    guidance: Guidance
    code: int | None = None
    flavour: Flavour | None = None


# The table: first match wins. Messages as Meta words them (shared/instagram-api.md,
# sections 2 and 6, and what the dialog shows).
RULES: tuple[_Rule, ...] = (
    _Rule(("insufficient developer role",), INSUFFICIENT_ROLE),
    _Rule(("error validating verification code", "redirect_uri"), REDIRECT_MISMATCH),
    _Rule(("invalid redirect_uri",), REDIRECT_MISMATCH),
    _Rule(("invalid platform app",), INVALID_PLATFORM_APP),
    _Rule(("invalid client secret",), INVALID_SECRET),
    _Rule(("authorization code has been used",), CODE_USED),
    _Rule(("matching code was not found",), CODE_NOT_FOUND),
    # Only where it means what it says: the Basic Display API is gone. Elsewhere code 100
    # is some other bad parameter, retried by the next sweep.
    _Rule(("unsupported request",), RETIRED_API, code=100, flavour=Flavour.BASIC_DISPLAY),
    _Rule(("invalid scope",), INVALID_SCOPE),
    _Rule(("access_denied",), DENIED),
    _Rule(("user denied",), DENIED),
)

# Examples of each rule's message, for the app page and the tests.
EXAMPLES: tuple[tuple[str, int | None, Guidance], ...] = (
    ("Insufficient developer role", None, INSUFFICIENT_ROLE),
    ("Error validating verification code. Please make sure your redirect_uri is identical "
     "to the one you used in the OAuth dialog request.", None, REDIRECT_MISMATCH),
    ("Invalid redirect_uri", None, REDIRECT_MISMATCH),
    ("Invalid platform app", None, INVALID_PLATFORM_APP),
    ("Invalid Client Secret", None, INVALID_SECRET),
    ("This authorization code has been used", None, CODE_USED),
    ("Matching code was not found or was already used", None, CODE_NOT_FOUND),
    ("Unsupported request - method type: get (on a Basic Display app)", 100, RETIRED_API),
    ("Invalid scope: business_basic", None, INVALID_SCOPE),
    ("access_denied: The user denied your request", None, DENIED),
)


def guidance_for(message: str | None, *, code: int | None = None,
                 flavour: str | None = None) -> Guidance | None:
    """The guidance for Instagram's message (with its Graph code and the app's flavour,
    when known), or None when unknown."""
    text = (message or "").lower()
    if not text:
        return None
    for rule in RULES:
        if rule.code is not None and rule.code != code:
            continue
        if rule.flavour is not None and rule.flavour != flavour:
            continue
        if all(fragment in text for fragment in rule.fragments):
            return rule.guidance
    return None


def guidance_for_error(exc: BaseException, *, flavour: str | None = None) -> Guidance | None:
    """The guidance for a failure: Instagram's known refusals, and no answer at all."""
    if isinstance(exc, Unreachable):
        return NETWORK
    if isinstance(exc, InstagramError) and not exc.ours:
        known = guidance_for(exc.message, code=exc.code, flavour=flavour)
        if known is None and isinstance(exc, Transient):
            return INSTAGRAM_FAILED  # a 5xx or an unusable answer: Instagram's side
        return known
    return None


def failure_text(exc: BaseException) -> str:
    """The failure worded by what it is, without a final full stop: "could not reach
    Instagram: …" (no answer), "Instagram failed: …" (a 5xx or an unusable answer),
    "Instagram refused: …" or "the registry failed: …"."""
    if getattr(exc, "ours", False):
        return f"the registry failed: {_bare(exc)}"
    if isinstance(exc, Unreachable):
        return f"could not reach Instagram: {_bare(exc)}"
    if isinstance(exc, Transient):
        # A 5xx, an unreadable or oversized answer: Instagram answered, but not usably.
        return f"Instagram failed: {_bare(exc)}"
    if isinstance(exc, InstagramError):
        return f"Instagram refused: {_bare(exc)}"
    return f"the registry failed: {type(exc).__name__}"


def with_advice(text: str, *, flavour: str | None = None, lead: str = "") -> str:
    """`text` followed by `lead` and the guidance for the Meta message it holds, unless
    there is none or `text` says it already (errors recorded before the guidance existed
    do not)."""
    guidance = guidance_for(text, flavour=flavour)
    if guidance is None or guidance.advice in text:
        return text
    return f"{text} {lead}{guidance.advice}"


def _bare(exc: BaseException) -> str:
    return str(exc).rstrip().rstrip(".")
