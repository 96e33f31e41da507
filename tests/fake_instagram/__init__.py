"""A fake Instagram (OAuth dialog, token endpoints, /me) served over real HTTP.

See ``/work/shared/instagram-api.md`` for the behaviour it imitates, and
``python -m tests.fake_instagram --help`` for the command line.
"""

from .server import FakeInstagram
from .state import (
    App,
    Call,
    FakeUser,
    Fault,
    delay,
    disconnect,
    garbage,
    graph_error,
    rate_limited,
    status,
)

__all__ = [
    "App",
    "Call",
    "FakeInstagram",
    "FakeUser",
    "Fault",
    "delay",
    "disconnect",
    "garbage",
    "graph_error",
    "rate_limited",
    "status",
]
