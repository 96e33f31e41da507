"""The Instagram endpoints the registry calls (shared/instagram-api.md, sections 1-5)."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlencode

import requests

from .answers import (
    LongLivedToken,
    Profile,
    ShortLivedToken,
    long_lived_from,
    profile_from,
    short_lived_from,
)
from .callback import clean_code
from .flavours import Flavour
from .transport import Transport


class InstagramClient:
    """Talks to Instagram's three hosts. Safe to share between threads: one Session with
    keep-alive, each call independent. Every call raises only the exceptions of
    `accounts.instagram.errors`, and returns only values that passed `answers`' rules."""

    def __init__(
        self,
        *,
        api_url: str = "https://api.instagram.com",
        www_url: str = "https://www.instagram.com",
        graph_url: str = "https://graph.instagram.com",
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        deadline: float = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        """Timeouts and the per-call deadline in seconds."""
        self.api_url = api_url.rstrip("/")
        self.www_url = www_url.rstrip("/")
        self.graph_url = graph_url.rstrip("/")
        self.transport = Transport(connect_timeout=connect_timeout, read_timeout=read_timeout,
                                   deadline=deadline, session=session)

    @property
    def session(self) -> requests.Session:
        return self.transport.session

    # 1. Authorize
    def authorize_url(
        self,
        *,
        flavour: Flavour,
        client_id: str,
        redirect_uri: str,
        scopes: Iterable[str],
        state: str,
        force_authentication: bool = False,
    ) -> str:
        """The URL to send the account owner's browser to."""
        params = {
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": ",".join(scopes),
            "response_type": "code",
            "state": state,
        }
        if flavour == Flavour.INSTAGRAM_LOGIN:
            base = self.www_url
            params["enable_fb_login"] = "0"
            params["force_authentication"] = "1" if force_authentication else "0"
        else:
            base = self.api_url
        return f"{base}/oauth/authorize?{urlencode(params)}"

    # 2. Code -> short-lived token
    def exchange_code(
        self, *, client_id: str, client_secret: str, redirect_uri: str, code: str
    ) -> ShortLivedToken:
        """Exchange an authorization code for a short-lived token (any of the three shapes)."""
        data = {
            "client_id": client_id,
            "client_secret": client_secret,
            "grant_type": "authorization_code",
            "redirect_uri": redirect_uri,
            "code": clean_code(code),
        }
        body, _ = self.transport.request(
            "POST", f"{self.api_url}/oauth/access_token", data=data,
            secrets=(client_secret, data["code"]),
        )
        return short_lived_from(body)

    # 3. Short-lived -> long-lived
    def exchange_for_long_lived(self, *, client_secret: str, access_token: str) -> LongLivedToken:
        """Swap an unexpired short-lived token for a long-lived one (about 60 days)."""
        params = {
            "grant_type": "ig_exchange_token",
            "client_secret": client_secret,
            "access_token": access_token,
        }
        body, usage = self.transport.request(
            "GET", f"{self.graph_url}/access_token", params=params,
            secrets=(client_secret, access_token),
        )
        return long_lived_from(body, usage)

    # 4. Refresh
    def refresh(self, *, access_token: str) -> LongLivedToken:
        """Refresh a long-lived token that is at least 24 hours old and unexpired.

        The answer may carry the same string or a new one: store what comes back."""
        params = {"grant_type": "ig_refresh_token", "access_token": access_token}
        body, usage = self.transport.request(
            "GET", f"{self.graph_url}/refresh_access_token", params=params,
            secrets=(access_token,),
        )
        return long_lived_from(body, usage)

    # 5. Profile
    def me(
        self,
        *,
        access_token: str,
        fields: Iterable[str] = ("id", "username"),
        api_version: str | None = None,
    ) -> Profile:
        """The account behind a token; accepts the flat and the `data` envelope shapes."""
        path = f"/{api_version}/me" if api_version else "/me"
        params = {"fields": ",".join(fields), "access_token": access_token}
        body, usage = self.transport.request(
            "GET", f"{self.graph_url}{path}", params=params, secrets=(access_token,)
        )
        return profile_from(body, usage)
