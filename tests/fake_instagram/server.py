"""HTTP server of the fake Instagram and its in-process Python API (``FakeInstagram``).

One port serves the three hosts (api.instagram.com, www.instagram.com,
graph.instagram.com) plus a JSON control API under ``/_fake/``.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import html
import json
import select
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit

from .state import (
    CHAOS_KINDS,
    EXCHANGE_SHAPES,
    FLAVOURS,
    MANGLES_UNUSABLE,
    ME_SHAPES,
    App,
    AuthorizeError,
    Call,
    Chaos,
    FakeState,
    FakeUser,
    Fault,
    Reply,
    fault_from_dict,
    json_reply,
    mangle,
    normalize_path,
)

GRAPH_PATHS = frozenset({"/access_token", "/refresh_access_token", "/me"})


def parse_form(content_type: str, body: bytes) -> dict[str, str]:
    """Parse an urlencoded or multipart/form-data body (other types give ``{}``)."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded" or (not ctype and b"=" in body):
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if ctype == "multipart/form-data":
        raw = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode() + body
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
        form: dict[str, str] = {}
        if message.is_multipart():
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if name:
                    payload = part.get_payload(decode=True) or b""
                    form[str(name)] = payload.decode("utf-8", "replace")
        return form
    return {}


def _with_query(uri: str, params: dict[str, str]) -> str:
    """Append ``params`` to ``uri``, keeping its existing query."""
    base = uri.split("#", 1)[0]
    sep = "" if base.endswith(("?", "&")) else ("&" if "?" in base else "?")
    return base + sep + urlencode(params)


def _peer_gone(sock: socket.socket) -> bool:
    """Whether the client has closed its end (or reset) the connection: an answer written
    now can no longer reach it. Peeks without consuming anything."""
    try:
        # A socket with a timeout waits for data inside recv(): ask select() first.
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False  # open, nothing sent: the client is waiting for the answer
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (ValueError, OSError):
        return True


def _page(status_code: int, title: str, body: str) -> Reply:
    text = (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head><body>{body}</body></html>"
    )
    return Reply(status_code, text.encode(), "text/html; charset=utf-8")


def _error_page(message: str) -> Reply:
    return _page(
        400,
        "Instagram - error",
        f'<h1>Sorry, this page isn\'t available.</h1><p id="error">{html.escape(message)}</p>',
    )


_DIALOG = """<h1 id="app-name">{name}</h1>
<p>{name} would like to access:</p>
<ul id="scopes">{scopes}</ul>
<form method="post" action="/oauth/authorize">{hidden}
<label for="username">Username</label>
<input type="text" id="username" name="username" value="{username}">
<button type="submit" name="decision" value="allow" id="allow">Allow</button>
<button type="submit" name="decision" value="cancel" id="cancel">Cancel</button>
</form>"""


def _dialog_page(app: App, scopes: list[str], params: dict[str, str], username: str) -> Reply:
    """The consent dialog: app name, scopes, username input, Allow/Cancel, hidden query."""
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in params.items()
        if k not in ("username", "decision")
    )
    body = _DIALOG.format(
        name=html.escape(app.name),
        scopes="".join(f"<li>{html.escape(s)}</li>" for s in scopes),
        hidden=hidden,
        username=html.escape(username),
    )
    return _page(200, f"Authorize {app.name}", body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Instagram does not drop connections under load; socketserver's backlog of 5 would
    # (SYNs dropped, a second's retransmit) when many refreshes start at once.
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], fake: FakeInstagram) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that went away (timeouts, disconnect faults)."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "FakeInstagram/1.0"
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr request log."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        fake = self.server.fake
        state = fake._state
        split = urlsplit(self.path)
        path = normalize_path(split.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if path.startswith("/_fake/"):
            self._send(fake._control(method, path, query, body))
            return
        form = parse_form(self.headers.get("Content-Type", ""), body)
        state.record(
            Call(method, path, split.path, query, form, dict(self.headers.items()), state.now())
        )
        if state.latency > 0:
            # Every call to Instagram takes this long to answer (a network's round trip).
            fake._stopping.wait(state.latency)
        graph = path in GRAPH_PATHS
        fault = state.pop_fault(path)
        name = fault.kind if fault is not None else ""
        if fault is None:
            drawn = state.chaos_fault(path, {**query, **form})
            if drawn is not None:
                name, fault = drawn
        if fault is not None and fault.kind == "disconnect":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None and fault.kind == "delay":
            fake._stopping.wait(fault.seconds)
        elif fault is not None and fault.kind not in ("trickle", "mangled"):
            self._send(fault.reply(), graph)
            return
        # Processed: a refresh below does rotate the token, whatever becomes of the answer.
        reply = self._route(method, path, query, form)
        if fault is not None and fault.kind == "mangled":
            reply = mangle(reply, fault.how)
        # Named while the client is still connected (a hook may look the socket up).
        client = fake.client_label(self.client_address) if reply.issued is not None else ""
        delivered = self._send(reply, graph, fault if fault and fault.kind == "trickle" else None)
        if reply.issued is not None:
            unusable = fault is not None and fault.how in MANGLES_UNUSABLE
            outcome = "unusable" if unusable else "delivered" if delivered else "undelivered"
            state.refresh_answered(reply.issued, outcome, name, client)

    def _route(self, method: str, path: str, query: dict[str, str], form: dict[str, str]) -> Reply:
        state = self.server.fake._state
        if path == "/oauth/authorize":
            return self._authorize(method, {**query, **form})
        if path == "/oauth/access_token":
            if method != "POST":
                return json_reply(
                    405,
                    {
                        "error_type": "OAuthException",
                        "code": 405,
                        "error_message": "Unsupported method: use POST",
                    },
                )
            return state.exchange_code(form)
        if path == "/access_token":
            return state.exchange_long({**query, **form})
        if path == "/refresh_access_token":
            return state.refresh(method, {**query, **form})
        if path == "/me":
            return state.me(method, query)
        if path == "/" and method == "GET":
            return _page(200, "Fake Instagram", "<h1>Fake Instagram</h1><p>See /_fake/calls.</p>")
        return json_reply(
            404,
            {
                "error": {
                    "message": f"Unknown path {path}",
                    "type": "GraphMethodException",
                    "code": 100,
                }
            },
        )

    def _authorize(self, method: str, params: dict[str, str]) -> Reply:
        state = self.server.fake._state
        try:
            app, scopes = state.validate_authorize(params)
        except AuthorizeError as exc:
            return _error_page(str(exc))
        redirect_uri = params["redirect_uri"]
        extra = {"state": params["state"]} if "state" in params else {}
        if method == "GET":
            with state.lock:
                default_user = next(iter(state.users), "demo_user")
            return _dialog_page(app, scopes, params, default_user)
        if method != "POST":
            return _error_page("Unsupported method")
        decision = params.get("decision")
        if decision == "cancel":
            location = _with_query(
                redirect_uri,
                {
                    "error": "access_denied",
                    "error_reason": "user_denied",
                    "error_description": "The user denied your request",
                    **extra,
                },
            )
        elif decision == "allow":
            username = params.get("username", "").strip()
            if not username:
                return _error_page("Enter a username")
            code = state.issue_code(app, redirect_uri, username, scopes)
            location = _with_query(redirect_uri, {"code": code, **extra}) + "#_"
        else:
            return _error_page("Invalid decision")
        return Reply(302, b"", "text/html; charset=utf-8", {"Location": location})

    def _send(self, reply: Reply, graph: bool = False, trickle: Fault | None = None) -> bool:
        """Write the answer (a trickle fault spreads the body over its seconds). Returns
        whether all of it went to a client that was still connected."""
        headers: dict[str, str] = {}
        if graph:
            with self.server.fake._state.lock:
                headers.update(self.server.fake._state.usage_headers)
        headers.update(reply.headers)
        body = b"" if self.command == "HEAD" else reply.body
        pieces = [body]
        if trickle is not None and body:
            size = -(-len(body) // trickle.chunks)
            pieces = [body[i : i + size] for i in range(0, len(body), size)]
        try:
            if _peer_gone(self.connection):
                raise ConnectionAbortedError
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            for piece in pieces:
                if trickle is not None:
                    self.server.fake._stopping.wait(trickle.seconds / len(pieces))
                    if _peer_gone(self.connection):
                        raise ConnectionAbortedError
                self.wfile.write(piece)
                self.wfile.flush()
        except OSError:
            self.close_connection = True
            return False
        return True


def _call_dict(call: Call) -> dict[str, Any]:
    data = asdict(call)
    data["at"] = call.at.isoformat()
    return data


class FakeInstagram:
    """A fake Instagram (api, www and graph hosts) on one local port.

    Use ``with FakeInstagram() as fake:`` or ``start()``/``stop()``. All state lives
    under one lock; every public method is safe to call while requests are served.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Configure the address; ``port=0`` picks a free port at ``start()``."""
        self.host = host
        self.port = port
        self._state = FakeState()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        # How the refresh ledger names a client: "host:port" unless replaced (see
        # ``client_label``).
        self.client_namer: Callable[[tuple[str, int]], str] | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns self. ``url`` is valid afterwards."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-instagram",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; pending delay faults wake up. Idempotent."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the running server (no trailing slash)."""
        if self._server is None:
            raise RuntimeError("FakeInstagram is not started")
        return f"http://{self.host}:{self.port}"

    # ----------------------------------------------------------------- setup

    def add_app(
        self,
        client_id: str,
        client_secret: str,
        redirect_uris: list[str],
        flavour: str = "instagram_login",
        name: str = "Demo app",
    ) -> App:
        """Register (or replace) an app; ``flavour`` is "basic_display" or "instagram_login"."""
        if flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}")
        app = App(str(client_id), client_secret, list(redirect_uris), flavour, name)
        with self._state.lock:
            self._state.apps[app.client_id] = app
        return app

    def add_user(
        self,
        username: str,
        *,
        id: str | None = None,
        user_id: str | None = None,
        account_type: str = "BUSINESS",
    ) -> FakeUser:
        """Register (or replace) a user; missing ids are random 17-digit strings > 2**53."""
        return self._state.add_user(username, id, user_id, account_type)

    def rename_user(self, old: str, new: str) -> FakeUser:
        """The user now goes by ``new``: same ids and tokens; raises KeyError, ValueError."""
        return self._state.rename_user(old, new)

    # ----------------------------------------------------------------- clock

    def now(self) -> datetime:
        """The fake clock: aware UTC real time plus ``clock_offset``."""
        return self._state.now()

    def advance(self, seconds: float) -> None:
        """Move the fake clock forward by ``seconds`` (negative moves it back)."""
        with self._state.lock:
            self._state.clock_offset += timedelta(seconds=seconds)

    @property
    def clock_offset(self) -> timedelta:
        """How far the fake clock is ahead of real time."""
        return self._state.clock_offset

    @clock_offset.setter
    def clock_offset(self, value: timedelta | float) -> None:
        with self._state.lock:
            self._state.clock_offset = (
                value if isinstance(value, timedelta) else timedelta(seconds=value)
            )

    # ----------------------------------------------------------------- tokens

    def mint_token(
        self, *, client_id: str, username: str, kind: str = "long", age: timedelta = timedelta(0)
    ) -> str:
        """Issue a token of a registered app as if obtained ``age`` ago; creates the user."""
        with self._state.lock:
            app = self._state.apps.get(str(client_id))
            if app is None:
                raise ValueError(f"unknown client_id {client_id!r}")
            issued = self._state.now() - age
            token = self._state.issue_token(
                app, username, kind, self._state.default_scopes(app), issued
            )
            return token.value

    def token_info(self, token: str) -> dict[str, Any] | None:
        """``{kind, username, client_id, scopes, issued_at, expires_at, revoked, revoke_subcode}``
        of a token this fake issued, else None."""
        with self._state.lock:
            found = self._state.tokens.get(token)
            if found is None:
                return None
            return {
                "kind": found.kind,
                "username": found.username,
                "client_id": found.client_id,
                "scopes": list(found.scopes),
                "issued_at": found.issued_at,
                "expires_at": found.expires_at,
                "revoked": found.revoked,
                "revoke_subcode": found.revoke_subcode,
            }

    def revoke_user(self, username: str, *, subcode: int | None = 460) -> int:
        """Make every token the user holds now answer 190/``subcode`` (None: plain 190).

        Tokens issued later are unaffected. Returns how many tokens were revoked;
        raises KeyError for an unknown user.
        """
        with self._state.lock:
            if username not in self._state.users:
                raise KeyError(username)
            count = 0
            for token in self._state.tokens.values():
                if token.username == username:
                    token.revoked, token.revoke_subcode = True, subcode
                    count += 1
            return count

    # ----------------------------------------------------------------- behaviour switches

    @property
    def exchange_shape(self) -> str:
        """Code-exchange success shape: "flat", "permissions" or "data" (section 2)."""
        return self._state.exchange_shape

    @exchange_shape.setter
    def exchange_shape(self, value: str) -> None:
        if value not in EXCHANGE_SHAPES:
            raise ValueError(f"exchange_shape must be one of {EXCHANGE_SHAPES}")
        self._state.exchange_shape = value

    @property
    def me_shape(self) -> str:
        """/me success shape: "flat" or "data" (section 5)."""
        return self._state.me_shape

    @me_shape.setter
    def me_shape(self, value: str) -> None:
        if value not in ME_SHAPES:
            raise ValueError(f"me_shape must be one of {ME_SHAPES}")
        self._state.me_shape = value

    @property
    def refresh_returns_same_token(self) -> bool:
        """When true, a refresh extends and returns the same token string."""
        return self._state.refresh_returns_same_token

    @refresh_returns_same_token.setter
    def refresh_returns_same_token(self, value: bool) -> None:
        self._state.refresh_returns_same_token = bool(value)

    @property
    def latency(self) -> float:
        """Seconds every call to Instagram's hosts waits before it is answered (the control
        API under ``/_fake/`` does not); 0 by default."""
        return self._state.latency

    @latency.setter
    def latency(self, value: float) -> None:
        seconds = float(value)
        if not 0 <= seconds <= 60:
            raise ValueError("latency must be between 0 and 60 seconds")
        self._state.latency = seconds

    @property
    def usage_headers(self) -> dict[str, str]:
        """Extra headers sent with every graph response (mutable in place)."""
        return self._state.usage_headers

    @usage_headers.setter
    def usage_headers(self, value: dict[str, str]) -> None:
        with self._state.lock:
            self._state.usage_headers = dict(value)

    # ----------------------------------------------------------------- faults and calls

    def inject(self, path: str, *faults: Fault) -> None:
        """Queue faults for the next requests to ``path``: one per request, FIFO."""
        key = normalize_path(path)
        with self._state.lock:
            self._state.faults[key].extend(faults)

    def chaos(
        self,
        rate: float,
        kinds: list[str] | tuple[str, ...] = CHAOS_KINDS,
        seed: int = 0,
        *,
        paths: list[str] | tuple[str, ...] = ("/refresh_access_token",),
        timeout_seconds: float = 25.0,
        trickle_seconds: float = 40.0,
        regain_minutes: int = 0,
    ) -> None:
        """Seeded random faults on ``paths`` (see ``state.Chaos``); ``rate=0`` turns them off.
        Faults queued with ``inject`` go first."""
        mode = Chaos(rate, tuple(kinds), seed, tuple(paths), float(timeout_seconds),
                     float(trickle_seconds), int(regain_minutes))
        with self._state.lock:
            self._state.chaos = mode if rate > 0 else None

    def chaos_report(self) -> dict[str, Any] | None:
        """The chaos settings and the faults injected so far, or None when off."""
        with self._state.lock:
            return self._state.chaos.report() if self._state.chaos else None

    def refreshes(self) -> list[dict[str, Any]]:
        """Every refresh performed, oldest first: ``{username, client_id, old, new, at,
        fault, outcome}`` (see ``state.RefreshRecord`` for the outcomes)."""
        with self._state.lock:
            return [asdict(r) for r in self._state.refreshes]

    def client_label(self, address: tuple[str, int]) -> str:
        """The ledger's name for the client at ``address``: ``client_namer(address)`` when
        set (called while the client is connected, so it can look the socket up), else
        "host:port"."""
        if self.client_namer is not None:
            with contextlib.suppress(Exception):
                return self.client_namer(address)
        return f"{address[0]}:{address[1]}"

    def accepts(self, token: str) -> bool:
        """Whether Instagram would accept ``token`` now (issued here, not revoked, unexpired)."""
        with self._state.lock:
            return not isinstance(self._state._check_token(token), Reply)

    def calls(self, path: str | None = None) -> list[Call]:
        """Requests received (control API excluded), oldest first, optionally for one path."""
        key = normalize_path(path) if path is not None else None
        with self._state.lock:
            return [c for c in self._state.calls if key is None or c.path == key]

    def reset(self) -> None:
        """Forget everything: apps, users, tokens, codes, calls, faults, clock, settings."""
        self._state.reset()

    # ----------------------------------------------------------------- control API

    def _control(self, method: str, path: str, query: dict[str, str], body: bytes) -> Reply:
        """Serve ``/_fake/*`` (JSON in, JSON out)."""
        try:
            data = json.loads(body or b"{}")
            if not isinstance(data, dict):
                raise TypeError("JSON object expected")
            return self._control_route(method, path, query, data)
        except KeyError as exc:
            return json_reply(400, {"error": f"missing or unknown: {exc}"})
        except (ValueError, TypeError) as exc:
            return json_reply(400, {"error": str(exc)})

    def _control_route(
        self, method: str, path: str, query: dict[str, str], data: dict[str, Any]
    ) -> Reply:
        if method == "GET" and path == "/_fake/calls":
            calls = self.calls(query.get("path"))
            counts: dict[str, int] = {}
            for call in calls:
                counts[call.path] = counts.get(call.path, 0) + 1
            return json_reply(200, {"counts": counts, "calls": [_call_dict(c) for c in calls]})
        if method == "GET" and path == "/_fake/clock":
            return json_reply(200, self._clock_dict())
        if method == "GET" and path == "/_fake/chaos":
            return json_reply(200, {"chaos": self.chaos_report()})
        if method == "GET" and path == "/_fake/refreshes":
            records = self.refreshes()
            for record in records:
                record["at"] = record["at"].isoformat()
            return json_reply(200, {"refreshes": records})
        if method != "POST":
            return json_reply(404, {"error": f"unknown control endpoint {method} {path}"})
        if path == "/_fake/apps":
            app = self.add_app(
                data["client_id"],
                data["client_secret"],
                data["redirect_uris"],
                data.get("flavour", "instagram_login"),
                data.get("name", "Demo app"),
            )
            return json_reply(200, asdict(app))
        if path == "/_fake/users":
            user = self.add_user(
                data["username"],
                id=data.get("id"),
                user_id=data.get("user_id"),
                account_type=data.get("account_type", "BUSINESS"),
            )
            return json_reply(200, asdict(user))
        if path == "/_fake/tokens" and "usernames" in data:
            # Many at once (benchmarks): one long-lived token per username.
            age = timedelta(days=float(data.get("age_days", 0)))
            usernames = data["usernames"]
            if not isinstance(usernames, list) or not all(isinstance(u, str) for u in usernames):
                raise TypeError("usernames must be a list of strings")
            tokens = [self.mint_token(client_id=data["client_id"], username=u, age=age)
                      for u in usernames]
            return json_reply(200, {"access_tokens": tokens})
        if path == "/_fake/tokens":
            age = timedelta(
                days=float(data.get("age_days", 0)), seconds=float(data.get("age_seconds", 0))
            )
            value = self.mint_token(
                client_id=data["client_id"],
                username=data["username"],
                kind=data.get("kind", "long"),
                age=age,
            )
            info = self.token_info(value) or {}
            return json_reply(
                200, {"access_token": value, "expires_at": info["expires_at"].isoformat()}
            )
        if path == "/_fake/clock":
            self.advance(float(data.get("advance_seconds", 0)))
            return json_reply(200, self._clock_dict())
        if path == "/_fake/faults":
            faults = [fault_from_dict(spec) for spec in data.get("faults", [])]
            self.inject(data["path"], *faults)
            return json_reply(200, {"path": normalize_path(data["path"]), "queued": len(faults)})
        if path == "/_fake/chaos":
            options = {k: data[k] for k in ("kinds", "paths", "timeout_seconds",
                                             "trickle_seconds", "regain_minutes") if k in data}
            self.chaos(float(data["rate"]), seed=int(data.get("seed", 0)), **options)
            return json_reply(200, {"chaos": self.chaos_report()})
        if path == "/_fake/revoke":
            revoked = self.revoke_user(data["username"], subcode=data.get("subcode", 460))
            return json_reply(200, {"revoked": revoked})
        if path == "/_fake/settings":
            for name in (
                "exchange_shape",
                "me_shape",
                "refresh_returns_same_token",
                "usage_headers",
                "latency",
            ):
                if name in data:
                    setattr(self, name, data[name])
            return json_reply(200, self._settings_dict())
        if path == "/_fake/reset":
            self.reset()
            return json_reply(200, {"reset": True})
        return json_reply(404, {"error": f"unknown control endpoint {method} {path}"})

    def _clock_dict(self) -> dict[str, Any]:
        return {"now": self.now().isoformat(), "offset_seconds": self.clock_offset.total_seconds()}

    def _settings_dict(self) -> dict[str, Any]:
        return {
            "exchange_shape": self.exchange_shape,
            "me_shape": self.me_shape,
            "refresh_returns_same_token": self.refresh_returns_same_token,
            "usage_headers": dict(self.usage_headers),
            "latency": self.latency,
        }
