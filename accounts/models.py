"""The registry's data: Instagram apps, accounts, their tokens, OAuth states and the event log.

Models hold data and validation only; every write goes through `accounts.services`.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

from .crypto import EncryptedTextField
from .instagram import DEFAULT_SCOPES, Flavour, scopes_check
from .timeutil import local_text

# \d would also take other scripts' digits ("١٢٣"); ids are ASCII digits.
digits_only = RegexValidator(r"\A[0-9]+\Z", "Digits only.")

# Used with fullmatch: "$" would also match before a trailing newline ("feed\n").
SAFE_FILENAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


def validate_token_filename(name: str) -> None:
    """Refuse names that could leave the export directory or hide: separators, `..`,
    a leading dot, anything beyond letters, digits, `.`, `_` and `-`."""
    if not name:
        return
    if "/" in name or "\\" in name or "\x00" in name:
        raise ValidationError("A token file name cannot contain a path separator.")
    if name.startswith("."):
        raise ValidationError("A token file name cannot start with a dot.")
    if ".." in name:
        raise ValidationError("A token file name cannot contain '..'.")
    if name.isascii() and name.isdigit():
        # The token API reads a name of digits as an account id (and Instagram refuses
        # usernames of digits alone, so no default name is one).
        raise ValidationError("A token file name cannot be digits alone (the token API "
                              "would read it as an account id): add a letter.")
    # fullmatch: with match() and "$", a name ending in a newline would pass.
    if not SAFE_FILENAME.fullmatch(name):
        raise ValidationError(
            "Use at most 100 letters, digits, '.', '_' or '-', starting with a letter, "
            "digit or '_'."
        )


class InstagramApp(models.Model):
    """A Meta app with Instagram: the credentials the OAuth flow and refreshes use."""

    name = models.CharField(max_length=100, unique=True)
    flavour = models.CharField(
        "API flavour",
        max_length=20,
        choices=[
            (Flavour.INSTAGRAM_LOGIN.value, "Instagram API with Instagram Login (current)"),
            (Flavour.BASIC_DISPLAY.value, "Basic Display API (legacy)"),
        ],
        default=Flavour.INSTAGRAM_LOGIN.value,
    )
    app_id = models.CharField("Instagram app ID", max_length=32, validators=[digits_only])
    app_secret = EncryptedTextField("Instagram app secret")
    redirect_uri = models.URLField(
        "redirect URI",
        max_length=500,
        help_text="Exactly as registered at Meta, trailing slash included. Point it at this "
        "registry's /oauth/callback/ for one-click authorization; any other URL works "
        "through the paste form.",
    )
    scopes = models.CharField(
        max_length=300,
        blank=True,
        help_text="Comma-separated. Blank: the flavour's default. A scope the registry does "
        "not know is saved with a warning; retired names are refused.",
    )
    # Only for links into Meta's dashboard (developers.facebook.com/apps/<id>/): with
    # Instagram Login the Meta app's id differs from the Instagram app ID above.
    meta_app_id = models.CharField(
        "Meta app ID", max_length=32, blank=True, validators=[digits_only],
        help_text="The id in the app's address at developers.facebook.com/apps/…/ (it can "
        "differ from the Instagram app ID). Only used for links; blank: the Instagram app ID.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "Instagram app"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def flavour_enum(self) -> Flavour:
        return Flavour(self.flavour)

    def scope_list(self) -> tuple[str, ...]:
        """The scopes to request: the configured ones, or the flavour's default."""
        configured = tuple(s for s in re.split(r"[,\s]+", self.scopes) if s)
        return configured or DEFAULT_SCOPES[self.flavour_enum]

    def clean(self) -> None:
        if self.flavour not in Flavour._value2member_map_:
            return  # the field's own choices validation reports it
        # A scope the registry does not know may be new at Meta: the admin warns about it
        # (`scopes_check(...).unknown`) but saves. Names that never work are refused.
        refused = scopes_check(self.flavour_enum, self.scope_list()).refused
        if refused:
            raise ValidationError({"scopes": " ".join(
                f"{name}: {why}." for name, why in refused.items())})


class Account(models.Model):
    """One Instagram account whose token the registry keeps alive."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for authorization"
        ACTIVE = "active", "Active"
        NEEDS_REAUTH = "needs_reauth", "Needs re-authorization"
        ERROR = "error", "Error"
        # The owner removed the app at Instagram (Meta's deauthorize callback) or asked
        # Meta to delete their data: the token is gone; only the owner can authorize anew.
        DEAUTHORIZED = "deauthorized", "Deauthorized by its owner"

    class ExportFormat(models.TextChoices):
        TEXT = "text", "The bare token (what the PHP page reads)"
        JSON = "json", "JSON: token, expiry, user id and username"

    app = models.ForeignKey(InstagramApp, on_delete=models.PROTECT, related_name="accounts")
    label = models.CharField(max_length=100, help_text="What staff call this account.")
    username = models.CharField(max_length=64, blank=True, help_text="Filled in from Instagram.")
    # Instagram's ids, each in its own field (shared/instagram-api.md, sections 2 and 5):
    # they differ in the Instagram Login flavour and must not be confused. Kept as text:
    # they exceed 2**53 and must never pass through a float. "Same Instagram account" is
    # decided by any id both sides know (`accounts.identity`).
    ig_id = models.CharField(
        "Instagram id (/me id)", max_length=32, blank=True, validators=[digits_only],
        help_text="/me's 'id': app-scoped with Instagram Login; the user's id with Basic "
        "Display.",
    )
    ig_user_id = models.CharField(
        "Instagram user_id (/me user_id)", max_length=32, blank=True, validators=[digits_only],
        help_text="/me's 'user_id' (Instagram Login only): the professional account's id, "
        "the one webhooks and publishing use.",
    )
    ig_exchange_user_id = models.CharField(
        "code exchange user_id", max_length=32, blank=True, validators=[digits_only],
        help_text="The 'user_id' the authorization code's exchange answered (it may equal "
        "either id above, or neither).",
    )
    token_filename = models.CharField(
        max_length=100,
        blank=True,
        validators=[validate_token_filename],
        help_text="File name in the token directory. Blank: the Instagram username.",
    )
    export_enabled = models.BooleanField("write a token file", default=True)
    export_format = models.CharField(
        max_length=10, choices=ExportFormat.choices, default=ExportFormat.TEXT
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    last_error = models.TextField(blank=True)
    file_error = models.TextField(blank=True)
    file_written_at = models.DateTimeField(null=True, blank=True)
    # How the token file compared with the database at the last write or check (one of
    # selectors.FileState). Stored, so that the account's state, counts, filters, metrics
    # and alerts can see a file problem in SQL; every export and reconcile run updates it.
    file_state = models.CharField(max_length=20, default="not_exported")
    file_checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["label"]
        constraints = [
            models.UniqueConstraint(
                fields=["app", "ig_id"],
                condition=~Q(ig_id=""),
                name="account_unique_ig_id_per_app",
            ),
            models.UniqueConstraint(
                fields=["app", "ig_user_id"],
                condition=~Q(ig_user_id=""),
                name="account_unique_ig_user_per_app",
            ),
            models.UniqueConstraint(
                fields=["token_filename"],
                condition=~Q(token_filename=""),
                name="account_unique_token_filename",
            ),
        ]
        indexes = [models.Index(fields=["status"], name="account_status_idx")]
        # What operators may do to an account's token, each checked where it is done
        # (admin actions and pages, the OAuth callback). Viewers hold none of them.
        permissions = [
            ("authorize_account", "Can authorize an account with Instagram (and paste)"),
            ("verify_account", "Can verify an account's token with Instagram"),
            ("refresh_account", "Can refresh an account's token now"),
            ("export_account", "Can write an account's token file"),
            ("import_token", "Can import a token made by hand"),
        ]

    def __str__(self) -> str:
        return f"{self.label} (@{self.username})" if self.username else self.label


class Token(models.Model):
    """The account's current access token, encrypted."""

    class Kind(models.TextChoices):
        SHORT = "short", "Short-lived (1 hour)"
        LONG = "long", "Long-lived (60 days)"

    account = models.OneToOneField(Account, on_delete=models.CASCADE, related_name="token")
    value = EncryptedTextField()
    kind = models.CharField(max_length=10, choices=Kind.choices)
    obtained_at = models.DateTimeField(help_text="When Instagram issued this token.")
    expires_at = models.DateTimeField()
    last_refreshed_at = models.DateTimeField(null=True, blank=True)
    permissions = models.JSONField(default=list, blank=True)
    # Instagram's answer named no permissions: `permissions` holds the requested scopes.
    permissions_requested = models.BooleanField(default=False)
    # Back-off after a temporary refresh failure: no attempt before this time.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    refresh_failures = models.PositiveIntegerField(default=0)
    # A refresh failed in a way no retry can fix (a retired API, an app Meta does not
    # know, a missing role): the sweep leaves the token alone from then on, until staff
    # act (Refresh now, a new authorization or import).
    refresh_held_since = models.DateTimeField(null=True, blank=True)
    # When a refresh task for this token was due to start (the sweep's enqueue time plus
    # its countdown, or a retry's). Cleared by the attempt: a value well in the past means
    # no worker is taking refreshes off the queue (worker liveness in /healthz).
    refresh_queued_for = models.DateTimeField(null=True, blank=True)
    # A worker's claim on the token while it refreshes it, committed before the call:
    # unlike a row lock, it outlives a lost database session, so no other worker refreshes
    # the token before the first one has stored what Instagram answered. Released when the
    # answer is stored; a claim whose worker died lapses at `refresh_claimed_until`.
    refresh_claim = models.CharField(max_length=64, blank=True, default="")
    refresh_claimed_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        # "What expires next" is the registry's main question, and the sweep's.
        indexes = [models.Index(fields=["expires_at"], name="token_expires_at_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} token of {self.account}"


class PendingToken(models.Model):
    """A short-lived token between the code exchange and the long-lived swap.

    Kept (encrypted) so that a flow interrupted after the exchange is finished by the
    sweep within the token's hour instead of forcing the owner to authorize again."""

    account = models.OneToOneField(Account, on_delete=models.CASCADE, related_name="pending")
    value = EncryptedTextField()
    expires_at = models.DateTimeField()
    permissions = models.JSONField(default=list, blank=True)
    permissions_requested = models.BooleanField(default=False)
    # The code exchange's `user_id`, stored with the token at the swap.
    exchange_user_id = models.CharField(max_length=32, blank=True, default="")
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"Short-lived token of {self.account} awaiting its swap"


class SweepState(models.Model):
    """One row: what the refresh sweep last did, and whether Instagram asked us to slow down."""

    last_started_at = models.DateTimeField(null=True, blank=True)
    last_succeeded_at = models.DateTimeField(null=True, blank=True)
    last_enqueued = models.PositiveIntegerField(default=0)
    usage_percent = models.PositiveIntegerField(default=0)
    # When Instagram last reported usage: a reading older than USAGE_READING_MAX_AGE_MINUTES
    # no longer slows the sweep (responses stop carrying the header once usage is low).
    usage_recorded_at = models.DateTimeField(null=True, blank=True)
    throttled_until = models.DateTimeField(null=True, blank=True)
    # The last thing staff were told about the refresh workers ("ok" or "stalled").
    workers_alert_state = models.CharField(max_length=20, default="ok")
    workers_alert_sent_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Sweep state (last success {self.last_succeeded_at})"


class AlertState(models.Model):
    """The state staff were last told about for an account, so each change is announced
    once and a lasting problem is repeated only as a daily reminder."""

    account = models.OneToOneField(Account, on_delete=models.CASCADE, related_name="alert")
    state = models.CharField(max_length=20)
    changed_at = models.DateTimeField()
    last_sent_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.account}: {self.state}"


class TokenFile(models.Model):
    """A token file name and the one account that may write it.

    A name is claimed at an account's first export and stays that account's whatever
    Instagram later says its username is: the website reads this file. When staff give
    the account another name, the old file becomes *orphaned*: left on disk (a website may
    still read it) and listed until an operator removes it. Nothing ever writes a file
    another account owns; taking one over is an explicit, logged action.
    """

    class Status(models.TextChoices):
        CURRENT = "current", "Current"
        ORPHANED = "orphaned", "Orphaned"

    name = models.CharField(max_length=100, unique=True)
    account = models.ForeignKey(
        Account, on_delete=models.SET_NULL, null=True, blank=True, related_name="token_files"
    )
    # Kept so an orphaned file still says whose it was after the account is deleted.
    account_label = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.CURRENT)
    claimed_at = models.DateTimeField()
    written_at = models.DateTimeField(null=True, blank=True)
    orphaned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["account"],
                condition=Q(status="current"),
                name="tokenfile_one_current_per_account",
            ),
        ]
        permissions = [
            ("take_over_tokenfile", "Can take over a token file another account owns"),
        ]

    def __str__(self) -> str:
        return self.name


class OutboxDelivery(models.Model):
    """What every outbox row shares (alerts, change webhooks): its attempts, when the next
    is due, and how it ended. `services.alert_outbox.delivery_attempt_record` keeps them."""

    created_at = models.DateTimeField()
    body = models.TextField()
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    abandoned_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at", "-id"]


class AlertDelivery(OutboxDelivery):
    """One alert message for one channel (e-mail or webhook), kept until it is delivered.

    Written in the same transaction as the alert states it announces (an outbox), so a
    process that dies before sending loses nothing; failed sends are retried with
    back-off. Holds no token and no secret."""

    class Channel(models.TextChoices):
        EMAIL = "email", "E-mail"
        WEBHOOK = "webhook", "Webhook"

    channel = models.CharField(max_length=10, choices=Channel.choices)
    subject = models.CharField(max_length=300, blank=True)

    class Meta(OutboxDelivery.Meta):
        verbose_name_plural = "alert deliveries"

    def __str__(self) -> str:
        return f"{self.channel} alert of {local_text(self.created_at)}"


class OAuthState(models.Model):
    """A single-use `state` handed to Instagram, bound to an account and either the staff
    user who started the flow or the owner link the account's owner opened.

    Only a hash is stored: the state itself travels in the browser.
    """

    state_hash = models.CharField(max_length=64, unique=True)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="oauth_states")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True,
                             blank=True)
    owner_link = models.ForeignKey("OwnerLink", on_delete=models.CASCADE, null=True,
                                   blank=True, related_name="oauth_states")
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "OAuth state"
        constraints = [
            # Started by exactly one party: a staff user or an owner link.
            models.CheckConstraint(
                condition=(Q(user__isnull=False, owner_link__isnull=True)
                           | Q(user__isnull=True, owner_link__isnull=False)),
                name="oauthstate_one_starter",
            ),
        ]

    def __str__(self) -> str:
        return f"OAuth state for {self.account_id} ({'used' if self.used_at else 'open'})"


class Event(models.Model):
    """Append-only log: what happened to which account, when, by whom, and the outcome.

    Never holds a secret. Survives the account's deletion (the label is kept).
    """

    class Outcome(models.TextChoices):
        OK = "ok", "OK"
        FAILED = "failed", "Failed"
        DENIED = "denied", "Denied"

    created_at = models.DateTimeField(db_index=True)
    account = models.ForeignKey(
        Account, on_delete=models.SET_NULL, null=True, blank=True, related_name="events"
    )
    account_label = models.CharField(max_length=200, blank=True)
    action = models.CharField(max_length=40)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    message = models.TextField(blank=True)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    actor_job = models.CharField(max_length=100, blank=True, help_text="Task or command.")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["account", "-created_at"], name="event_account_idx")]

    def __str__(self) -> str:
        return f"{local_text(self.created_at)}: {self.action} {self.outcome}"

    def save(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        # Append-only: an event, once written, is history.
        if self.pk is not None:
            raise ValueError("Events are append-only.")
        super().save(*args, **kwargs)


class OwnerLink(models.Model):
    """A single-use link an operator sends to an account's owner, who opens it without a
    login and authorizes on Instagram (`accounts.owner_links`).

    Only a hash of the link's secret is stored: the link itself is shown once, when it is
    created. Spent when a token lands through it; refused once expired or revoked."""

    secret_hash = models.CharField(max_length=64, unique=True)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="owner_links")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                   null=True, blank=True, related_name="+")
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                   null=True, blank=True, related_name="+")

    class Meta:
        verbose_name = "owner authorization link"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Owner link for {self.account} ({local_text(self.created_at)})"


class DataDeletionRequest(models.Model):
    """Audit record of one data-deletion request from Meta (`accounts.meta_callbacks`):
    when it came, for which app, what became of it, and the confirmation code its public
    status page is found by. Holds no personal data: no Instagram id or username."""

    class Status(models.TextChoices):
        COMPLETED = "completed", "Completed: the account's Instagram data was deleted"
        NO_DATA = "no_data", "Completed: the registry held no data of this account"

    confirmation_code = models.CharField(max_length=32, unique=True)
    # A keyed hash (HMAC with SECRET_KEY) of the signed_request, so a replay is answered
    # with the first code and changes nothing, without storing the request's user_id.
    request_digest = models.CharField(max_length=64, unique=True)
    app = models.ForeignKey(InstagramApp, on_delete=models.SET_NULL, null=True, blank=True,
                            related_name="+")
    status = models.CharField(max_length=20, choices=Status.choices)
    accounts_erased = models.PositiveIntegerField(default=0)
    received_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"Data deletion {self.confirmation_code}"


class ApiKey(models.Model):
    """A key a website on another host presents to the token API
    (`Authorization: Bearer <key>`, `accounts.api`), scoped to some accounts or apps.

    Only a SHA-256 hash of the key is stored (the key is 256 random bits, so a plain hash
    is enough): the key is shown once, when an operator creates it. `prefix` (the key's
    first characters) tells staff which key a log line or an event names. A consumer may
    also give a URL for change webhooks (Standard Webhooks, `accounts.webhooks`), signed
    with `webhook_secret` (encrypted; shown once with the key)."""

    name = models.CharField(max_length=100, unique=True,
                            help_text="Who uses it, e.g. the website's host.")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    accounts = models.ManyToManyField(Account, blank=True, related_name="api_keys",
                                      help_text="The accounts whose tokens it may read.")
    apps = models.ManyToManyField(InstagramApp, blank=True, related_name="api_keys",
                                  help_text="Every account of these apps, now and later.")
    webhook_url = models.URLField(
        "change webhook URL", max_length=500, blank=True,
        help_text="Called (POST, Standard Webhooks) when a token this key may read changes.",
    )
    webhook_secret = EncryptedTextField(blank=True, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                   null=True, blank=True, related_name="+", editable=False)
    created_at = models.DateTimeField(editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                   null=True, blank=True, related_name="+", editable=False)

    class Meta:
        verbose_name = "API key"
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class WebhookState(models.Model):
    """What a consumer (an API key with a change webhook URL) was last told about an
    account's token: a fingerprint of the token row (which token, its expiry, the
    account's status; never the token), so each change is announced once."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+")
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+")
    fingerprint = models.CharField(max_length=64)
    changed_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["api_key", "account"],
                                               name="webhookstate_one_per_key_account")]

    def __str__(self) -> str:
        return f"Key {self.api_key_id}, account {self.account_id}: {self.changed_at:%Y-%m-%d}"


class WebhookDelivery(OutboxDelivery):
    """One change webhook for one consumer, kept until it is delivered (an outbox, like
    `AlertDelivery`): written in the transaction that notices the change, sent and retried
    with back-off by `webhook_deliveries_send`. `msg_id` is the Standard Webhooks
    `webhook-id`, the same at every attempt so the consumer can drop a repeat. The body
    holds no token: the consumer fetches it from the token API."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="deliveries")
    account = models.ForeignKey(Account, on_delete=models.SET_NULL, null=True, blank=True,
                                related_name="+")
    msg_id = models.CharField(max_length=64, unique=True)
    event_type = models.CharField(max_length=40)

    class Meta(OutboxDelivery.Meta):
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event_type} for {self.api_key_id} ({self.msg_id})"
