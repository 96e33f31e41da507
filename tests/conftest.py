"""Shared fixtures: the fake Instagram over real HTTP, apps and accounts, and the
gates for tests that need PostgreSQL or Redis."""

from __future__ import annotations

import os
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from django.db import connection
from django.utils import timezone
from hypothesis import settings as hypothesis_settings

from accounts.models import Account, InstagramApp, Token
from tests.fake_instagram import FakeInstagram

CALLBACK_URI = "http://testserver/oauth/callback/"
OTHER_SITE_URI = "https://www.mywebsite.com/"
# Property-based tests: in CI every run tries the same examples (derandomized, no example
# database), so a failure there is reproducible from the log; locally each run explores anew
# and replays the last failures from .hypothesis/. Each test sets its own max_examples and
# deadline to keep the property tests within about a minute on two cores.
hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("dev")
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")

SECRETS = {
    "instagram_login": ("1000000000000001", "login-app-secret-9f8e7d6c5b4a"),
    "basic_display": ("1000000000000002", "basic-app-secret-1a2b3c4d5e6f"),
}


def pytest_ignore_collect(collection_path, config):  # noqa: ANN001
    """Mutation runs (bench/mutation.sh) name the test files that bear on one module in
    MUTATION_TEST_FILES; every other test file is left out. Unset: nothing is left out."""
    only = os.environ.get("MUTATION_TEST_FILES")
    if only and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        return collection_path.name not in only.split()
    return None


def require_service(name: str, available: bool, how: str) -> None:
    """Skip a test locally when a server is missing; in CI (CI=true) fail instead."""
    if available:
        return
    message = f"needs {name}: {how}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must provide it)")
    pytest.skip(message)


@pytest.fixture
def postgres(db) -> None:  # noqa: ANN001
    require_service(
        "PostgreSQL", connection.vendor == "postgresql",
        "run with DATABASE_URL=postgres://postgres@127.0.0.1:5432/test",
    )


@pytest.fixture(scope="session")
def fake_server():
    with FakeInstagram() as server:
        yield server


@pytest.fixture
def fake(fake_server, settings):
    """The fake Instagram, emptied, with the registry pointed at it."""
    fake_server.reset()
    settings.INSTAGRAM_API_URL = fake_server.url
    settings.INSTAGRAM_WWW_URL = fake_server.url
    settings.INSTAGRAM_GRAPH_URL = fake_server.url
    settings.INSTAGRAM_READ_TIMEOUT = 2.0
    yield fake_server
    fake_server.reset()


@pytest.fixture(autouse=True)
def token_dir(settings, tmp_path):
    """Each test writes token files into its own directory."""
    settings.TOKEN_EXPORT_DIR = tmp_path / "tokens"
    return settings.TOKEN_EXPORT_DIR


def make_app(fake: FakeInstagram, flavour: str, redirect_uri: str = CALLBACK_URI) -> InstagramApp:
    client_id, secret = SECRETS[flavour]
    fake.add_app(client_id, secret, [CALLBACK_URI, OTHER_SITE_URI], flavour=flavour,
                 name=f"{flavour} app")
    return InstagramApp.objects.create(
        name=f"{flavour} app", flavour=flavour, app_id=client_id, app_secret=secret,
        redirect_uri=redirect_uri,
    )


@pytest.fixture(params=["instagram_login", "basic_display"])
def ig_app(request, fake, db) -> InstagramApp:
    """An app of each flavour, registered at the fake and in the registry."""
    return make_app(fake, request.param)


@pytest.fixture
def login_app(fake, db) -> InstagramApp:
    return make_app(fake, "instagram_login")


@pytest.fixture
def account(ig_app) -> Account:
    return Account.objects.create(app=ig_app, label="Shop feed")


@pytest.fixture
def login_account(login_app) -> Account:
    return Account.objects.create(app=login_app, label="Shop feed")


def allow_at_fake(authorize_url: str, *, username: str = "shop_owner",
                  decision: str = "allow") -> str:
    """Do what the account owner's browser does at Instagram: open the authorize page,
    press Allow (or Cancel), and return where Instagram redirects to."""
    page = requests.get(authorize_url, timeout=5)
    assert page.status_code == 200, page.text
    parts = urlsplit(authorize_url)
    form = dict(parse_qsl(parts.query)) | {"username": username, "decision": decision}
    answer = requests.post(f"{parts.scheme}://{parts.netloc}/oauth/authorize", data=form,
                           allow_redirects=False, timeout=5)
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"]


@pytest.fixture
def redis_url() -> str:
    """REDIS_URL, once Redis answers a ping there (skipped locally, required in CI)."""
    import redis

    url = os.environ.get("REDIS_URL", "")
    available = False
    if url:
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
            available = bool(client.ping())
            client.close()
        except redis.RedisError:
            available = False
    require_service(
        "Redis", available, "run with REDIS_URL=redis://127.0.0.1:6379/15 (a Redis that answers)"
    )
    return url


def active_account(fake: FakeInstagram, app: InstagramApp, label: str, *,
                   username: str | None = None, age: timedelta = timedelta(days=50),
                   exported: bool = False, **fields) -> Account:  # noqa: ANN003
    """An authorized account whose long-lived token the fake minted `age` ago (default 50
    days: due, 10 days left), with the fake's user id; its file written if `exported`."""
    from accounts import services
    from accounts.services import Actor

    username = username or label.lower().replace(" ", "_")
    now = timezone.now()
    account = Account.objects.create(app=app, label=label, **fields)
    user = fake.add_user(username, id=str(10**17 + account.pk))
    Account.objects.filter(pk=account.pk).update(status="active", username=username,
                                                 ig_id=user.id)
    value = fake.mint_token(client_id=app.app_id, username=username, kind="long", age=age)
    Token.objects.create(account=account, value=value, kind="long", obtained_at=now - age,
                         expires_at=now - age + timedelta(days=60))
    if exported:
        services.token_export(account=account, actor=Actor(job="test"), now=now)
    return Account.objects.select_related("token").get(pk=account.pk)


def callback_path(client, account: Account, username: str = "shop_owner") -> str:  # noqa: ANN001
    """Press Authorize on the account as `client`'s user, allow at the fake as `username`,
    and return the path and query the browser then requests at the registry's callback."""
    from django.urls import reverse

    response = client.post(reverse("admin:accounts_account_authorize", args=[account.pk]))
    parts = urlsplit(allow_at_fake(response["Location"], username=username))
    return f"{parts.path}?{parts.query}"


@pytest.fixture
def in_flight(monkeypatch):  # noqa: ANN001
    """The most refresh calls in flight at once, measured around the real client."""
    import threading

    from accounts.instagram import InstagramClient

    lock, state = threading.Lock(), {"now": 0, "most": 0}
    real = InstagramClient.refresh

    def counted(self, **kwargs):  # noqa: ANN001, ANN003
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        try:
            return real(self, **kwargs)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(InstagramClient, "refresh", counted)
    return state
