"""Every read the admin, views, commands and tasks need."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from .models import Account, Token


def account_get(*, account_id: int) -> Account:
    """One account with its app and token loaded (raises Account.DoesNotExist)."""
    return Account.objects.select_related("app", "token").get(pk=account_id)


def account_find(*, key: str) -> Account:
    """An account by primary key or exact label (raises Account.DoesNotExist or
    Account.MultipleObjectsReturned)."""
    queryset = Account.objects.select_related("app", "token")
    if key.isdigit():
        return queryset.get(pk=int(key))
    return queryset.get(label=key)


def account_summary(*, account_id: int, verb: str) -> str:
    """One sentence for staff: the account, its username and when its token expires."""
    account = account_get(account_id=account_id)
    token: Token | None = getattr(account, "token", None)
    text = f"{account.label}: {verb} as @{account.username}."
    if token is not None:
        text += f" The token expires on {token.expires_at:%Y-%m-%d %H:%M} UTC."
    if account.file_error:
        text += f" {account.file_error}"
    elif account.export_enabled and account.file_written_at:
        text += f" Token file '{account.export_filename}' written."
    return text


def accounts_by_expiry() -> QuerySet[Account]:
    """Accounts with a token, soonest expiry first (uses the expires_at index)."""
    return (
        Account.objects.filter(token__isnull=False)
        .select_related("app", "token")
        .order_by("token__expires_at")
    )


def account_owning_filename(*, account: Account) -> Account | None:
    """Another account with a prior claim on this account's token file name.

    A name set explicitly beats a name that falls back to the username; between two
    fallbacks (the same Instagram user in two apps) the older account keeps the file."""
    name = account.export_filename
    claims = Q(token_filename=name)
    if not account.token_filename:
        claims |= Q(token_filename="", username=name, pk__lt=account.pk)
    return Account.objects.filter(claims).exclude(pk=account.pk).first()
