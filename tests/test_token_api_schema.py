"""schemathesis against the token API's OpenAPI document (accounts/openapi.json): generated
requests (account names, ETags, keys) through the WSGI application find no 500 and no
answer outside the document (status, headers, content type, body schema)."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings

from accounts import services
from tests.conftest import active_account

DOCUMENT = Path(__file__).resolve().parent.parent / "accounts" / "openapi.json"
schema = schemathesis.openapi.from_path(DOCUMENT)
# Called in process, through the whole middleware stack, on the test's database.
schema.app = get_wsgi_application()


@pytest.fixture
def keep_connection():  # noqa: ANN201
    """As Django's test client does: the WSGI handler would close the database connection
    at each request's end, and with it the test's transaction (PostgreSQL)."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def api_key(keep_connection, fake, login_app, token_dir, settings) -> str:  # noqa: ANN001
    settings.ALLOWED_HOSTS = ["*"]  # schemathesis's WSGI client names the host "localhost"
    from django.utils import timezone

    # The document's examples: "shop_feed" in the key's scope, "other_feed" out of it.
    feed = active_account(fake, login_app, "Shop feed", exported=True)
    active_account(fake, login_app, "Other feed", exported=True)
    _, key, _ = services.api_key_create(name="schemathesis", accounts=[feed], user=None,
                                        now=timezone.now())
    return key


@pytest.fixture(scope="module")
def calls():  # noqa: ANN201
    """Counts of the schema run's cases; once every case has run, the run must not have
    been all refusals: some answers carried a token, so their body was checked against
    the document too (an error of the run's last case otherwise)."""
    counts = {"with key": 0, "without": 0, "200": 0}
    yield counts
    assert counts["200"] > 0 and counts["without"] > 0, counts


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@pytest.mark.django_db
def test_the_api_keeps_to_its_document(case, api_key, calls):  # noqa: ANN001
    # Every other case with the key the registry made; the others with what was generated.
    headers = dict(case.headers or {})
    with_key = calls["with key"] <= calls["without"]
    if with_key:
        headers["Authorization"] = f"Bearer {api_key}"
    calls["with key" if with_key else "without"] += 1
    response = case.call_and_validate(headers=headers)
    calls["200"] += response.status_code == 200
