"""Forms for the admin: app credentials, the paste form, the token import form and an
owner link's lifetime."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from django import forms
from django.conf import settings
from django.core.validators import URLValidator
from django.utils import timezone

from . import selectors
from .crypto import DecryptionError
from .instagram import mask
from .models import Account, InstagramApp, Token
from .timeutil import as_utc


class InstagramAppForm(forms.ModelForm):
    """The app secret is write-only: never rendered back; blank on edit keeps the old one."""

    app_secret = forms.CharField(
        label="Instagram app secret",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        required=False,
        strip=True,
    )

    redirect_uri = forms.URLField(
        label="Redirect URI",
        max_length=500,
        assume_scheme="https",
        # URLField also takes ftp:// and ftps://; Instagram redirects a browser, over http(s).
        validators=[URLValidator(schemes=["http", "https"])],
        help_text=InstagramApp._meta.get_field("redirect_uri").help_text,
    )

    class Meta:
        model = InstagramApp
        fields = ["name", "flavour", "app_id", "meta_app_id", "app_secret", "redirect_uri",
                  "scopes"]

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        try:
            self._stored_secret = self.instance.app_secret if self.instance.pk else ""
        except DecryptionError:
            self._stored_secret = ""  # unusable: the form asks for it again
        self.initial["app_secret"] = ""
        if self._stored_secret:
            self.fields["app_secret"].help_text = (
                f"Stored, ending in {mask(self._stored_secret)}. Leave blank to keep it."
            )
        else:
            self.fields["app_secret"].help_text = "From the app's Instagram settings at Meta."

    def clean_app_id(self) -> str:
        # The model's validator (\d) also takes other scripts' digits ("١٢٣"); an app ID
        # Meta issued is ASCII digits, and it goes verbatim into Instagram's URLs.
        app_id = self.cleaned_data.get("app_id", "")
        if not re.fullmatch(r"[0-9]{1,32}", app_id):
            raise forms.ValidationError("Digits 0-9 only, at most 32.")
        return app_id

    def clean_app_secret(self) -> str:
        secret = self.cleaned_data.get("app_secret", "")
        if not secret:
            if not self._stored_secret:
                raise forms.ValidationError("The app secret is required.")
            return self._stored_secret
        if any(c.isspace() for c in secret):
            raise forms.ValidationError("An app secret has no spaces.")
        return secret


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that, like PasswordInput, never renders its value back: what was pasted
    holds an authorization code."""

    def format_value(self, value: object) -> None:
        return None


class PasteForm(forms.Form):
    """For apps whose redirect URI is another website: paste where Instagram sent you."""

    redirected_url = forms.CharField(
        label="Redirected URL or code",
        widget=WriteOnlyTextarea(attrs={"rows": 3, "cols": 80, "autocomplete": "off"}),
        help_text="The whole address Instagram redirected to (https://…/?code=…#_), or just "
        "the code. A trailing #_ is ignored.",
    )


class UTCDateTimeField(forms.DateTimeField):
    """A date and time typed without a zone is UTC (as the help text says), whatever the
    server's TIME_ZONE."""

    def to_python(self, value: object) -> datetime | None:
        with timezone.override(UTC):
            result = super().to_python(value)
        return as_utc(result) if result is not None else None


class ImportTokenForm(forms.Form):
    """Bring in a token obtained by hand (the manual curl procedure)."""

    access_token = forms.CharField(
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Checked with Instagram before anything is stored.",
    )
    kind = forms.ChoiceField(
        choices=[(Token.Kind.LONG.value, "Long-lived (60 days)"),
                 (Token.Kind.SHORT.value, "Short-lived (1 hour): swap it for a long-lived one")],
        initial=Token.Kind.LONG.value,
    )
    expires_at = UTCDateTimeField(
        required=False,
        help_text="When the long-lived token expires (UTC, YYYY-MM-DD HH:MM), if you know. "
        "Blank: the registry refreshes it once to learn its expiry.",
    )


class AccountForm(forms.ModelForm):
    """Refuses a token file name another account (or a deleted one) owns, naming it."""

    class Meta:
        model = Account
        fields = ["app", "label", "token_filename", "export_enabled", "export_format"]

    def clean_token_filename(self) -> str:
        name = self.cleaned_data.get("token_filename", "")
        if name:
            blocker = selectors.token_file_blocker(account=self.instance, name=name)
            if blocker is not None:
                whose = (f"account '{blocker.account.label}'" if blocker.account
                         else f"the deleted account '{blocker.account_label}'")
                raise forms.ValidationError(
                    f"The file {name!r} belongs to {whose}. Choose another name, or remove "
                    f"the orphaned file in Token files first."
                )
        return name


class OwnerLinkForm(forms.Form):
    """How long an owner authorization link stays usable (OWNER_LINK_TTL_DAYS by default)."""

    days = forms.IntegerField(
        label="Valid for (days)", min_value=1, max_value=30,
        help_text="The owner can use the link once within this time; 1 to 30 days.",
    )

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.fields["days"].initial = settings.OWNER_LINK_TTL_DAYS
