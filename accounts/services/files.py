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
from django.db import transaction

from .. import selectors
from ..models import Account, Event, Token, validate_token_filename
from ..selectors import FileState
from .common import Actor, event_record


def token_export(*, account: Account, actor: Actor, now: datetime) -> Path | None:
    """Write the account's token file atomically (temporary file in the same directory,
    fsync, rename) with the configured mode and group. A failure is recorded on the
    account and the event log and leaves the previous file intact. Returns the path
    written, or None when nothing was (export disabled, no token, or failure)."""
    with transaction.atomic():
        # The account row is held while its file is written, so two writers (a refresh and
        # the reconcile task) cannot interleave and leave the older token on disk.
        account = (
            Account.objects.select_for_update(of=("self",))
            .select_related("token")
            .get(pk=account.pk)
        )
        if not account.export_enabled:
            return None
        token = getattr(account, "token", None)
        if token is None or token.kind != Token.Kind.LONG:
            return None
        try:
            path = _export(account=account, token=token)
        except (OSError, ValidationError, LookupError) as exc:
            message = _export_error_text(exc, account.export_filename)
            Account.objects.filter(pk=account.pk).update(file_error=message)
            event_record(account=account, action="export", outcome=Event.Outcome.FAILED,
                         message=message, actor=actor, now=now)
            return None
        Account.objects.filter(pk=account.pk).update(file_error="", file_written_at=now)
        event_record(account=account, action="export", outcome=Event.Outcome.OK,
                     message=f"Wrote {path}.", actor=actor, now=now)
    return path


def _export(*, account: Account, token: Token) -> Path:
    name = account.export_filename
    if not name:
        raise ValidationError("The account has no token file name and no username yet.")
    validate_token_filename(name)
    owner = selectors.account_owning_filename(account=account)
    if owner is not None:
        raise ValidationError(
            f"The file name {name!r} is already used by account '{owner.label}'; give "
            f"one of them another token file name."
        )
    return _write_atomically(
        directory=Path(settings.TOKEN_EXPORT_DIR),
        name=name,
        content=selectors.token_file_content(account=account, token=token),
        mode=settings.TOKEN_FILE_MODE,
        group=settings.TOKEN_FILE_GROUP,
    )


def _export_error_text(exc: Exception, name: str) -> str:
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
    checked: int
    rewritten: int
    failed: int


def token_files_reconcile(
    *, actor: Actor, now: datetime, rewrite_all: bool = False
) -> ReconcileReport:
    """Rewrite every token file that is missing, stale, or has the wrong mode or group
    (all of them with `rewrite_all`), so the files match the database."""
    checked = rewritten = failed = 0
    for account in selectors.token_files_to_check():
        checked += 1
        if not rewrite_all and selectors.token_file_state(account=account) == FileState.IN_SYNC:
            continue
        if token_export(account=account, actor=actor, now=now) is None:
            failed += 1
        else:
            rewritten += 1
    return ReconcileReport(checked=checked, rewritten=rewritten, failed=failed)
