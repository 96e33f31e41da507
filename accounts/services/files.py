"""Token files: written atomically, with the configured mode and group."""

from __future__ import annotations

import contextlib
import grp
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import TextField
from django.db.models.functions import Cast

from .. import selectors
from ..crypto import DecryptionError, decrypt
from ..models import Account, Event, Token, TokenFile, validate_token_filename
from ..selectors import FileState
from .common import Actor, EventEntry, FlowError, event_record, events_record


class FileNameTaken(Exception):
    """Another account (or a deleted one) owns the file name this account would write."""

    def __init__(self, *, name: str, owner: TokenFile) -> None:
        self.name, self.owner = name, owner
        if owner.account is None:
            whose = f"the deleted account '{owner.account_label}' (an orphaned file)"
        elif owner.status == TokenFile.Status.ORPHANED:
            whose = f"account '{owner.account.label}' (id {owner.account_id}), which left it"
        else:
            whose = f"account '{owner.account.label}' (id {owner.account_id})"
        super().__init__(
            f"Token file not written: the file name {name!r} belongs to {whose}. Give this "
            f"account another token file name, or take the file over from its page."
        )


def token_export(*, account: Account, actor: Actor, now: datetime) -> Path | None:
    """Write the account's token file atomically (temporary file in the same directory,
    fsync, rename) with the configured mode and group, under the name the account owns.

    The first export claims the name (the explicit token file name, else the Instagram
    username); a name another account owns is never written: the account's file state
    becomes `name_taken`. When staff set another token file name, the old file is left
    on disk, flagged orphaned. A failure is recorded on the account (`file_state`,
    `file_error`) and, when new, in the event log, and leaves the previous file intact.
    Returns the path written, or None when nothing was (export off, no long-lived token,
    or failure)."""
    with transaction.atomic():
        # The account row is held while its file is written, so two writers (a refresh and
        # the reconcile task) cannot interleave and leave the older token on disk.
        account = (
            Account.objects.select_for_update(of=("self",))
            .select_related("token")
            .defer("token__value")  # decrypted where it is written, failures recorded
            .get(pk=account.pk)
        )
        token = getattr(account, "token", None)
        if not account.export_enabled:
            # The file stays on disk (a website may still read it) but is no longer
            # written: flagged orphaned, so it is seen and removed, never silently stale.
            token_file_release(account=account, reason="its export was turned off",
                               actor=actor, now=now)
        if not account.export_enabled or token is None or token.kind != Token.Kind.LONG:
            _record_state(account=account, state=FileState.NOT_EXPORTED, error="", now=now)
            return None
        try:
            claim = _claim(account=account, actor=actor, now=now)
            path = _write_atomically(
                directory=Path(settings.TOKEN_EXPORT_DIR),
                name=claim.name,
                content=selectors.token_file_content(account=account, token=token),
                mode=settings.TOKEN_FILE_MODE,
                group=settings.TOKEN_FILE_GROUP,
            )
        except FileNameTaken as exc:
            _export_failed(account=account, state=FileState.NAME_TAKEN, message=str(exc),
                           actor=actor, now=now)
            return None
        except (OSError, ValidationError, LookupError, DecryptionError) as exc:
            message = _export_error_text(exc, selectors.token_file_name(account=account))
            _export_failed(account=account, state=FileState.UNWRITABLE, message=message,
                           actor=actor, now=now)
            return None
        TokenFile.objects.filter(pk=claim.pk).update(written_at=now)
        Account.objects.filter(pk=account.pk).update(
            file_error="", file_written_at=now, file_state=FileState.IN_SYNC,
            file_checked_at=now,
        )
        event_record(account=account, action="export", outcome=Event.Outcome.OK,
                     message=f"Wrote {path}.", actor=actor, now=now)
    return path


def token_files_write(*, account_ids: list[int], actor: Actor,
                      now: datetime) -> dict[int, Path | None]:
    """`token_export` for many accounts (a refreshed chunk), with the same guarantees, in
    a handful of statements for all of them: one transaction holds their rows while their
    files are written (atomically, each as `token_export` does), and records the writes
    together. An account whose export is not the plain case (its first export or a new
    name to claim, export turned off, no long-lived token) goes through `token_export`.
    Returns the path written (or None) per account id."""
    written: dict[int, Path | None] = {}
    others: list[Account] = []
    with transaction.atomic():
        accounts = list(
            Account.objects.select_for_update(of=("self",))
            .select_related("token")
            .defer("token__value")
            # Read as stored and decrypted here: a value no key decrypts fails its own file.
            .annotate(stored_value=Cast("token__value", output_field=TextField()))
            .filter(pk__in=account_ids)
            .order_by("pk")
        )
        current = selectors.token_files_current_for(accounts=accounts)
        done: list[tuple[Account, TokenFile, Path]] = []
        for account in accounts:
            token = getattr(account, "token", None)
            record = current.get(account.pk)
            name = selectors.token_file_name_given(account=account, current=record)
            if (not account.export_enabled or token is None or token.kind != Token.Kind.LONG
                    or record is None or record.name != name):
                others.append(account)
                continue
            try:
                validate_token_filename(name)
                token.value = decrypt(account.stored_value)
                path = _write_atomically(
                    directory=Path(settings.TOKEN_EXPORT_DIR), name=name,
                    content=selectors.token_file_content(account=account, token=token),
                    mode=settings.TOKEN_FILE_MODE, group=settings.TOKEN_FILE_GROUP,
                )
            except (OSError, ValidationError, LookupError, DecryptionError) as exc:
                _export_failed(account=account, state=FileState.UNWRITABLE,
                               message=_export_error_text(exc, name), actor=actor, now=now)
                written[account.pk] = None
                continue
            done.append((account, record, path))
            written[account.pk] = path
        if done:
            TokenFile.objects.filter(pk__in=[record.pk for _, record, _ in done]).update(
                written_at=now)
            Account.objects.filter(pk__in=[account.pk for account, _, _ in done]).update(
                file_error="", file_written_at=now, file_state=FileState.IN_SYNC,
                file_checked_at=now,
            )
            events_record(entries=[
                EventEntry(account=account, action="export", outcome=Event.Outcome.OK,
                           message=f"Wrote {path}.") for account, _, path in done
            ], actor=actor, now=now)
    for account in others:
        written[account.pk] = token_export(account=account, actor=actor, now=now)
    return written


def token_file_dead_token_apply(*, account: Account, actor: Actor, now: datetime) -> None:
    """Call once the account's token is dead: with TOKEN_FILE_DEAD_TOKEN=empty its file is
    emptied now rather than at the next reconcile run; with `keep` (default) the file
    keeps the last token and nothing is written.

    Also right once the token row is gone (Meta's deauthorize callback deletes it):
    `token_export` writes nothing for an account without a token, and no reconcile run
    looks at that file again, so the account's current file is emptied here directly
    (text: empty; JSON: `"access_token": null`, `"expires_at": null` and `"status"`)."""
    if settings.TOKEN_FILE_DEAD_TOKEN != "empty":
        return
    if Token.objects.filter(account_id=account.pk).exists():
        token_export(account=account, actor=actor, now=now)
        return
    with transaction.atomic():
        # The same lock as token_export's: no writer interleaves with this one.
        account = Account.objects.select_for_update(of=("self",)).get(pk=account.pk)
        record = selectors.token_file_current(account=account)
        if record is None or not account.export_enabled:
            return  # never written, or no longer this account's to write
        try:
            validate_token_filename(record.name)
            path = _write_atomically(
                directory=Path(settings.TOKEN_EXPORT_DIR), name=record.name,
                content=selectors.token_file_content(account=account, token=None),
                mode=settings.TOKEN_FILE_MODE, group=settings.TOKEN_FILE_GROUP,
            )
        except (OSError, ValidationError, LookupError) as exc:
            _export_failed(account=account, state=FileState.UNWRITABLE,
                           message=_export_error_text(exc, record.name), actor=actor, now=now)
            return
        TokenFile.objects.filter(pk=record.pk).update(written_at=now)
        Account.objects.filter(pk=account.pk).update(
            file_error="", file_written_at=now, file_state=FileState.NOT_EXPORTED,
            file_checked_at=now,
        )
        event_record(account=account, action="export", outcome=Event.Outcome.OK,
                     message=f"Emptied {path}: the account has no token any more.",
                     actor=actor, now=now)


def _record_state(*, account: Account, state: str, error: str, now: datetime) -> None:
    if account.file_state != state or account.file_error != error:
        Account.objects.filter(pk=account.pk).update(
            file_state=state, file_error=error, file_checked_at=now
        )


def _export_failed(
    *, account: Account, state: str, message: str, actor: Actor, now: datetime
) -> None:
    # A job retrying the same failure every few minutes says it once; a person always hears.
    news = account.file_error != message or actor.user is not None
    Account.objects.filter(pk=account.pk).update(
        file_error=message, file_state=state, file_checked_at=now
    )
    if news:
        event_record(account=account, action="export", outcome=Event.Outcome.FAILED,
                     message=message, actor=actor, now=now)


def _claim(*, account: Account, actor: Actor, now: datetime) -> TokenFile:
    """The account's token file record for the name it should write, claiming the name
    when it is free (caller holds the account row). Raises FileNameTaken or
    ValidationError (no name, or an unsafe one)."""
    current = selectors.token_file_current(account=account)
    name = selectors.token_file_name_given(account=account, current=current)
    if not name:
        raise ValidationError("The account has no token file name and no username yet.")
    validate_token_filename(name)
    if current is not None and current.name == name:
        return current
    record = TokenFile.objects.select_for_update().filter(name=name).first()
    if record is not None and record.account_id != account.pk:
        raise FileNameTaken(name=name, owner=record)
    if current is not None:
        _orphan(record=current, actor=actor, now=now)
    if record is not None:
        # The account's own orphaned file, named again: it is current once more.
        record.status, record.orphaned_at, record.claimed_at = TokenFile.Status.CURRENT, None, now
        record.account_label = account.label
        record.save(update_fields=["status", "orphaned_at", "claimed_at", "account_label"])
        return record
    try:
        with transaction.atomic():
            return TokenFile.objects.create(name=name, account=account,
                                            account_label=account.label, claimed_at=now)
    except IntegrityError:
        # Another account claimed it a moment ago.
        owner = TokenFile.objects.select_related("account").get(name=name)
        raise FileNameTaken(name=name, owner=owner) from None


def _orphan(*, record: TokenFile, actor: Actor, now: datetime,
            reason: str = "the account's file was renamed") -> None:
    record.status, record.orphaned_at = TokenFile.Status.ORPHANED, now
    record.save(update_fields=["status", "orphaned_at"])
    event_record(
        account=record.account, action="file_orphaned", outcome=Event.Outcome.OK,
        message=(f"Token file {record.name!r} is no longer written ({reason}); it stays on "
                 f"disk until an operator removes it in Token files."),
        actor=actor, now=now,
    )


def token_file_release(*, account: Account, reason: str, actor: Actor, now: datetime) -> None:
    """The account stops writing its current token file (export turned off, account about
    to be deleted): the file stays on disk, flagged orphaned, until an operator removes
    it. A second call does nothing."""
    for record in TokenFile.objects.filter(account=account, status=TokenFile.Status.CURRENT):
        _orphan(record=record, actor=actor, now=now, reason=reason)


def token_file_take_over(*, account: Account, actor: Actor, now: datetime) -> Path | None:
    """Give the account the file name another account (or a deleted one) owns, then write
    it. The former owner stops writing that file: its own file state becomes `name_taken`
    until staff give it another name. Logged on both accounts. Callers check the
    `accounts.take_over_tokenfile` permission. Returns what `token_export` returns."""
    with transaction.atomic():
        account = Account.objects.select_for_update(of=("self",)).get(pk=account.pk)
        name = selectors.token_file_name(account=account)
        if not name:
            raise FlowError("This account has no token file name yet.", account=account)
        record = (
            TokenFile.objects.select_for_update(of=("self",)).select_related("account")
            .filter(name=name).first()
        )
        if record is not None and record.account_id != account.pk:
            former = record.account
            current = selectors.token_file_current(account=account)
            if current is not None:
                _orphan(record=current, actor=actor, now=now)
            record.account, record.account_label = account, account.label
            record.status, record.orphaned_at, record.claimed_at = (
                TokenFile.Status.CURRENT, None, now)
            record.save()
            whose = f"account '{former.label}'" if former else "a deleted account"
            event_record(account=account, action="file_take_over", outcome=Event.Outcome.OK,
                         message=f"Took over token file {name!r} from {whose}.",
                         actor=actor, now=now)
            if former is not None:
                message = (f"Token file not written: its file {name!r} was taken over by "
                           f"account '{account.label}'. Give this account another token file "
                           f"name, or turn its export off.")
                Account.objects.filter(pk=former.pk).update(
                    file_state=FileState.NAME_TAKEN, file_error=message, file_checked_at=now)
                event_record(account=former, action="file_take_over", outcome=Event.Outcome.OK,
                             message=message, actor=actor, now=now)
    return token_export(account=account, actor=actor, now=now)


def token_file_remove(*, token_file: TokenFile, actor: Actor, now: datetime) -> bool:
    """Delete an orphaned token file from disk and forget it. Refuses (FlowError) a file
    an account still writes. Returns whether a file was on disk. Logged."""
    with transaction.atomic():
        record = TokenFile.objects.select_for_update().filter(pk=token_file.pk).first()
        if record is None:
            return False
        if record.status == TokenFile.Status.CURRENT and record.account_id is not None:
            raise FlowError(f"Token file {record.name!r} is still written by its account; "
                            f"only orphaned files can be removed.")
        validate_token_filename(record.name)
        path = Path(settings.TOKEN_EXPORT_DIR) / record.name
        try:
            path.unlink()
            existed = True
        except FileNotFoundError:
            existed = False
        except OSError as exc:
            raise FlowError(f"Could not remove {record.name!r}: "
                            f"{exc.strerror or type(exc).__name__}.") from None
        record.delete()
        event_record(
            account=record.account, action="file_removed", outcome=Event.Outcome.OK,
            message=(f"Removed orphaned token file {record.name!r}"
                     + ("." if existed else " (it was no longer on disk).")),
            actor=actor, now=now,
        )
    return existed


def _export_error_text(exc: Exception, name: str) -> str:
    if isinstance(exc, DecryptionError):
        return ("Token file not written: the stored token cannot be decrypted with any key in "
                "ENCRYPTION_KEYS (restore the key that encrypted it, or authorize again).")
    if isinstance(exc, ValidationError):
        return f"Token file not written: {' '.join(exc.messages)}"
    if isinstance(exc, LookupError):
        return f"Token file not written: {exc.args[0] if exc.args else exc}"
    return f"Token file {name!r} not written: {exc.strerror or type(exc).__name__}."


def _write_atomically(*, directory: Path, name: str, content: str, mode: int, group: str) -> Path:
    gid = -1
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise LookupError(f"the group {group!r} (TOKEN_FILE_GROUP) does not exist.") from None
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / name
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), mode)
            if gid != -1:
                os.fchown(handle.fileno(), -1, gid)
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename is durable only once the directory entry is on disk.
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final



@dataclass(frozen=True)
class ReconcileReport:
    """What a reconcile run found: accounts checked, files rewritten, files it could not
    make right (each such account is left in a file-problem state)."""

    checked: int
    rewritten: int
    failed: int


def token_files_reconcile(
    *, actor: Actor, now: datetime, rewrite_all: bool = False
) -> ReconcileReport:
    """Check every token file against the database and rewrite the ones that are missing,
    stale, or have the wrong mode or group (all of them with `rewrite_all`). Records each
    account's file state, so a file that cannot be made right shows as a file problem on
    the dashboard, in the metrics and in the alerts."""
    checked = rewritten = failed = 0
    in_sync: list[int] = []
    for account in selectors.token_files_to_check():
        checked += 1
        try:
            state = None if rewrite_all else selectors.token_file_state(account=account)
        except DecryptionError:
            state = None  # the export records why it cannot write this one
        if state == FileState.IN_SYNC:
            in_sync.append(account.pk)
            continue
        if token_export(account=account, actor=actor, now=now) is None:
            failed += 1
        else:
            rewritten += 1
    if in_sync:
        Account.objects.filter(pk__in=in_sync).update(
            file_state=FileState.IN_SYNC, file_error="", file_checked_at=now
        )
    # Accounts that no longer write a file (export off, token gone) carry no file state.
    Account.objects.exclude(pk__in=selectors.token_files_to_check().values("pk")).exclude(
        file_state=FileState.NOT_EXPORTED
    ).update(file_state=FileState.NOT_EXPORTED, file_error="", file_checked_at=now)
    return ReconcileReport(checked=checked, rewritten=rewritten, failed=failed)
