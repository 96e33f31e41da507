"""Command line: ``python -m tests.fake_instagram serve|mint``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import requests

from .server import FakeInstagram
from .state import CHAOS_KINDS

DEMO_REDIRECT_URIS = [
    "http://127.0.0.1:8000/oauth/callback/",
    "http://localhost:8000/oauth/callback/",
    "https://www.mywebsite.com/",
]
DEMO_APPS = [
    # (client_id, client_secret, flavour, name)
    ("1000000000000001", "demo-login-secret", "instagram_login", "Demo Instagram Login app"),
    ("1000000000000002", "demo-basic-secret", "basic_display", "Demo Basic Display app"),
]


CONTROL_API = """\
control API of a running fake (JSON in and out; FakeInstagram in tests/fake_instagram/server.py
has the same as methods):
  POST /_fake/apps      {"client_id", "client_secret", "redirect_uris", "flavour"}  register an app
  POST /_fake/users     {"username"}                       add a user
  POST /_fake/tokens    {"client_id", "username", "kind", "age_days"}, or "usernames": [...]
                                                           mint tokens as if issued age_days ago
  POST /_fake/faults    {"path", "faults": [{"kind": "status"|"rate_limited"|"delay"|...}]}
                                                           the next answers to path go wrong
  POST /_fake/chaos     {"rate", "kinds", "seed"}          random faults on refresh calls
  POST /_fake/revoke    {"username", "subcode"}            the owner removed the app
  POST /_fake/settings  {"latency"}                        seconds before each answer
  POST /_fake/clock     {"advance_seconds"}                move the fake's clock on
  POST /_fake/reset     {}                                 forget everything
  GET  /_fake/calls, /_fake/refreshes, /_fake/chaos, /_fake/clock
"""


def setup_demo(fake: FakeInstagram) -> None:
    """Register the two demo apps and the user ``demo_user``."""
    for client_id, secret, flavour, name in DEMO_APPS:
        fake.add_app(client_id, secret, DEMO_REDIRECT_URIS, flavour=flavour, name=name)
    fake.add_user("demo_user")


def serve(host: str, port: int, demo: bool, chaos: dict | None = None,
          latency: float = 0.0) -> int:
    """Serve until Ctrl-C (or SIGTERM), after printing one line with the URL. ``chaos``:
    keyword arguments of ``FakeInstagram.chaos`` (seeded random faults); ``latency``:
    seconds before each call to Instagram's hosts is answered."""
    fake = FakeInstagram(host=host, port=port).start()
    fake.latency = latency
    if demo:
        setup_demo(fake)
    if chaos:
        fake.chaos(**chaos)
    print(
        f"Fake Instagram listening on {fake.url}" + (" (demo apps loaded)" if demo else ""),
        flush=True,
    )

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Explicit handlers: a shell's background job would otherwise ignore SIGINT.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


def mint(url: str, client_id: str, username: str, kind: str, age_days: float) -> int:
    """Ask a running fake for a token and print it alone on stdout."""
    response = requests.post(
        url.rstrip("/") + "/_fake/tokens",
        json={"client_id": client_id, "username": username, "kind": kind, "age_days": age_days},
        timeout=10,
    )
    if response.status_code != 200:
        print(f"error {response.status_code}: {response.text}", file=sys.stderr)
        return 1
    print(response.json()["access_token"])
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the sub-command."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fake_instagram", epilog=CONTROL_API,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the fake until Ctrl-C")
    p_serve.add_argument("--host", default="127.0.0.1")
    p_serve.add_argument("--port", type=int, default=8001)
    p_serve.add_argument(
        "--demo",
        action="store_true",
        help="register the demo apps 1000000000000001/1000000000000002 and demo_user",
    )
    p_serve.add_argument("--latency", type=float, default=0.0,
                         help="seconds before each call to Instagram is answered")
    p_serve.add_argument("--chaos-rate", type=float, default=0.0,
                         help="share of refresh calls that go wrong at random (0 to 1)")
    p_serve.add_argument("--chaos-seed", type=int, default=0)
    p_serve.add_argument("--chaos-kinds", default=",".join(CHAOS_KINDS),
                         help="comma-separated, of: " + ", ".join(CHAOS_KINDS))
    p_mint = sub.add_parser("mint", help="mint a token on a running fake and print it")
    p_mint.add_argument("--url", default="http://127.0.0.1:8001")
    p_mint.add_argument("--client-id", required=True)
    p_mint.add_argument("--username", required=True)
    p_mint.add_argument("--kind", choices=["long", "short"], default="long")
    p_mint.add_argument("--age-days", type=float, default=0.0)
    args = parser.parse_args(argv)
    if args.command == "serve":
        chaos = None
        if args.chaos_rate:
            chaos = {"rate": args.chaos_rate, "seed": args.chaos_seed,
                     "kinds": [k for k in args.chaos_kinds.split(",") if k]}
        return serve(args.host, args.port, args.demo, chaos, args.latency)
    return mint(args.url, args.client_id, args.username, args.kind, args.age_days)


if __name__ == "__main__":
    sys.exit(main())
