"""What reaches the log: request lines and errors never carry a code, state or token."""

from __future__ import annotations

import io
import logging
from contextlib import contextmanager

from django.utils.log import AdminEmailHandler

from accounts.instagram import redact_secrets


@contextmanager
def console_of(name: str):
    """What the configured console handler of logger `name` writes, as a string buffer."""
    (handler,) = [h for h in logging.getLogger(name).handlers if h.get_name() == "console"]
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    root_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.INFO)  # whatever LOG_LEVEL the environment gives
    try:
        yield buffer
    finally:
        handler.setStream(previous)
        logging.getLogger().setLevel(root_level)


def test_development_server_request_lines_are_redacted():
    with console_of("django.server") as out:
        logging.getLogger("django.server").warning(
            '"%s" %s %s', "GET /oauth/callback/?code=AQBsecretcode123&state=st4te-value HTTP/1.1",
            302, 0,
        )
    err = out.getvalue()
    assert "code=[redacted]&state=[redacted]" in err
    assert "AQBsecretcode123" not in err and "st4te-value" not in err


def test_application_log_lines_are_redacted():
    with console_of("") as out:
        logging.getLogger("accounts").warning(
            "calling /refresh_access_token?access_token=IGAAxyz789")
    err = out.getvalue()
    assert "access_token=[redacted]" in err and "IGAAxyz789" not in err


def test_a_traceback_in_the_log_is_redacted_too():
    with console_of("") as out:
        try:
            raise ConnectionError("GET /refresh_access_token?access_token=IGAAtraceback42 failed")
        except ConnectionError:
            logging.getLogger("accounts").exception("refresh: unexpected error")
    err = out.getvalue()
    assert "Traceback" in err and "ConnectionError" in err
    assert "access_token=[redacted]" in err and "IGAAtraceback42" not in err


def test_no_error_mails_with_request_details():
    # Django's AdminEmailHandler mails GET parameters and the raw URL unfiltered.
    for name in ("django", "django.request", "django.server", ""):
        logger = logging.getLogger(name)
        assert not any(isinstance(h, AdminEmailHandler) for h in logger.handlers), name


def test_redact_secrets_masks_every_secret_parameter():
    text = ("https://x/cb?code=AQB1#_ client_secret=abc&access_token=IG2 state=s3 "
            "signed_request=sig.payload other=keep")
    assert redact_secrets(text) == (
        "https://x/cb?code=[redacted]#_ client_secret=[redacted]&access_token=[redacted] "
        "state=[redacted] signed_request=[redacted] other=keep"
    )
