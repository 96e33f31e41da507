"""Onboarding reads: what to enter at Meta for an app, and which of Meta's manual steps are
still open for an account (the checklist on its page)."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings
from django.urls import reverse

from ..instagram import BASIC_DISPLAY_SHUTDOWN, BUSINESS_SCOPES_RETIRED, Flavour, with_advice
from ..instagram.guidance import EXAMPLES, RETIRED_API, TESTER_INVITES_URL, Guidance
from ..models import Account, Event, InstagramApp, Token
from ..timeutil import local_text
from .meta_callbacks import meta_callback_urls

META_APPS_URL = "https://developers.facebook.com/apps/"
# The event a staff member's tick on the "role confirmed" step writes (and its undo).
ROLE_CONFIRMED = "role_confirmed"
ROLE_UNCONFIRMED = "role_unconfirmed"


@dataclass(frozen=True)
class MetaValue:
    """One value to paste into Meta's dashboard, and where it goes."""

    key: str
    label: str
    value: str
    where: str


@dataclass(frozen=True)
class MetaSetup:
    """What an app needs at Meta: values to copy, what the flavour asks of accounts, links
    into Meta's dashboard, and what Instagram's error messages mean."""

    flavour: Flavour
    values: list[MetaValue]
    requirements: list[str]
    links: list[tuple[str, str]]
    retired: bool
    messages: list[tuple[str, Guidance]] = field(default_factory=list)


def callback_url() -> str:
    """This registry's OAuth callback, absolute from SITE_URL: the redirect URI to register
    at Meta for one-click authorization."""
    return f"{settings.SITE_URL}{reverse('oauth-callback')}"


def meta_dashboard_url(*, app: InstagramApp, page: str = "dashboard/") -> str:
    """A page of the app in Meta's dashboard (the Meta app ID when given, else the
    Instagram app ID; the app list when neither is known)."""
    app_id = app.meta_app_id or app.app_id
    return f"{META_APPS_URL}{app_id}/{page}" if app_id else META_APPS_URL


def meta_setup(*, app: InstagramApp | None, flavour: str | None = None) -> MetaSetup:
    """The app's Meta setup (an unsaved app: without its callback URLs, which name its id)."""
    flavour_enum = Flavour(flavour or (app.flavour if app else Flavour.INSTAGRAM_LOGIN))
    login = flavour_enum == Flavour.INSTAGRAM_LOGIN
    product = ("Instagram → API setup with Instagram login → Business login settings" if login
               else "Instagram Basic Display → Basic Display")
    values = [
        MetaValue("redirect_uri", "Valid OAuth Redirect URI", callback_url(),
                  f"{product} → OAuth redirect URIs; and the redirect URI of the app here "
                  f"(identical, trailing slash included)"),
    ]
    if app is not None and app.pk:
        urls = meta_callback_urls(app_pk=app.pk)
        values += [
            MetaValue("deauthorize", "Deauthorize callback URL", urls.deauthorize,
                      f"{product} → Deauthorize callback URL"),
            MetaValue("data_deletion", "Data deletion request URL", urls.data_deletion,
                      f"{product} → Data deletion request URL"),
        ]
    values.append(MetaValue("site_url", "Site URL", f"{settings.SITE_URL}/",
                            "App settings → Basic → Add platform → Website → Site URL"))
    if login:
        requirements = [
            "The Instagram account must be a Business or Creator (professional) account.",
            "While the app is in development, the account needs a role on the app: add it "
            "under App roles → Roles → Instagram Testers, and its owner accepts the "
            f"invitation on Instagram ({TESTER_INVITES_URL}, Tester invites).",
            "Scopes: instagram_business_basic at least (the old business_* names stopped "
            f"working on {BUSINESS_SCOPES_RETIRED}).",
        ]
    else:
        requirements = [
            f"The Basic Display API was shut down on {BASIC_DISPLAY_SHUTDOWN}: every call "
            "fails. New apps must use the Instagram API with Instagram Login.",
            "The account had to be an Instagram tester of the app (Roles → Instagram "
            f"Testers) whose owner accepted the invitation ({TESTER_INVITES_URL}).",
        ]
    links: list[tuple[str, str]] = []
    if app is not None and app.app_id:
        links = [
            ("App dashboard at Meta", meta_dashboard_url(app=app)),
            ("App roles (Instagram testers)", meta_dashboard_url(app=app, page="roles/roles/")),
            ("Basic settings (site URL)", meta_dashboard_url(app=app, page="settings/basic/")),
        ]
    else:
        links = [("Your apps at Meta", META_APPS_URL)]
    links.append(("Where the owner accepts a tester invitation", TESTER_INVITES_URL))
    messages = [(text, guidance) for text, _, guidance in EXAMPLES
                if guidance is not RETIRED_API or not login]
    return MetaSetup(flavour=flavour_enum, values=values, requirements=requirements,
                     links=links, retired=not login, messages=messages)


@dataclass(frozen=True)
class OnboardingStep:
    """One of Meta's manual steps for an account: done or not, what it means now, and
    the links or actions that complete it (`actions` names buttons the page draws)."""

    key: str
    title: str
    done: bool
    detail: str
    links: list[tuple[str, str]] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)


def account_role_confirmation(*, account: Account) -> Event | None:
    """The last tick (or untick) of "tester/role confirmed" on the account, if any."""
    return (Event.objects.filter(account=account, action__in=[ROLE_CONFIRMED, ROLE_UNCONFIRMED])
            .select_related("actor_user").order_by("-created_at", "-id").first())


def _last_authorize_failure(account: Account) -> Event | None:
    last = (Event.objects.filter(account=account, action__in=["authorize", "swap"])
            .order_by("-created_at", "-id").first())
    return last if last is not None and last.outcome != Event.Outcome.OK else None


def account_onboarding(*, account: Account) -> list[OnboardingStep]:
    """The checklist of Meta's manual steps for this account, in order."""
    app = account.app
    login = app.flavour == Flavour.INSTAGRAM_LOGIN
    authorized = Token.objects.filter(account=account).exists()
    steps = []

    # 1. The app at Meta, and its redirect URI pointing here.
    here = callback_url()
    app_link = ("Meta setup values", reverse("admin:accounts_instagramapp_change", args=[app.pk]))
    if not login:
        detail = (f"{app} is a Basic Display app: that API was shut down on "
                  f"{BASIC_DISPLAY_SHUTDOWN}. Create an Instagram Login app and move the "
                  f"account to it.")
        steps.append(OnboardingStep("app", "App registered at Meta", False, detail,
                                    links=[app_link]))
    elif app.redirect_uri == here:
        steps.append(OnboardingStep(
            "app", "App registered at Meta", True,
            f"{app} redirects to this registry's callback ({here}).", links=[app_link]))
    else:
        steps.append(OnboardingStep(
            "app", "App registered at Meta", False,
            f"{app} redirects to {app.redirect_uri}, not to this registry's callback ({here}): "
            f"register {here} at Meta and on the app here for one-click authorization, or "
            f"use Paste redirect URL.", links=[app_link]))

    # 2. The account's role on the app (the flavour's requirement).
    tick = account_role_confirmation(account=account)
    ticked = tick is not None and tick.action == ROLE_CONFIRMED
    need = ("a Business or Creator account with a role on the app (Instagram tester), "
            "invitation accepted" if login else
            "an accepted Instagram tester of the app")
    if ticked:
        who = tick.actor_user.get_username() if tick.actor_user else (tick.actor_job or "staff")
        detail = f"Confirmed by {who} on {local_text(tick.created_at)}: {need}."
    elif authorized:
        detail = f"Shown by the authorization: {need}."
    else:
        detail = (f"Needs {need}. Add it at Meta, have the owner accept the invitation, then "
                  f"tick this step.")
    steps.append(OnboardingStep(
        "role", "Tester / role confirmed", ticked or authorized, detail,
        links=[("App roles at Meta", meta_dashboard_url(app=app, page="roles/roles/")),
               ("Owner accepts the invitation", TESTER_INVITES_URL)],
        actions=["unconfirm_role" if ticked else "confirm_role"]))

    # 3. Authorized.
    if authorized and account.status == Account.Status.ACTIVE:
        steps.append(OnboardingStep(
            "authorized", "Authorized", True,
            f"Authorized as @{account.username}." if account.username else "Authorized."))
    else:
        failure = _last_authorize_failure(account)
        if authorized:
            detail = (f"The token is no longer usable ({account.get_status_display()}): "
                      f"authorize again.")
        elif failure is not None:
            message = failure.message.rstrip()
            if not message.endswith((".", "!", "?")):
                message += "."
            detail = f"The last attempt failed: {with_advice(message, flavour=app.flavour)}"
        else:
            detail = "Press Authorize (you sign in at Instagram), or send the owner a link."
        steps.append(OnboardingStep("authorized", "Authorized", False, detail,
                                    actions=["authorize", "owner_link"]))

    # 4. The token file.
    if not account.export_enabled:
        steps.append(OnboardingStep("file", "Token file written", True,
                                    "Export is off for this account: no file is written."))
    elif account.file_state == "in_sync":
        steps.append(OnboardingStep("file", "Token file written", True,
                                    "The token file matches the stored token."))
    else:
        detail = ("Written once the account is authorized." if not authorized else
                  account.file_error or "The token file is missing or out of date.")
        steps.append(OnboardingStep("file", "Token file written", False, detail,
                                    actions=["export"] if authorized else []))
    return steps
