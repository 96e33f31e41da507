"""Meta's deauthorize and data-deletion callbacks (shared/instagram-api.md, section 7;
Meta's docs pages "Deauthorize Callback" and "Data Deletion Request Callback").

Meta calls these when an Instagram user removes the app or asks for their data to be
deleted; the request names the user by one Instagram id, signed with the app's secret.
Both verify the signature first (`accounts.instagram.signed_request`): anything
malformed, forged or expired raises `SignedRequestInvalid` and changes nothing.
Neither writes the user's id or username into an event, a log line or an error.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import string
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils.crypto import salted_hmac

from .. import selectors
from ..instagram import SignedRequest, signed_request_parse
from ..models import (
    Account,
    AlertDelivery,
    DataDeletionRequest,
    Event,
    InstagramApp,
    PendingToken,
    Token,
    TokenFile,
    validate_token_filename,
)
from ..selectors import FileState
from .alert_outbox import SUBJECT_PREFIX
from .alerts import Kind
from .common import Actor, event_record
from .files import token_file_dead_token_apply

logger = logging.getLogger(__name__)

DEAUTHORIZE_JOB = "meta deauthorize"
DATA_DELETION_JOB = "meta data deletion"

DEAUTHORIZED_MESSAGE = (
    "The owner removed this app from their Instagram account (Meta's deauthorize "
    "callback): the token was deleted. Only the owner can authorize the account again."
)
ERASED_MESSAGE = (
    "The owner asked Meta to delete their data (Meta's data deletion callback): the "
    "token, the token file, the username and the Instagram ids were deleted. Only the "
    "owner can authorize the account again."
)
# What replaces the username and the ids in the account's event log.
ERASED_MARK = "[deleted]"

CONFIRMATION_ALPHABET = string.ascii_letters + string.digits
CONFIRMATION_LENGTH = 20  # about 119 bits: the code is the status page's only key
_DIGEST_SALT = "accounts.meta_callbacks.data_deletion"


class DataDeletionFailed(Exception):
    """The erasure could not be completed (a token file could not be removed): the
    database is left as it was (the transaction rolls back), though token files removed
    before the failure stay removed; Meta should send the request again. `message` holds
    no personal data."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def deauthorize_apply(*, app: InstagramApp, signed_request: object,
                      now: datetime) -> list[int]:
    """Meta's deauthorize callback for `app`: the user removed the app, so their token is
    dead. Every account of the app that knows the user's id (any of its three ids) moves
    to DEAUTHORIZED with `last_error` saying why; its token and pending token are deleted
    and its token file follows TOKEN_FILE_DEAD_TOKEN (kept, or emptied); one event per
    account (job "meta deauthorize"). The next alerts run announces the new state.

    Idempotent: an account already deauthorized, without a token, is left alone (a replay
    changes nothing and records nothing). A request issued before the account's last
    successful authorization or import, or before its pending token was obtained, is
    stale (the owner authorized again since) and changes nothing either; a refresh since
    does not make it stale. An unknown user changes nothing.

    Returns the ids of the accounts changed. Raises SignedRequestInvalid (nothing changed)
    and DecryptionError when the app's secret cannot be read."""
    request = _verify(app=app, signed_request=signed_request, now=now)
    issued_at = datetime.fromtimestamp(request.issued_at, tz=UTC)
    actor = Actor(job=DEAUTHORIZE_JOB)
    changed: list[int] = []
    with transaction.atomic():
        accounts = list(_accounts_locked(app=app, request=request))
        for account in accounts:
            has_token = Token.objects.filter(account=account).exists()
            pending = (PendingToken.objects.filter(account=account)
                       .only("pk", "created_at").first())
            # Stale only if the owner granted a token again since: the last authorization
            # or import, or a code exchanged and not yet swapped. Not the token's
            # obtained_at, which every routine refresh moves to its own time.
            granted_at = selectors.account_last_granted_at(account_id=account.pk)
            if ((granted_at is not None and granted_at > issued_at)
                    or (pending is not None and pending.created_at > issued_at)):
                logger.info("meta deauthorize: account %s was authorized again after the "
                            "request was issued; nothing changed", account.pk)
                continue
            if (account.status == Account.Status.DEAUTHORIZED and not has_token
                    and pending is None):
                continue  # done before: a replay
            Token.objects.filter(account=account).delete()
            PendingToken.objects.filter(account=account).delete()
            Account.objects.filter(pk=account.pk).update(
                status=Account.Status.DEAUTHORIZED, last_error=DEAUTHORIZED_MESSAGE,
                file_state=FileState.NOT_EXPORTED, file_error="", file_checked_at=now,
            )
            # The file keeps the dead token or is emptied, as for any dead token.
            token_file_dead_token_apply(account=account, actor=actor, now=now)
            event_record(account=account, action="deauthorize", outcome=Event.Outcome.OK,
                         message=DEAUTHORIZED_MESSAGE, actor=actor, now=now)
            changed.append(account.pk)
    return changed


def data_deletion_apply(*, app: InstagramApp, signed_request: object,
                        now: datetime) -> DataDeletionRequest:
    """Meta's data-deletion callback for `app`: delete what the registry holds of the
    user, and return the record whose confirmation code and status page Meta shows them.

    For every account of the app that knows the user's id (any of its three ids), in one
    transaction: the token and pending token, every token file of the account (on disk
    and its record: the file holds the token, its name may be the username), the
    username and the three ids are deleted; the username and ids are replaced by
    "[deleted]" in the account's event messages and labels and in the account's own items
    of stored alerts (other accounts' items, and the alerts' structure, stay as they were).
    The account row stays (staff's label and settings), DEAUTHORIZED. The record says
    COMPLETED (or NO_DATA for an unknown user), how many accounts were erased, and when;
    its confirmation code is 20 random letters and digits. Events name no id or username.

    A replay of the same signed_request (a keyed hash of it is stored, not the request)
    returns the first record unchanged and changes nothing.

    Raises SignedRequestInvalid (nothing changed), DataDeletionFailed when a token file
    cannot be removed (the database is left as it was, though files removed before the
    failure stay removed: Meta should retry), and DecryptionError when the app's secret
    cannot be read.

    The confirmation code is kept in the record only, never in an event message (events
    also go to the application log)."""
    request = _verify(app=app, signed_request=signed_request, now=now)
    digest = salted_hmac(_DIGEST_SALT, request.canonical, algorithm="sha256").hexdigest()
    first = DataDeletionRequest.objects.filter(request_digest=digest).first()
    if first is not None:
        return first
    actor = Actor(job=DATA_DELETION_JOB)
    code = "".join(secrets.choice(CONFIRMATION_ALPHABET) for _ in range(CONFIRMATION_LENGTH))
    try:
        with transaction.atomic():
            accounts = list(_accounts_locked(app=app, request=request))
            for account in accounts:
                _erase(account=account, code=code, actor=actor, now=now)
            record = DataDeletionRequest.objects.create(
                confirmation_code=code, request_digest=digest, app=app,
                status=(DataDeletionRequest.Status.COMPLETED if accounts
                        else DataDeletionRequest.Status.NO_DATA),
                accounts_erased=len(accounts), received_at=now, completed_at=now,
            )
            if not accounts:
                event_record(
                    account=None, action="data_deletion", outcome=Event.Outcome.OK,
                    message=(f"Data deletion request from Meta for app '{app.name}': no "
                             f"account of this app knows the user; nothing to delete."),
                    actor=actor, now=now)
    except IntegrityError:
        # The same request, handled meanwhile by another process (request_digest is
        # unique): its record is the answer, and its erasure the one that counts.
        first = DataDeletionRequest.objects.filter(request_digest=digest).first()
        if first is None:
            raise
        return first
    return record


# --- helpers ----------------------------------------------------------------------------


def _verify(*, app: InstagramApp, signed_request: object, now: datetime) -> SignedRequest:
    return signed_request_parse(signed_request, app_secret=app.app_secret, now=now)


def _accounts_locked(*, app: InstagramApp, request: SignedRequest) -> Iterable[Account]:
    # Locked: a refresh storing a token or an authorization landing meanwhile waits, and
    # two deliveries of the same request do not both act.
    return (selectors.accounts_of_instagram_user(app_id=app.pk, instagram_id=request.user_id)
            .select_for_update(of=("self",)).order_by("pk"))


def _erase(*, account: Account, code: str, actor: Actor, now: datetime) -> None:
    """Delete the account's Instagram data (caller holds the transaction and the row)."""
    admin_path = reverse("admin:accounts_account_change", args=[account.pk])
    terms = sorted({t for t in (account.username, account.ig_id, account.ig_user_id,
                                account.ig_exchange_user_id) if t})
    scrubber = _scrubber(terms)
    for record in TokenFile.objects.select_for_update().filter(account=account):
        _token_file_unlink(record.name)
        record.delete()
    Token.objects.filter(account=account).delete()
    PendingToken.objects.filter(account=account).delete()
    Account.objects.filter(pk=account.pk).update(
        username="", ig_id="", ig_user_id="", ig_exchange_user_id="",
        status=Account.Status.DEAUTHORIZED, last_error=ERASED_MESSAGE,
        file_state=FileState.NOT_EXPORTED, file_error="", file_written_at=None,
        file_checked_at=now,
    )
    if scrubber is not None:
        _scrub_events(account=account, scrubber=scrubber)
        _scrub_alert_deliveries(account_id=account.pk, admin_path=admin_path,
                                scrubber=scrubber)
    account.refresh_from_db()
    event_record(account=account, action="data_deletion", outcome=Event.Outcome.OK,
                 message=ERASED_MESSAGE, actor=actor, now=now)


def _token_file_unlink(name: str) -> None:
    try:
        validate_token_filename(name)
    except ValidationError:
        return  # never written: the registry writes only valid names
    path = Path(settings.TOKEN_EXPORT_DIR) / name
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.error("meta data deletion: could not remove a token file (%s); the deletion "
                     "was rolled back (files already removed stay removed), Meta's retry "
                     "will try again", exc.strerror or type(exc).__name__)
        raise DataDeletionFailed("A token file could not be removed, so the deletion was not "
                                 "completed; send the request again later.") from None


def _scrubber(terms: list[str]) -> re.Pattern[str] | None:
    """One pattern for the username (any case, not inside a longer name) and the ids (not
    inside a longer number); None when the account knew none of them."""
    parts = []
    for term in sorted(terms, key=len, reverse=True):
        if term.isascii() and term.isdigit():
            parts.append(rf"(?<![0-9]){re.escape(term)}(?![0-9])")
        else:
            parts.append(rf"(?<![A-Za-z0-9_]){re.escape(term)}(?![A-Za-z0-9_])")
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


def _scrub_events(*, account: Account, scrubber: re.Pattern[str]) -> None:
    changed = []
    for event in Event.objects.filter(account=account).only("pk", "message", "account_label"):
        message = scrubber.sub(ERASED_MARK, event.message)
        label = scrubber.sub(ERASED_MARK, event.account_label)
        if (message, label) != (event.message, event.account_label):
            event.message, event.account_label = message, label
            changed.append(event)
    # Events are append-only (Event.save refuses a second save): history is not rewritten.
    # Erasing the user's personal data on their request is the one exception the law
    # demands, so it goes around save() with an UPDATE that changes only these two texts.
    Event.objects.bulk_update(changed, ["message", "account_label"], batch_size=500)


def _scrub_alert_deliveries(*, account_id: int, admin_path: str,
                            scrubber: re.Pattern[str]) -> None:
    """Erase the account from the stored alerts (sent or still queued), touching only what
    is about it: a run's alert names many accounts, and a username such as "null",
    "2026" or "expired" also occurs as a word elsewhere in it. The formats are those
    `alerts._queue` and `alerts._body` write."""
    webhook = f'"account_id":{account_id},'  # json.dumps(separators=(",", ":"))
    candidates = AlertDelivery.objects.filter(
        Q(channel=AlertDelivery.Channel.WEBHOOK, body__contains=webhook)
        | Q(channel=AlertDelivery.Channel.EMAIL, body__contains=admin_path))
    changed = []
    for delivery in candidates.only("pk", "channel", "subject", "body"):
        if delivery.channel == AlertDelivery.Channel.WEBHOOK:
            scrubbed = _scrub_webhook_body(delivery.body, account_id=account_id,
                                           scrubber=scrubber)
        else:
            scrubbed = _scrub_mail_body(delivery.body, admin_path=admin_path,
                                        scrubber=scrubber)
        if scrubbed is None:
            continue
        body, only_notice = scrubbed
        subject = delivery.subject
        if only_notice and subject.startswith(SUBJECT_PREFIX):
            # A lone notice's subject is "<label>: <message>" (alerts._subject), all of it
            # about this account; any other subject only counts items.
            subject = SUBJECT_PREFIX + scrubber.sub(ERASED_MARK,
                                                    subject[len(SUBJECT_PREFIX):])
        if (body, subject) != (delivery.body, delivery.subject):
            delivery.body, delivery.subject = body, subject
            changed.append(delivery)
    AlertDelivery.objects.bulk_update(changed, ["body", "subject"], batch_size=500)


def _scrub_webhook_body(body: str, *, account_id: int,
                        scrubber: re.Pattern[str]) -> tuple[str, bool] | None:
    """The webhook body with the account's items scrubbed (their username replaced, the
    username and ids taken out of their free text), every other byte as it was; and
    whether the body is a lone notice of the account. None when it is not a body
    `alerts._queue` wrote."""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    items = document.get("items") if isinstance(document, dict) else None
    if not isinstance(items, list):
        logger.warning("meta data deletion: alert delivery body is not an alerts JSON body; "
                       "left as it is")
        return None
    mine = [item for item in items
            if isinstance(item, dict) and item.get("account_id") == account_id]
    for item in mine:
        if item.get("username"):
            item["username"] = ERASED_MARK
        for key in ("message", "last_error"):
            if isinstance(item.get(key), str):
                item[key] = scrubber.sub(ERASED_MARK, item[key])
    only_notice = len(items) == len(mine) == 1 and mine[0].get("kind") == Kind.NOTICE
    # Serialised as alerts._queue does: the other items come out byte for byte the same.
    return json.dumps(document, separators=(",", ":")), only_notice


# An item's first line in an alert mail ends in ", @<username>" when it has one.
_MAIL_USERNAME = re.compile(r"(, @)\S+$")
# An account item's lines that hold no free text (alerts._body).
_MAIL_FIXED = ("  State: ", "  Token expires: ")
_MAIL_LAST_ERROR = "  Last error: "


def _scrub_mail_body(body: str, *, admin_path: str,
                     scrubber: re.Pattern[str]) -> tuple[str, bool]:
    """The alert mail with the account's items scrubbed (the "@username" of their first
    line, the username and ids in their message and last error), every other line as it
    was; and whether the mail is a lone notice of the account. An item runs from its
    "* " line to its "  Admin: " line (alerts._body), which names the account by its
    admin URL."""
    lines = body.split("\n")
    items = mine = 0
    only_notice = False
    start: int | None = None
    for index, line in enumerate(lines):
        if line.startswith("* "):
            start = index
            items += 1
            continue
        if start is None or not line.startswith(("  Admin: ", "  Dashboard: ")):
            continue
        if line.startswith("  Admin: ") and line.endswith(admin_path):
            mine += 1
            lines[start] = _MAIL_USERNAME.sub(rf"\g<1>{ERASED_MARK}", lines[start])
            for inner in range(start + 1, index):
                text = lines[inner]
                if text.startswith(_MAIL_FIXED):
                    continue
                if text.startswith(_MAIL_LAST_ERROR):
                    prefix, text = _MAIL_LAST_ERROR, text[len(_MAIL_LAST_ERROR):]
                else:
                    prefix = ""
                lines[inner] = prefix + scrubber.sub(ERASED_MARK, text)
            # A notice's second line is its message; an alert's is its state.
            only_notice = index > start + 1 and not lines[start + 1].startswith("  State: ")
        start = None
    return "\n".join(lines), only_notice and items == mine == 1
