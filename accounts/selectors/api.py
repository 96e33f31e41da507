"""Reads for the token API (`accounts.views.api`): which key a caller presents, which
account a path names, whether the key may read it, and the answer with its ETag."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet

from ..models import Account, ApiKey, TokenFile
from . import DEAD_TOKEN_STATUSES, current_file_name_expression, token_file_name_of

KEY_PREFIX = "igr_"


def api_key_hash(key: str) -> str:
    """The stored form of a key: hex SHA-256 (a key is 256 random bits; no salt needed)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def api_key_for(*, presented: str) -> ApiKey | None:
    """The live (unrevoked) key whose hash matches `presented`, else None. The lookup is
    by hash, so a wrong key takes the same path as a right one."""
    if not presented.startswith(KEY_PREFIX) or len(presented) > 200:
        return None
    return (ApiKey.objects.filter(key_hash=api_key_hash(presented), revoked_at__isnull=True)
            .first())


def _accounts() -> QuerySet[Account]:
    # The token and app in the same query, the current file's name as a subquery; the
    # app's secret is never read (nor decrypted) on this path.
    return (Account.objects.select_related("app", "token").defer("app__app_secret")
            .annotate(current_file_name=current_file_name_expression()))


def account_for_api(*, name: str) -> Account | None:
    """The account a path names: its id (digits), else its token file name (the file it
    owns now, its explicit token file name, or its username while it has neither). The
    account comes with its app, token and `current_file_name` (one query)."""
    if name.isascii() and name.isdigit():
        return _accounts().filter(pk=int(name)).first() if len(name) < 19 else None
    owns_now = TokenFile.objects.filter(name=name, status=TokenFile.Status.CURRENT,
                                        account=OuterRef("pk"))
    named = list(_accounts().filter(
        Exists(owns_now) | Q(token_filename=name)
        | Q(token_filename="", username=name, token_files__isnull=True)
    ).order_by(~Exists(owns_now), "pk")[:2])
    # The file it owns now wins; otherwise the name must be unambiguous.
    if named and (len(named) == 1 or named[0].current_file_name == name):
        return named[0]
    return None


def api_key_may_read(*, key: ApiKey, account: Account) -> bool:
    """Whether the key's scope covers the account: named itself, or its app is (one
    query)."""
    return ApiKey.objects.filter(
        Q(accounts=account) | Q(apps=account.app_id), pk=key.pk).exists()


@dataclass(frozen=True)
class ApiToken:
    """The API's answer for one account (README "Token API"), serialized, and its ETag."""

    body: bytes
    etag: str


def api_token(*, account: Account) -> ApiToken | None:
    """The account's token as the API gives it, or None when it holds none. Like its
    token file, a dead token is given as it is (TOKEN_FILE_DEAD_TOKEN=keep) or as null
    (empty). The ETag is a hash of the whole answer: it changes with the token, its
    expiry, the status or an id, and tells nothing of the token."""
    token = getattr(account, "token", None)  # loaded with the account (account_for_api)
    if token is None:
        return None
    dead = account.status in DEAD_TOKEN_STATUSES
    document = {
        "account": account.pk,
        "label": account.label,
        "app": account.app.name,
        "username": account.username or None,
        "status": account.status,
        "access_token": (None if dead and settings.TOKEN_FILE_DEAD_TOKEN == "empty"
                         else token.value),
        "expires_at": token.expires_at.isoformat(),
        "token_file": (token_file_name_of(account=account,
                                          current_name=account.current_file_name) or None)
        if account.export_enabled else None,
        "instagram": {
            "id": account.ig_id or None,
            "user_id": account.ig_user_id or None,
            "exchange_user_id": account.ig_exchange_user_id or None,
        },
    }
    body = json.dumps(document, indent=2).encode() + b"\n"
    return ApiToken(body=body, etag=f'"{hashlib.sha256(body).hexdigest()[:32]}"')
