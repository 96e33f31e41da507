"""What was seen when Instagram or a person sent something hostile, each now refused and
recorded instead of crashing or being stored."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from accounts import selectors, services
from accounts.instagram import InstagramClient, MalformedAnswer, Transient
from accounts.instagram.answers import short_lived_from, valid_id
from accounts.models import (
    Account,
    Event,
    PendingToken,
    Token,
    digits_only,
    validate_token_filename,
)
from accounts.services import Actor, Outcome
from tests.conftest import active_account, callback_path
from tests.fake_instagram import Fault, status

ACTOR = Actor(job="test")
DAY = timedelta(days=1)
REFRESH = "/refresh_access_token"


def json_fault(body: str, headers: tuple = ()) -> Fault:
    return Fault("status", 200, body.encode(), "application/json", headers=headers)


def due(fake, app) -> Account:  # noqa: ANN001
    """Account "shop": due (50 days old, 10 left), its file written."""
    return active_account(fake, app, "shop", exported=True)


def start_flow(admin_client, account: Account, username: str = "shop_owner"):  # noqa: ANN001
    return admin_client.get(callback_path(admin_client, account, username))


# --- 1. answers that used to crash ---------------------------------------------------------

DEEP = "[" * 15_000 + "]" * 15_000  # under the size bound: the depth is what is tested


def test_a_deeply_nested_body_is_a_recorded_failure_with_a_back_off(fake, login_app):
    account = due(fake, login_app)
    fake.inject(REFRESH, json_fault(DEEP))
    result = services.token_refresh(account_id=account.pk, actor=ACTOR, now=timezone.now())
    assert result.outcome == Outcome.RETRY and "unreadable" in result.message
    assert ".." not in result.message
    token = Token.objects.get(account=account)
    assert token.refresh_failures == 1 and token.next_attempt_at > timezone.now()
    assert Event.objects.filter(account=account, action="refresh", outcome="failed").exists()


def test_a_deeply_nested_usage_header_is_ignored(fake, login_app):
    account = due(fake, login_app)
    fake.inject(REFRESH, json_fault(
        '{"access_token": "IGAAxxxxxxxxxxxxxxxxxxxx", "expires_in": 5183944}',
        headers=(("X-App-Usage", DEEP),)))
    result = services.token_refresh(account_id=account.pk, actor=ACTOR, now=timezone.now())
    assert result.outcome == Outcome.REFRESHED
    assert Token.objects.get(account=account).value == "IGAAxxxxxxxxxxxxxxxxxxxx"


def test_an_absurd_expires_in_keeps_the_new_token_with_sixty_days_assumed(fake, login_app,
                                                                          token_dir):
    account = due(fake, login_app)
    fake.inject(REFRESH, json_fault(
        '{"access_token": "IGAAnewtokenfromanabsurdanswer01", "expires_in": 1000000000000}'))
    result = services.token_refresh(account_id=account.pk, actor=ACTOR, now=timezone.now())
    assert result.outcome == Outcome.REFRESHED
    token = Token.objects.get(account=account)
    assert token.value == "IGAAnewtokenfromanabsurdanswer01"
    assert abs(token.expires_at - (timezone.now() + 60 * DAY)) < timedelta(minutes=1)
    assert "60 days are assumed" in Event.objects.filter(account=account, action="refresh",
                                                         outcome="ok").get().message
    assert (token_dir / "shop").read_text() == token.value


def test_a_refresh_answer_without_expires_in_never_throws_the_new_token_away(fake, login_app):
    account = due(fake, login_app)
    fake.inject(REFRESH, json_fault('{"access_token": "IGAAreplacementtoken0123456789"}'))
    assert services.token_refresh(account_id=account.pk, actor=ACTOR,
                                  now=timezone.now()).outcome == Outcome.REFRESHED
    assert Token.objects.get(account=account).value == "IGAAreplacementtoken0123456789"


@pytest.mark.parametrize("permissions", [5, {"a": 1}, ["ok", 7], "bad scope!", [[]]])
def test_permissions_of_an_odd_shape_do_not_stop_a_code_exchange(permissions):
    answer = short_lived_from({"access_token": "IGQVshortlivedtokenvalue00000000",
                               "user_id": 17841400000000009, "permissions": permissions})
    assert answer.permissions == () and answer.user_id == "17841400000000009"


@pytest.mark.parametrize("username", ["x" * 65, "shop\x00owner", "shop\nowner", "../etc"])
def test_an_impossible_username_is_refused_and_the_pending_swap_does_not_crash(
        admin_client, login_account, fake, token_dir, username):
    fake.inject("/me", json_fault(json.dumps({"id": "17841400000000001",
                                              "username": username})))
    response = start_flow(admin_client, login_account)
    assert response.status_code == 400
    assert not Token.objects.filter(account=login_account).exists()
    assert PendingToken.objects.filter(account=login_account).exists()
    assert not (token_dir.exists() and any(token_dir.iterdir()))
    # Every later swap run answers, rather than crashing for the token's hour.
    fake.inject("/me", json_fault(json.dumps({"id": "17841400000000001",
                                              "username": username})))
    result = services.pending_swap(account_id=login_account.pk, actor=ACTOR,
                                   now=timezone.now())
    assert result.outcome == Outcome.RETRY
    assert PendingToken.objects.filter(account=login_account).exists()
    assert Event.objects.filter(account=login_account, action="swap", outcome="failed").count() \
        == 2


def test_an_unexpected_error_in_a_refresh_is_recorded_with_a_back_off(fake, login_app,
                                                                      monkeypatch):
    account = due(fake, login_app)

    def broken(self, **kwargs):  # noqa: ANN001, ANN003
        raise TypeError("unsupported operand")

    monkeypatch.setattr(InstagramClient, "refresh", broken)
    result = services.token_refresh(account_id=account.pk, actor=ACTOR, now=timezone.now())
    assert result.outcome == Outcome.RETRY
    token = Token.objects.get(account=account)
    assert token.refresh_failures == 1 and token.next_attempt_at is not None
    event = Event.objects.get(account=account, action="refresh", outcome="failed")
    assert "TypeError" in event.message


# --- 2. answers that used to be stored as they came ------------------------------------------


@pytest.mark.parametrize("token", ["IGAAtoken\nwith-newline-000000", "IGAAtoken\x00with-nul-0000",
                                   "IGAA token with space 000000"])
def test_a_token_with_control_characters_is_never_stored_or_written(fake, login_app, token_dir,
                                                                    token):
    account = due(fake, login_app)
    old = account.token.value
    fake.inject(REFRESH, json_fault(json.dumps({"access_token": token, "expires_in": 5183944})))
    result = services.token_refresh(account_id=account.pk, actor=ACTOR, now=timezone.now())
    assert result.outcome == Outcome.RETRY
    assert Token.objects.get(account=account).value == old
    assert (token_dir / "shop").read_text() == old


def test_file_names_are_matched_whole():
    for name in ["shop\n", "shop\n\n", "sh\nop", "shop\r"]:
        with pytest.raises(ValidationError):
            validate_token_filename(name)
    validate_token_filename("shop.feed_1-2")


def test_ids_are_ascii_digits_only():
    assert valid_id("١٢٣") is None and valid_id("１２３") is None and valid_id("123") == "123"
    with pytest.raises(ValidationError):
        digits_only("١٢٣")


def test_account_lookup_by_non_ascii_digits_is_a_label_lookup(db, login_app):
    account = Account.objects.create(app=login_app, label="١")
    assert selectors.account_find(key="١").pk == account.pk


def test_command_output_escapes_control_characters(db, login_app):
    Account.objects.create(app=login_app, label="evil\x1b[2Jlabel")
    out = io.StringIO()
    call_command("token_status", stdout=out)
    assert "\x1b" not in out.getvalue() and "evil\\x1b[2Jlabel" in out.getvalue()


# --- 3. a server that trickles its answer -----------------------------------------------------


@pytest.fixture
def trickle_server():
    """Answers every request one byte every 0.2 s (a well-formed answer, eventually)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n"
              + b'{"access_token": "IGAAslowslowslowslow", "expires_in": 99999}'[:60])

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                for byte in answer:
                    if stop.is_set():
                        break
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:
                        break
                    time.sleep(0.2)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(5)
    listener.close()


def test_the_deadline_holds_however_slowly_the_server_sends(trickle_server):
    client = InstagramClient(graph_url=trickle_server, connect_timeout=1, read_timeout=1,
                             deadline=1.5)
    started = time.monotonic()
    with pytest.raises(Transient) as caught:
        client.refresh(access_token="IGAAtokentokentokentoken")
    elapsed = time.monotonic() - started
    assert elapsed < 2.5, elapsed  # the answer alone would take ~30 s
    assert "within 1.5 s" in str(caught.value)
    assert not isinstance(caught.value, MalformedAnswer)


# --- 4. times without a zone ----------------------------------------------------------------


def test_import_token_reads_an_expiry_without_offset_as_utc(fake, login_app, tmp_path):
    Account.objects.create(app=login_app, label="Shop")
    token_file = tmp_path / "t.txt"
    token_file.write_text(fake.mint_token(client_id=login_app.app_id, username="shop",
                                          age=10 * DAY))
    when = (timezone.now() + 50 * DAY).replace(microsecond=0, second=0, tzinfo=None)
    call_command("import_token", "--account", "Shop", "--token-file", str(token_file),
                 "--expires-at", when.isoformat(), stdout=io.StringIO())
    stored = Token.objects.get(account__label="Shop").expires_at
    assert stored == when.replace(tzinfo=UTC)


def test_the_admin_import_form_reads_utc_whatever_the_server_zone(admin_client, fake,
                                                                  login_app, settings):
    settings.TIME_ZONE = "America/Los_Angeles"
    account = Account.objects.create(app=login_app, label="Shop")
    token = fake.mint_token(client_id=login_app.app_id, username="shop", age=10 * DAY)
    year = timezone.now().year + 1
    response = admin_client.post(reverse("admin:accounts_account_import", args=[account.pk]),
                                 {"access_token": token, "kind": "long",
                                  "expires_at": f"{year}-01-20 10:00"})
    assert response.status_code == 302
    assert Token.objects.get(account=account).expires_at == datetime(year, 1, 20, 10, 0,
                                                                     tzinfo=UTC)
    event = Event.objects.get(account=account, action="import", outcome="ok")
    assert f"expires {year}-01-20 10:00 UTC" in event.message


def test_status_fault_helper_is_a_plain_error(fake, login_app):
    """A 5xx still reads as temporary, not as a malformed answer."""
    account = due(fake, login_app)
    fake.inject(REFRESH, status(503))
    result = services.token_refresh(account_id=account.pk, actor=ACTOR, now=timezone.now())
    assert result.outcome == Outcome.RETRY and "HTTP 503" in result.message


# --- found by trying it with hostile answers ---------------------------------------------


def test_control_characters_in_a_denial_are_neither_stored_nor_logged(
        admin_client, login_account, fake, token_dir, caplog):
    response = admin_client.post(reverse("admin:accounts_account_authorize",
                                         args=[login_account.pk]))
    state = dict(p.split("=", 1) for p in urlsplit(response["Location"]).query.split("&"))["state"]
    response = admin_client.get(reverse("oauth-callback"), {
        "error": "access_denied", "state": state,
        "error_description": "evil\x00nul\n2026-01-01 CRITICAL forged\x1b[2J"})
    assert response.status_code == 400  # not a server error (PostgreSQL refuses NUL)
    event = Event.objects.get(account=login_account, action="authorize", outcome="denied")
    assert event.message.isprintable() and "forged" in event.message
    assert not any("\x1b" in r.getMessage() or "\n2026" in r.getMessage()
                   for r in caplog.records)


@pytest.mark.parametrize("fault", [status(404), json_fault('{"error": {"code": 100, '
                                                           '"message": "Unsupported"}}')],
                         ids=["404", "code 100"])
def test_a_refusal_of_me_after_the_swap_keeps_the_short_lived_token(
        admin_client, login_account, fake, token_dir, fault):
    fake.inject("/me", fault)
    response = start_flow(admin_client, login_account)
    assert response.status_code == 400 and "is kept" in response.content.decode()
    assert PendingToken.objects.filter(account=login_account).exists()
    assert services.pending_swap(account_id=login_account.pk, actor=ACTOR,
                                 now=timezone.now()).outcome == Outcome.REFRESHED


def test_an_integer_too_long_for_python_is_an_unusable_expiry_not_a_lost_token(fake,
                                                                              login_app):
    account = due(fake, login_app)
    fake.inject(REFRESH, json_fault('{"access_token": "IGAAhugeexpirytoken000000", '
                                    '"expires_in": ' + "9" * 5000 + "}"))
    assert services.token_refresh(account_id=account.pk, actor=ACTOR,
                                  now=timezone.now()).outcome == Outcome.REFRESHED
    assert Token.objects.get(account=account).value == "IGAAhugeexpirytoken000000"


def test_an_error_key_that_says_nothing_does_not_spoil_an_answer(fake, login_app):
    account = due(fake, login_app)
    fake.inject(REFRESH, json_fault('{"access_token": "IGAAwitherrornull0000000", '
                                    '"expires_in": 5183944, "error": null}'))
    assert services.token_refresh(account_id=account.pk, actor=ACTOR,
                                  now=timezone.now()).outcome == Outcome.REFRESHED


def test_no_single_wait_outlasts_the_deadline():
    client = InstagramClient(connect_timeout=10, read_timeout=20, deadline=2)
    assert client.transport.timeout == (2, 2)


def test_import_refuses_a_token_with_control_characters_without_asking_instagram(
        fake, login_app, tmp_path):
    Account.objects.create(app=login_app, label="Shop")
    token_file = tmp_path / "t.txt"
    token_file.write_text("IGAAtoken\x1bwithescape0000000")
    with pytest.raises(CommandError, match="not an access token"):
        call_command("import_token", "--account", "Shop", "--token-file", str(token_file),
                     stdout=io.StringIO())
    assert fake.calls("/me") == []
