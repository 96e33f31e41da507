"""A fake Instagram (OAuth dialog, token endpoints, /me) served over real HTTP.

See ``/work/shared/instagram-api.md`` for the behaviour it imitates, and
``python -m tests.fake_instagram --help`` for the command line.
"""

from .server import FakeInstagram
from .state import (
    CHAOS_KINDS,
    App,
    Call,
    Chaos,
    FakeUser,
    Fault,
    delay,
    disconnect,
    garbage,
    graph_error,
    mangled,
    rate_limited,
    status,
    trickle,
)

__all__ = [
    "CHAOS_KINDS",
    "App",
    "Call",
    "Chaos",
    "FakeInstagram",
    "FakeUser",
    "Fault",
    "delay",
    "disconnect",
    "garbage",
    "graph_error",
    "mangled",
    "rate_limited",
    "status",
    "trickle",
]
