"""Sending a request to Instagram: one `requests.Session` with keep-alive, explicit
connect and read timeouts, and an overall deadline per call.

The read timeout bounds each wait for a byte; a server that sends one byte just inside
it, again and again, would hold a call for minutes (observed: 43 s with a 5 s read
timeout). So every call also has a deadline, connect plus the whole answer: a watchdog
shuts the call's socket down when it passes, however slowly the server sends.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import socket
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .errors import InstagramError, Transient, Unreachable, error_from
from .usage import MAX_BODY_BYTES, Usage, loads_bounded


class _Watch:
    """The deadline of one call: the sockets it used, shut down when time is up."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Watch:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def adopt(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            self._shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # already closed: nothing left to stop
            sock.shutdown(socket.SHUT_RDWR)


_current: contextvars.ContextVar[_Watch | None] = contextvars.ContextVar("watch", default=None)


class _Watched:
    """Hands the connection's socket to the current call's watch before each answer is
    read (a kept-alive connection is reused without connecting again)."""

    def connect(self) -> None:
        super().connect()
        watch = _current.get()
        if watch is not None:
            watch.adopt(self.sock)

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        watch = _current.get()
        if watch is not None:
            watch.adopt(self.sock)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool, "https": _WatchedHTTPSPool,
        }


def session_with_deadlines() -> requests.Session:
    """A session whose connections can be shut down by a call's deadline."""
    session = requests.Session()
    # Kept-alive connections for as many calls in flight as REFRESH_CONCURRENCY allows.
    adapter = _WatchedAdapter(pool_maxsize=64)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "igregistry/1"
    # requests would read the environment (proxies, NO_PROXY, CA bundle, ~/.netrc) on
    # every call, about a sixth of a refresh's CPU (bench/refresh.py --profile): the CA
    # bundle is read here, once, and the proxies once per host (`proxies_for`); no netrc
    # for Instagram.
    session.trust_env = False
    session.verify = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                      or True)
    return session


@functools.lru_cache(maxsize=16)
def proxies_for(origin: str) -> dict[str, str]:
    """The proxies the environment names for calls to `origin` (scheme://host[:port]),
    read once per process as requests reads them (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY,
    NO_PROXY)."""
    return requests.utils.get_environ_proxies(origin)


class Transport:
    """Sends one request and returns its JSON body and usage, or raises one of the
    exceptions in `errors` (never requests' own, whose text holds the URL and token)."""

    def __init__(self, *, connect_timeout: float, read_timeout: float, deadline: float,
                 session: requests.Session | None = None) -> None:
        # The deadline covers connecting too: no single wait may outlast it.
        self.timeout = (min(connect_timeout, deadline), min(read_timeout, deadline))
        self.deadline = deadline
        self.session = session or session_with_deadlines()

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
    ) -> tuple[dict[str, Any], Usage | None]:
        """Seconds: `deadline` for the whole call. Raises TokenInvalid, RateLimited,
        Transient (network, timeout, deadline, 5xx), MalformedAnswer or InstagramError."""
        parts = urlsplit(url)
        endpoint = parts.path
        proxies = proxies_for(f"{parts.scheme}://{parts.netloc}")
        failure: Transient | None = None
        with _Watch(self.deadline) as watch:
            token = _current.set(watch)
            try:
                response = self.session.request(
                    method, url, params=params, data=data, timeout=self.timeout,
                    allow_redirects=False, stream=True, proxies=proxies,
                )
                raw = _read_bounded(response)
            except _TooBig:
                failure = Transient(f"Instagram's answer to {endpoint} was too large.")
            except requests.RequestException as exc:
                failure = Unreachable(
                    f"Instagram gave no complete answer to {endpoint} within "
                    f"{self.deadline:g} s." if watch.expired else
                    f"Instagram did not answer {endpoint} in time." if isinstance(
                        exc, requests.Timeout) else
                    f"Could not reach Instagram for {endpoint} ({type(exc).__name__})."
                )
            finally:
                _current.reset(token)
        if failure is None and watch.expired:
            failure = Unreachable(f"Instagram gave no complete answer to {endpoint} within "
                                f"{self.deadline:g} s.")
        if failure is not None:
            # Raised outside the except block so that neither __cause__ nor __context__
            # keeps requests' exception: its text holds the full URL, token included.
            raise failure
        usage = Usage.from_headers(response.headers)
        body = loads_bounded(raw)
        status = response.status_code
        if 200 <= status < 300 and isinstance(body, dict) and not body.get("error"):
            return body, usage
        raise error_from(status, body, usage, endpoint, secrets)


class _TooBig(Exception):
    pass


def _read_bounded(response: requests.Response) -> str:
    """The whole body, at most MAX_BODY_BYTES. Read to the end, the connection goes back
    to the pool for the next call (keep-alive); cut short, it is closed."""
    chunks, size = [], 0
    try:
        for chunk in response.iter_content(8192):
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise _TooBig
            chunks.append(chunk)
    except BaseException:
        response.close()
        raise
    return b"".join(chunks).decode("utf-8", errors="replace")


__all__ = ["InstagramError", "Transport", "session_with_deadlines"]
