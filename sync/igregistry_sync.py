#!/usr/bin/env python3
"""igregistry-sync: keep local token files in step with an igregistry on another host.

Runs beside the website, with nothing but Python 3.9+ and `requests` (no Django, no
database). For each account it asks the registry's token API
(`GET /api/v1/tokens/<account>`, README "Token API") with the API key, and writes the
token file the way the registry writes its own (`TOKEN_EXPORT_DIR`): a temporary file in
the same directory, fsynced, given the mode and group, renamed over the old one, the
directory fsynced; so a PHP page reading the file sees the old token or the new one,
never half a file.

Polling is cheap: each answer's `ETag` is kept in a state file and sent back as
`If-None-Match`; an unchanged token costs a 304 and writes nothing. A file that changed or
vanished on disk since it was written is fetched and written anew.

It never replaces a good file with a bad one: an answer that is not a usable token
(no token, not printable ASCII, the wrong account) leaves the file as it is. It exits 1
and says why (on stderr) when the registry cannot be reached or refuses, an answer is
unusable, or a file cannot be written; 2 for bad arguments; 0 when every file is current.

    IGREGISTRY_API_KEY=igr_... python3 igregistry_sync.py \\
        --registry https://registry.example.com --dir /var/www/tokens \\
        --account shop_feed --account 12:other_feed.txt --mode 0640 --group apache

`--account` takes the account's id or token file name as the registry knows it,
optionally followed by `:<local file name>` (default: the same name).
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

# The registry's own rules (accounts/instagram/answers.py and models.py): a token is
# 16 to 2,048 printable ASCII characters without whitespace; a file name letters, digits,
# '.', '_' and '-', not starting with a dot.
TOKEN_RE = re.compile(r"[\x21-\x7e]{16,2048}")
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
MAX_ANSWER_BYTES = 64 * 1024
USER_AGENT = "igregistry-sync/1"


class SyncError(Exception):
    """One account could not be brought up to date; the message says why (no secret)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="igregistry-sync",
        description="Write igregistry's tokens to local files, atomically, polling its "
                    "token API with If-None-Match.",
    )
    parser.add_argument("--registry", required=True,
                        help="The registry's base URL, e.g. https://registry.example.com")
    parser.add_argument("--key-file", type=Path,
                        help="A file holding the API key (else IGREGISTRY_API_KEY).")
    parser.add_argument("--dir", required=True, type=Path, help="Where the files go.")
    parser.add_argument("--account", action="append", required=True, metavar="ACCOUNT[:FILE]",
                        help="An account's id or token file name at the registry, and "
                             "optionally the local file name. Repeat for several.")
    parser.add_argument("--format", choices=["text", "json"], default="text",
                        help="text: the bare token (default); json: token, expiry, ids "
                             "and username, as the registry's JSON files.")
    parser.add_argument("--mode", default="0640", help="File mode, octal (default 0640).")
    parser.add_argument("--group", default="", help="File group, e.g. apache (default: "
                        "the process's).")
    parser.add_argument("--state-file", type=Path,
                        help="Where ETags are kept (default: DIR/.igregistry-sync.json).")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="Seconds per request (default 10).")
    parser.add_argument("--interval", type=float, default=0.0,
                        help="Poll every this many seconds, forever (default: once, for "
                             "cron or a systemd timer).")
    args = parser.parse_args(argv)
    try:
        args.mode = int(args.mode, 8)
    except ValueError:
        parser.error(f"--mode: not an octal mode: {args.mode!r}")
    if not 0 <= args.mode <= 0o777:
        parser.error("--mode: must be between 0000 and 0777")
    if not 0 < args.timeout <= 300:
        parser.error("--timeout: must be between 0 and 300 seconds")
    if args.interval < 0:
        parser.error("--interval: must not be negative")
    targets = []
    for spec in args.account:
        remote, _, local = spec.partition(":")
        local = local or remote
        if not NAME_RE.fullmatch(remote) or not NAME_RE.fullmatch(local) or ".." in local:
            parser.error(f"--account {spec!r}: use ACCOUNT or ACCOUNT:FILE, with letters, "
                         f"digits, '.', '_' or '-' (no path)")
        if local in {t[1] for t in targets}:
            parser.error(f"--account {spec!r}: the file {local!r} is already another "
                         f"account's: two tokens would take turns in it")
        targets.append((remote, local))
    args.targets = targets
    args.state_file = args.state_file or args.dir / ".igregistry-sync.json"
    key = ""
    if args.key_file:
        try:
            key = args.key_file.read_text().strip()
        except OSError as exc:
            parser.error(f"--key-file: cannot read it ({exc.strerror})")
    else:
        key = os.environ.get("IGREGISTRY_API_KEY", "").strip()
    if not key:
        parser.error("no API key: give --key-file or set IGREGISTRY_API_KEY")
    args.key = key
    if args.group:
        try:
            args.gid = grp.getgrnam(args.group).gr_gid
        except KeyError:
            parser.error(f"--group: no group {args.group!r} on this host")
    else:
        args.gid = -1
    return args


def load_state(path: Path) -> dict[str, dict[str, Any]]:
    """What was last written per local file (ETag, content hash, format);
    {} if none or unreadable, and an entry of another shape is dropped (then that file is
    fetched in full once)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict):
        return {}
    return {name: entry for name, entry in state.items() if isinstance(entry, dict)}


def file_is_as_written(path: Path, known: dict[str, Any], args: argparse.Namespace) -> bool:
    """Whether the file still holds what this command last wrote there, in the format,
    mode and group asked for now: only then may a 304 leave it as it is."""
    try:
        info = path.stat()
    except OSError:
        return False
    return (known.get("sha256") == file_digest(path)
            and known.get("format") == args.format
            and (info.st_mode & 0o777) == args.mode
            and (args.gid == -1 or info.st_gid == args.gid))


def file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def write_atomically(directory: Path, name: str, content: str, mode: int, gid: int) -> None:
    """Write `content` to directory/name as the registry does: temporary file, fsync,
    mode and group, rename, directory fsync. Raises OSError; leaves no temporary file."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), mode)
            if gid != -1:
                os.fchown(handle.fileno(), -1, gid)
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, directory / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def file_content(answer: dict[str, Any], file_format: str) -> str:
    """What the local file holds, from the API's answer (README "Token API")."""
    if file_format == "json":
        instagram = answer.get("instagram") or {}
        return json.dumps({
            "access_token": answer["access_token"],
            "expires_at": answer["expires_at"],
            "id": instagram.get("id"),
            "user_id": instagram.get("user_id"),
            "username": answer.get("username"),
        }, indent=2) + "\n"
    return answer["access_token"]


def checked_answer(response: requests.Response, remote: str) -> dict[str, Any]:
    """The API's JSON answer, if it holds a usable token; raises SyncError otherwise."""
    if len(response.content) > MAX_ANSWER_BYTES:
        raise SyncError("the registry's answer is too large to be a token")
    try:
        answer = response.json()
    except ValueError:
        raise SyncError("the registry's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise SyncError("the registry's answer is not a JSON object")
    # An id names one account; a name may be its file or (export off) its username,
    # which the answer need not repeat.
    if remote.isdigit() and str(answer.get("account")) != remote:
        raise SyncError("the registry answered for another account")
    token = answer.get("access_token")
    if token is None:
        raise SyncError(f"the registry holds no usable token (status "
                        f"{answer.get('status')!r}): the file is left as it is")
    if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
        raise SyncError("the registry's answer holds no well-formed token")
    if not isinstance(answer.get("expires_at"), str):
        raise SyncError("the registry's answer has no expiry")
    return answer


def sync_one(session: requests.Session, args: argparse.Namespace, remote: str, local: str,
             state: dict[str, dict[str, Any]]) -> str:
    """Bring one local file up to date; returns what was done ("unchanged", "written").
    Raises SyncError."""
    path = args.dir / local
    known = state.get(local, {})
    headers = {"Authorization": f"Bearer {args.key}", "Accept": "application/json",
               "User-Agent": USER_AGENT}
    # A 304 is trusted only while the file still is what this command wrote, as asked now
    # (a changed --format, --mode or --group, or a file edited or chmod-ed, is rewritten).
    if isinstance(known.get("etag"), str) and known["etag"] and file_is_as_written(
            path, known, args):
        headers["If-None-Match"] = known["etag"]
    url = f"{args.registry.rstrip('/')}/api/v1/tokens/{remote}"
    try:
        response = session.get(url, headers=headers, timeout=args.timeout,
                               allow_redirects=False)
    except requests.RequestException as exc:
        raise SyncError(f"cannot reach the registry ({type(exc).__name__})") from None
    if response.status_code == 304 and "If-None-Match" in headers:
        return "unchanged"
    if response.status_code != 200:
        reason = ""
        with contextlib.suppress(ValueError, AttributeError):
            reason = str(response.json().get("detail", ""))[:300]
        raise SyncError(f"the registry answered {response.status_code}"
                        + (f": {reason}" if reason else ""))
    answer = checked_answer(response, remote)
    content = file_content(answer, args.format)
    try:
        write_atomically(args.dir, local, content, args.mode, args.gid)
    except OSError as exc:
        raise SyncError(f"cannot write {path} ({exc.strerror or type(exc).__name__})") from None
    state[local] = {"etag": response.headers.get("ETag", ""),
                    "sha256": hashlib.sha256(content.encode()).hexdigest(),
                    "format": args.format}
    return "written"


def sync_all(args: argparse.Namespace) -> int:
    """One pass over every account; 0 when all files are current, 1 otherwise."""
    state = load_state(args.state_file)
    failed = 0
    with requests.Session() as session:
        session.trust_env = True  # proxies and CA bundles from the environment, as curl
        for remote, local in args.targets:
            try:
                done = sync_one(session, args, remote, local, state)
            except SyncError as exc:
                failed += 1
                print(f"igregistry-sync: {local}: {exc}", file=sys.stderr)
            else:
                if done == "written":
                    print(f"igregistry-sync: {local}: written")
    try:
        write_atomically(args.state_file.parent, args.state_file.name,
                         json.dumps(state, indent=2, sort_keys=True), 0o600, -1)
    except OSError as exc:
        failed += 1
        print(f"igregistry-sync: cannot save {args.state_file} ({exc.strerror})",
              file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.interval:
        return sync_all(args)
    while True:  # a long-running poller (systemd service); each pass says what failed
        sync_all(args)
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
