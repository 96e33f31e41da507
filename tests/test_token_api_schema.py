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


CALLS = {"with key": 0, "without": 0, "200": 0}


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@pytest.mark.django_db
def test_the_api_keeps_to_its_document(case, api_key):  # noqa: ANN001
    # Every other case with the key the registry made; the others with what was generated.
    headers = dict(case.headers or {})
    with_key = CALLS["with key"] <= CALLS["without"]
    if with_key:
        headers["Authorization"] = f"Bearer {api_key}"
    CALLS["with key" if with_key else "without"] += 1
    response = case.call_and_validate(headers=headers)
    CALLS["200"] += response.status_code == 200


def test_the_schema_run_reached_a_token():
    """The run above was not all refusals: some answers carried a token, so their body
    was checked against the document too (runs after it: pytest keeps file order)."""
    assert CALLS["200"] > 0 and CALLS["without"] > 0
