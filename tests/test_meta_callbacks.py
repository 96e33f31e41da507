"""Meta's deauthorize and data-deletion callbacks, end to end through Django's test client:
requests signed exactly as Meta signs them, their effect on the database and the token
files, the JSON answers, the public status page, replays, alerts, the admin; and every
forged, expired, malformed or oversized request refused with nothing changed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import Permission
from django.core import serializers
from django.core.handlers.asgi import ASGIRequest
from django.db import transaction
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from accounts import selectors, services
from accounts.instagram import SignedRequestInvalid, signed_request_parse
from accounts.instagram.signed_request import MAX_SIGNED_REQUEST_CHARS
from accounts.models import (
    Account,
    AlertDelivery,
    DataDeletionRequest,
    Event,
    InstagramApp,
    PendingToken,
    Token,
    TokenFile,
)
from accounts.services import Actor
from accounts.timeutil import utc_text
from accounts.views.meta_callbacks import (
    MAX_BODY_BYTES,
    meta_data_deletion,
    meta_deauthorize,
)

SECRET = "meta-app-secret-0a1b2c3d4e5f"
OTHER_SECRET = "other-app-secret-9z8y7x6w5v"
USERNAME = "shop_owner"
IG_ID = "17841405793187218"  # /me id: above 2**53
IG_USER_ID = "17841400000000042"  # /me user_id
EXCHANGE_ID = "26010000000000777"  # the code exchange's user_id
TOKEN = "IGAAsecret-long-lived-token-value-1234"
PERSONAL = (USERNAME, IG_ID, IG_USER_ID, EXCHANGE_ID)
SITE_URL = "https://registry.test.example"  # settings_test.py


# --- signing as Meta does -----------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def meta_sign(payload: object, secret: str = SECRET) -> str:
    """Meta's recipe (Deauthorize Callback / Data Deletion Request Callback docs): the JSON
    payload base64url without padding, its HMAC-SHA256 under the app secret likewise."""
    encoded = b64url(json.dumps(payload).encode("utf-8"))
    sig = hmac.new(secret.encode(), encoded.encode(), hashlib.sha256).digest()
    return f"{b64url(sig)}.{encoded}"


def sign_raw(encoded_payload: str, secret: str = SECRET) -> str:
    sig = hmac.new(secret.encode(), encoded_payload.encode(), hashlib.sha256).digest()
    return f"{b64url(sig)}.{encoded_payload}"


def payload(user_id: object = IG_USER_ID, **fields: object) -> dict:
    now = int(time.time())
    return {"algorithm": "HMAC-SHA256", "issued_at": now, "expires": now + 3600,
            "user_id": user_id} | fields


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def app(db) -> InstagramApp:
    return InstagramApp.objects.create(name="Shop app", flavour="instagram_login",
                                       app_id="1000000000000001", app_secret=SECRET,
                                       redirect_uri="https://registry.test.example/oauth/callback/")


@pytest.fixture
def other_app(db) -> InstagramApp:
    return InstagramApp.objects.create(name="Other app", flavour="instagram_login",
                                       app_id="1000000000000003", app_secret=OTHER_SECRET,
                                       redirect_uri="https://registry.test.example/oauth/callback/")


def make_shop(app: InstagramApp, *, label: str = "Shop feed", username: str = USERNAME,
              ids: tuple[str, str, str] = (IG_ID, IG_USER_ID, EXCHANGE_ID),
              export_format: str = "text", obtained: timedelta = timedelta(days=5)) -> Account:
    """An authorized account with its token file written and a history naming it."""
    now = timezone.now()
    account = Account.objects.create(app=app, label=label, export_format=export_format)
    Account.objects.filter(pk=account.pk).update(
        status=Account.Status.ACTIVE, username=username, ig_id=ids[0], ig_user_id=ids[1],
        ig_exchange_user_id=ids[2])
    Token.objects.create(account=account, value=TOKEN + str(account.pk), kind="long",
                         obtained_at=now - obtained,
                         expires_at=now - obtained + timedelta(days=60))
    account = Account.objects.get(pk=account.pk)
    services.token_export(account=account, actor=Actor(job="test"), now=now)
    services.event_record(  # when the token was granted, as token_store records it
        account=account, action="authorize", outcome=Event.Outcome.OK,
        message=f"Authorized as @{username} (Instagram id {ids[0]}, user_id {ids[1]}, "
                f"exchange user_id {ids[2]}); @{username.upper()} in capitals.",
        actor=Actor(job="test"), now=now - obtained)
    return Account.objects.select_related("token").get(pk=account.pk)


@pytest.fixture
def shop(app) -> Account:
    return make_shop(app)


def deauthorize_url(app: InstagramApp) -> str:
    return reverse("meta-deauthorize", args=[app.pk])


def deletion_url(app: InstagramApp) -> str:
    return reverse("meta-data-deletion", args=[app.pk])


def post(client, url: str, signed_request: str | None):  # noqa: ANN001, ANN201
    data = {} if signed_request is None else {"signed_request": signed_request}
    return client.post(url, data)


def files(token_dir: Path) -> dict[str, bytes]:
    if not token_dir.exists():
        return {}
    return {p.name: p.read_bytes() for p in sorted(token_dir.iterdir())}


def snapshot(token_dir: Path) -> tuple[str, dict[str, bytes]]:
    """Every row the callbacks could touch, serialized, and every file on disk."""
    models = [InstagramApp, Account, Token, PendingToken, TokenFile, Event, AlertDelivery,
              DataDeletionRequest]
    rows = "".join(serializers.serialize("json", m.objects.order_by("pk")) for m in models)
    return rows, files(token_dir)


def assert_no_personal_data(text: str) -> None:
    for value in PERSONAL:
        assert value.lower() not in text.lower(), value


# --- deauthorize --------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["ig_id", "ig_user_id", "ig_exchange_user_id"])
def test_deauthorize_by_any_id_kills_the_token_and_keeps_the_file(client, app, token_dir,
                                                                  settings, which):
    settings.TOKEN_FILE_DEAD_TOKEN = "keep"
    shop = make_shop(app)
    before = files(token_dir)
    assert before == {USERNAME: (TOKEN + str(shop.pk)).encode()}

    response = post(client, deauthorize_url(app), meta_sign(payload(getattr(shop, which))))

    assert response.status_code == 200 and response.json() == {"status": "ok"}
    shop.refresh_from_db()
    assert shop.status == Account.Status.DEAUTHORIZED
    assert "removed this app" in shop.last_error and "Only the owner" in shop.last_error
    assert not Token.objects.filter(account=shop).exists()
    # Nothing is erased by a deauthorization: only the token is gone.
    assert (shop.username, shop.ig_id, shop.ig_user_id) == (USERNAME, IG_ID, IG_USER_ID)
    assert files(token_dir) == before  # TOKEN_FILE_DEAD_TOKEN=keep: the last, dead token
    event = Event.objects.filter(account=shop).first()
    assert (event.action, event.outcome, event.actor_job) == ("deauthorize", "ok",
                                                              "meta deauthorize")
    assert_no_personal_data(event.message)
    assert TOKEN not in event.message
    state = selectors.accounts_with_state(now=timezone.now()).get(pk=shop.pk).state
    assert state == selectors.State.DEAUTHORIZED


@pytest.mark.parametrize("export_format", ["text", "json"])
def test_deauthorize_empties_the_file_when_dead_tokens_are_emptied(client, app, token_dir,
                                                                  settings, export_format):
    settings.TOKEN_FILE_DEAD_TOKEN = "empty"
    shop = make_shop(app, export_format=export_format)
    assert TOKEN.encode() in files(token_dir)[USERNAME]

    response = post(client, deauthorize_url(app), meta_sign(payload(IG_ID)))

    assert response.status_code == 200
    content = files(token_dir)[USERNAME]
    assert TOKEN.encode() not in content
    if export_format == "text":
        assert content == b""
    else:
        document = json.loads(content)
        assert document["access_token"] is None and document["expires_at"] is None
        assert document["status"] == "deauthorized"
    assert Event.objects.filter(account=shop, action="export",
                                message__startswith="Emptied").exists()
    # The reconcile run leaves the emptied file alone (no token: nothing to write).
    services.token_files_reconcile(actor=Actor(job="test"), now=timezone.now())
    assert TOKEN.encode() not in files(token_dir)[USERNAME]


def test_deauthorize_deletes_a_pending_token_too(client, app, token_dir):
    shop = make_shop(app)
    now = timezone.now()
    PendingToken.objects.create(account=shop, value="IGQVshort-lived", created_at=now
                                - timedelta(minutes=5), expires_at=now + timedelta(minutes=55))
    response = post(client, deauthorize_url(app), meta_sign(payload(IG_USER_ID)))
    assert response.status_code == 200
    assert not PendingToken.objects.filter(account=shop).exists()


def test_a_replayed_deauthorize_changes_and_records_nothing(client, shop, app, token_dir):
    signed = meta_sign(payload(IG_USER_ID))
    assert post(client, deauthorize_url(app), signed).status_code == 200
    before = snapshot(token_dir)
    again = post(client, deauthorize_url(app), signed)
    other_delivery = post(client, deauthorize_url(app), meta_sign(payload(IG_ID)))
    assert again.status_code == other_delivery.status_code == 200
    assert snapshot(token_dir) == before


def test_deauthorize_of_an_unknown_user_changes_nothing(client, shop, app, token_dir):
    before = snapshot(token_dir)
    response = post(client, deauthorize_url(app), meta_sign(payload("99999999999")))
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert snapshot(token_dir) == before


def test_deauthorize_concerns_only_the_app_it_is_signed_for(client, app, other_app, token_dir):
    mine = make_shop(app)
    theirs = make_shop(other_app, label="Same person, other app", username="shop_owner_2",
                       ids=(IG_ID + "1", IG_USER_ID, ""))
    assert post(client, deauthorize_url(other_app),
                meta_sign(payload(IG_USER_ID), OTHER_SECRET)).status_code == 200
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.status == Account.Status.ACTIVE and Token.objects.filter(account=mine).exists()
    assert theirs.status == Account.Status.DEAUTHORIZED


def test_a_deauthorize_older_than_a_new_authorization_changes_nothing(client, app, token_dir):
    make_shop(app, obtained=timedelta(minutes=1))  # authorized again a minute ago
    before = snapshot(token_dir)
    old = payload(IG_USER_ID, issued_at=int(time.time()) - 600)
    assert post(client, deauthorize_url(app), meta_sign(old)).status_code == 200
    assert snapshot(token_dir) == before


def test_a_deauthorize_issued_before_a_routine_refresh_still_applies(client, app,
                                                                      token_dir):
    # A refresh stores a new token value with obtained_at = now (services/refresh.py), but
    # the owner granted nothing: their removal of the app, issued before it, still counts.
    shop = make_shop(app, obtained=timedelta(days=5))
    now = timezone.now()
    Token.objects.filter(account=shop).update(obtained_at=now, last_refreshed_at=now,
                                              expires_at=now + timedelta(days=60))
    services.event_record(account=shop, action="refresh", outcome=Event.Outcome.OK,
                          message="Refreshed.", actor=Actor(job="test"), now=now)
    old = payload(IG_USER_ID, issued_at=int(time.time()) - 600)

    assert post(client, deauthorize_url(app), meta_sign(old)).status_code == 200

    shop.refresh_from_db()
    assert shop.status == Account.Status.DEAUTHORIZED
    assert not Token.objects.filter(account=shop).exists()


@pytest.mark.parametrize("action", ["authorize", "import"])
def test_a_deauthorize_older_than_a_new_grant_is_ignored_even_with_an_old_token(
        client, app, token_dir, action):
    # The token's obtained_at is not what counts: an import estimates it from the expiry.
    shop = make_shop(app, obtained=timedelta(days=5))
    services.event_record(account=shop, action=action, outcome=Event.Outcome.OK,
                          message="Granted again.", actor=Actor(job="test"),
                          now=timezone.now() - timedelta(minutes=1))
    # A failed attempt since is no new consent, and does not hide the grant either.
    services.event_record(account=shop, action=action, outcome=Event.Outcome.FAILED,
                          message="Refused.", actor=Actor(job="test"), now=timezone.now())
    before = snapshot(token_dir)
    old = payload(IG_USER_ID, issued_at=int(time.time()) - 600)
    assert post(client, deauthorize_url(app), meta_sign(old)).status_code == 200
    assert snapshot(token_dir) == before


def test_a_failed_authorization_since_does_not_make_a_deauthorize_stale(client, app,
                                                                        token_dir):
    shop = make_shop(app, obtained=timedelta(days=5))
    services.event_record(account=shop, action="authorize", outcome=Event.Outcome.FAILED,
                          message="Refused.", actor=Actor(job="test"), now=timezone.now())
    old = payload(IG_USER_ID, issued_at=int(time.time()) - 600)
    assert post(client, deauthorize_url(app), meta_sign(old)).status_code == 200
    shop.refresh_from_db()
    assert shop.status == Account.Status.DEAUTHORIZED


def test_a_deauthorized_account_is_announced_with_its_own_words(client, shop, app, settings,
                                                                mailoutbox):
    settings.ALERT_EMAILS = ["ops@example.com"]
    settings.ALERT_WEBHOOK_URL = ""
    services.alerts_dispatch(now=timezone.now())  # healthy: nothing to say
    assert mailoutbox == []
    post(client, deauthorize_url(app), meta_sign(payload(IG_USER_ID)))

    report = services.alerts_dispatch(now=timezone.now())

    assert [(item.account_id, item.kind, item.state) for item in report.items] == [
        (shop.pk, "alert", "deauthorized")]
    body = mailoutbox[0].body
    assert "State: Deauthorized by its owner" in body
    assert "removed this app from their Instagram account" in body
    # Announced once: the next run says nothing new.
    assert services.alerts_dispatch(now=timezone.now()).items == []


def test_the_dashboard_shows_a_deauthorized_account(admin_client, client, shop, app):
    post(client, deauthorize_url(app), meta_sign(payload(IG_USER_ID)))
    response = admin_client.get(reverse("admin:accounts_account_dashboard"),
                                {"state": "deauthorized"})
    [row] = response.context["dash"].rows
    assert row.account.pk == shop.pk and row.state_label == "Deauthorized by its owner"
    assert row.action_needed == "Only the owner can authorize again"
    assert row.file_label == "holds the last, dead token"


# --- data deletion ---------------------------------------------------------------------------


def test_data_deletion_erases_the_account_and_answers_meta(client, app, token_dir, settings):
    settings.ALERT_EMAILS = ["ops@example.com"]
    shop = make_shop(app)
    # An alert that names the user, and an orphaned file of an earlier name.
    Account.objects.filter(pk=shop.pk).update(status=Account.Status.NEEDS_REAUTH)
    services.alerts_dispatch(now=timezone.now())
    assert AlertDelivery.objects.filter(body__contains=USERNAME).exists()
    Account.objects.filter(pk=shop.pk).update(status=Account.Status.ACTIVE,
                                              token_filename="shop-feed")
    services.token_export(account=Account.objects.get(pk=shop.pk), actor=Actor(job="test"),
                          now=timezone.now())
    assert set(files(token_dir)) == {USERNAME, "shop-feed"}
    PendingToken.objects.create(account=shop, value="IGQVshort", created_at=timezone.now()
                                - timedelta(hours=1), expires_at=timezone.now())

    response = post(client, deletion_url(app), meta_sign(payload(IG_ID)))

    assert response.status_code == 200
    answer = response.json()
    assert set(answer) == {"url", "confirmation_code"}
    code = answer["confirmation_code"]
    assert re.fullmatch(r"[A-Za-z0-9]{20}", code)
    assert answer["url"] == f"{SITE_URL}/meta/data-deletion/{code}/"
    shop.refresh_from_db()
    assert (shop.username, shop.ig_id, shop.ig_user_id, shop.ig_exchange_user_id) == (
        "", "", "", "")
    assert shop.status == Account.Status.DEAUTHORIZED and shop.label == "Shop feed"
    assert "delete their data" in shop.last_error
    assert not Token.objects.filter(account=shop).exists()
    assert not PendingToken.objects.filter(account=shop).exists()
    assert not TokenFile.objects.filter(account=shop).exists()
    assert files(token_dir) == {}  # both files held a token of theirs
    events = list(Event.objects.filter(account=shop))
    assert len(events) >= 4
    for event in events:
        assert_no_personal_data(event.message + event.account_label)
    assert "[deleted]" in Event.objects.get(account=shop, action="authorize").message
    erased = Event.objects.get(account=shop, action="data_deletion")
    # The code is in the record only: events also go to the application log.
    assert erased.actor_job == "meta data deletion" and code not in erased.message
    for delivery in AlertDelivery.objects.all():
        assert_no_personal_data(delivery.body)
    record = DataDeletionRequest.objects.get()
    assert (record.confirmation_code, record.status, record.accounts_erased, record.app) == (
        code, "completed", 1, app)
    assert record.completed_at is not None
    assert_no_personal_data(serializers.serialize("json", [record]))

    page = client.get(reverse("meta-data-deletion-status", args=[code]))
    assert page.status_code == 200
    text = page.content.decode()
    assert code in text and "Completed: the account&#x27;s Instagram data was deleted" in text
    assert record.received_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M") in text
    assert_no_personal_data(text)
    assert "Shop feed" not in text


def _mail_item(body: str, label: str) -> list[str]:
    """The lines of one account's item in an alert mail: from "* <label> — " to "Admin:"."""
    lines = body.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(f"* {label} — "))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("  Admin: "))
    return lines[start:end + 1]


@pytest.mark.parametrize("username", ["null", "https", "expired", "needs_reauth",
                                      str(datetime.now(UTC).year)])
def test_data_deletion_scrubs_only_its_own_account_in_stored_alerts(client, app, token_dir,
                                                                    settings, username):
    # A run's alert names many accounts; the erased username is also a word of JSON, of a
    # URL, of a state or of a date there. Only the erased account's items change.
    settings.ALERT_EMAILS = ["ops@example.com"]
    settings.ALERT_WEBHOOK_URL = "http://127.0.0.1:9/alerts"  # refused: the body stays queued
    settings.ALERT_WEBHOOK_SECRET = "alert-webhook-secret"
    settings.REFRESH_SWEEP_MINUTES = 10**7  # no refresh-workers item
    other = make_shop(app, label="Other shop")
    erased_ids = ("17841405793180001", "17841400000000002", "")
    erased = make_shop(app, label="Second shop", username=username, ids=erased_ids)
    Account.objects.filter(pk=other.pk).update(
        status=Account.Status.NEEDS_REAUTH,
        last_error=f"Token expired (null answer) on {datetime.now(UTC).year}-01-02; "
                   f"see https://help.instagram.com; needs_reauth")
    Account.objects.filter(pk=erased.pk).update(
        status=Account.Status.NEEDS_REAUTH,
        last_error=f"Instagram refused the token of @{username} (user {erased_ids[1]}).")
    now = timezone.now()
    services.alerts_dispatch(now=now)
    with transaction.atomic():
        services.alert_notice_queue(
            account=Account.objects.get(pk=erased.pk), now=now,
            message=f"the owner authorized @{username} through an owner link")
    hook = AlertDelivery.objects.filter(channel="webhook").order_by("pk")
    mail = AlertDelivery.objects.filter(channel="email").order_by("pk")
    [run_hook, notice_hook], [run_mail, notice_mail] = hook, mail
    document = json.loads(run_hook.body)
    assert [item["account_id"] for item in document["items"]] == [other.pk, erased.pk]
    other_item = document["items"][0]
    other_mail = _mail_item(run_mail.body, "Other shop")
    assert f"@{username}" in notice_mail.subject

    response = post(client, deletion_url(app), meta_sign(payload(erased_ids[0])))

    assert response.status_code == 200
    run_hook.refresh_from_db()
    after = json.loads(run_hook.body)  # still JSON
    assert after["sent_at"] == document["sent_at"]
    assert after["items"][0] == other_item  # the other account's item, unchanged
    mine = after["items"][1]
    assert mine["username"] == "[deleted]" and mine["label"] == "Second shop"
    assert mine["state"] == "needs_reauth" and mine["admin_url"] == document["items"][1][
        "admin_url"]
    assert mine["last_error"] == "Instagram refused the token of @[deleted] (user [deleted])."
    # Written as alerts._queue writes it: the same bytes apart from the erased item's.
    assert run_hook.body == json.dumps(after, separators=(",", ":"))

    run_mail.refresh_from_db()
    assert run_mail.body.split("\n")[0] == f"Account states at {utc_text(now)}."
    assert _mail_item(run_mail.body, "Other shop") == other_mail
    mine_mail = _mail_item(run_mail.body, "Second shop")
    assert mine_mail[0].endswith(", @[deleted]")
    assert "  State: Needs re-authorization" in mine_mail
    assert ("  Last error: Instagram refused the token of @[deleted] (user [deleted])."
            in mine_mail)

    for delivery in (notice_hook, notice_mail):
        delivery.refresh_from_db()
        assert delivery.subject.endswith(
            "Second shop: the owner authorized @[deleted] through an owner link")
        assert f"@{username}" not in delivery.body and erased_ids[1] not in delivery.body
    assert json.loads(notice_hook.body)["items"][0]["username"] == "[deleted]"


def test_a_replayed_data_deletion_returns_the_first_answer_and_changes_nothing(
        client, shop, app, token_dir):
    signed = meta_sign(payload(IG_USER_ID))
    first = post(client, deletion_url(app), signed).json()
    before = snapshot(token_dir)
    # The same request again, also with its signature padded (the padding is not signed).
    sig, body = signed.split(".")
    for again in (signed, f"{sig}{'=' * (-len(sig) % 4)}.{body}"):
        response = post(client, deletion_url(app), again)
        assert response.status_code == 200 and response.json() == first
    assert snapshot(token_dir) == before
    assert DataDeletionRequest.objects.count() == 1


def test_data_deletion_of_an_unknown_user_says_no_data(client, shop, app, token_dir):
    before_files = files(token_dir)
    answer = post(client, deletion_url(app), meta_sign(payload(12345))).json()
    record = DataDeletionRequest.objects.get(confirmation_code=answer["confirmation_code"])
    assert (record.status, record.accounts_erased) == ("no_data", 0)
    shop.refresh_from_db()
    assert shop.status == Account.Status.ACTIVE and shop.username == USERNAME
    assert files(token_dir) == before_files
    page = client.get(answer["url"].removeprefix(SITE_URL))
    assert "the registry held no data of this account" in page.content.decode()
    event = Event.objects.get(action="data_deletion")
    assert event.account is None and "12345" not in event.message


def test_a_deletion_that_cannot_remove_the_file_changes_nothing(client, shop, app, token_dir,
                                                               monkeypatch):
    before = snapshot(token_dir)

    def refuse(self, missing_ok=False):  # noqa: ANN001, ANN202
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "unlink", refuse)
    response = post(client, deletion_url(app), meta_sign(payload(IG_USER_ID)))
    monkeypatch.undo()
    assert response.status_code == 503
    assert "the deletion was not completed" in response.json()["error"]
    assert snapshot(token_dir) == before


@pytest.mark.parametrize("code", ["UNKNOWN123", "bad-code", "x" * 40, "%00"])
def test_the_status_page_of_an_unknown_code_is_a_404(client, db, code):
    assert client.get(f"/meta/data-deletion/{code}/").status_code == 404


# --- refused: forged, expired, malformed, oversized -------------------------------------------


def _forged_and_broken() -> dict[str, object]:
    """Each way a signed_request can be wrong (user_id is the shop's: were it accepted,
    something would change). Built lazily: the times are those of the test run."""
    good = meta_sign(payload(IG_USER_ID))
    sig, body = good.split(".")
    # One bit of the user id's last digit: still valid JSON, still digits; only the
    # signature tells.
    flipped = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    flipped[flipped.index(IG_USER_ID.encode()) + len(IG_USER_ID) - 1] ^= 0x01
    now = int(time.time())
    return {
        "wrong secret": meta_sign(payload(IG_USER_ID), "not-the-secret"),
        "other app's secret": meta_sign(payload(IG_USER_ID), OTHER_SECRET),
        "flipped payload byte": f"{sig}.{b64url(bytes(flipped))}",
        "flipped signature char": ("A" if sig[0] != "A" else "B") + sig[1:] + "." + body,
        "signature of 31 bytes": f"{b64url(base64.urlsafe_b64decode(sig + '=')[:31])}.{body}",
        "unsigned": f".{body}",
        "expires past": meta_sign(payload(IG_USER_ID, expires=now - 3600)),
        "issued long ago": meta_sign(payload(IG_USER_ID, issued_at=now - 3 * 86400)),
        "issued in the future": meta_sign(payload(IG_USER_ID, issued_at=now + 3600)),
        "no dot": sig + body,
        "three parts": f"{good}.{sig}",
        "bad base64": f"{sig}.{body[:-2]}*!",
        "base64 with padding in the middle": f"{sig[:4]}=={sig[4:]}.{body}",
        "standard base64 alphabet": good.replace("-", "+").replace("_", "/")
        if ("-" in good or "_" in good) else f"{sig}+/.{body}",
        "non-JSON": sign_raw(b64url(b"not json")),
        "JSON array": meta_sign([payload(IG_USER_ID)]),
        "JSON string": meta_sign("HMAC-SHA256"),
        "not UTF-8": sign_raw(b64url(b"\xff\xfe{}")),
        "duplicate user_id": sign_raw(b64url(
            f'{{"algorithm":"HMAC-SHA256","issued_at":{now},"user_id":"1",'
            f'"user_id":"{IG_USER_ID}"}}'.encode())),
        "deeply nested": meta_sign(payload(IG_USER_ID, extra=[[[[[["x"]]]]]])),
        "NaN": sign_raw(b64url(
            f'{{"algorithm":"HMAC-SHA256","issued_at":{now},"user_id":"{IG_USER_ID}",'
            f'"x":NaN}}'.encode())),
        "wrong algorithm": meta_sign(payload(IG_USER_ID, algorithm="HMAC-SHA1")),
        "no algorithm": meta_sign({k: v for k, v in payload(IG_USER_ID).items()
                                   if k != "algorithm"}),
        "non-ASCII algorithm": meta_sign(payload(IG_USER_ID, algorithm="HMAC-ſHA256")),
        "issued_at missing": meta_sign({k: v for k, v in payload(IG_USER_ID).items()
                                        if k != "issued_at"}),
        "issued_at a string": meta_sign(payload(IG_USER_ID, issued_at=str(now))),
        "issued_at a float": meta_sign(payload(IG_USER_ID, issued_at=now + 0.5)),
        "issued_at true": meta_sign(payload(IG_USER_ID, issued_at=True)),
        "expires a string": meta_sign(payload(IG_USER_ID, expires="soon")),
        "user_id missing": meta_sign({k: v for k, v in payload().items() if k != "user_id"}),
        "user_id not digits": meta_sign(payload(IG_USER_ID + "a")),
        "user_id empty": meta_sign(payload("")),
        "user_id other digits": meta_sign(payload("١٢٣")),
        "user_id negative": meta_sign(payload(-5)),
        "user_id a float": meta_sign(payload(1.0)),
        "user_id too long": meta_sign(payload("1" * 33)),
        "user_id with a newline": meta_sign(payload(IG_USER_ID + "\n")),
        "huge": meta_sign(payload(IG_USER_ID, pad="x" * MAX_SIGNED_REQUEST_CHARS)),
        "empty": "",
        "missing": None,
    }


BROKEN_NAMES = list(_forged_and_broken())


@pytest.mark.parametrize("which", ["deauthorize", "data-deletion"])
@pytest.mark.parametrize("name", BROKEN_NAMES)
def test_every_bad_request_is_refused_with_a_reason_and_nothing_changed(client, shop, app,
                                                                        other_app, token_dir,
                                                                        which, name):
    signed = _forged_and_broken()[name]
    before = snapshot(token_dir)
    response = post(client, reverse(f"meta-{which}", args=[app.pk]), signed)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error and SECRET not in error and IG_USER_ID not in error
    assert snapshot(token_dir) == before


def test_a_good_request_passes_where_the_bad_ones_do_not(client, shop, app, token_dir):
    # The control for the test above: the same shop, a genuine request, a change.
    assert post(client, deauthorize_url(app), meta_sign(payload(IG_USER_ID))).status_code == 200
    shop.refresh_from_db()
    assert shop.status == Account.Status.DEAUTHORIZED


@pytest.mark.parametrize("which", ["deauthorize", "data-deletion"])
def test_an_oversized_or_repeated_form_is_refused(client, shop, app, token_dir, which):
    url = reverse(f"meta-{which}", args=[app.pk])
    before = snapshot(token_dir)
    good = meta_sign(payload(IG_USER_ID))
    big = client.post(url, {"signed_request": good, "padding": "x" * 20_000})
    assert big.status_code == 400 and "too large" in big.json()["error"]
    twice = client.post(url, {"signed_request": [good, good]})
    assert twice.status_code == 400 and "more than once" in twice.json()["error"]
    as_json = client.post(url, json.dumps({"signed_request": good}),
                          content_type="application/json")
    assert as_json.status_code == 400 and "missing" in as_json.json()["error"]
    assert snapshot(token_dir) == before


def chunked_post(url: str, body: bytes, content_type: str) -> ASGIRequest:
    """A POST as Django gets it under ASGI with `Transfer-Encoding: chunked`: no
    Content-Length, the body spooled by the handler (django.core.handlers.asgi)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": "POST", "scheme": "https", "path": url, "raw_path": url.encode(),
        "query_string": b"", "root_path": "", "client": ("203.0.113.9", 40000),
        "server": ("registry.test.example", 443),
        "headers": [(b"host", b"registry.test.example"),
                    (b"content-type", content_type.encode()),
                    (b"transfer-encoding", b"chunked")],
    }
    request = ASGIRequest(scope, BytesIO(body))  # the handler's file is seekable too
    assert "CONTENT_LENGTH" not in request.META
    return request


def form_body(fields: dict, content_type: str) -> tuple[bytes, str]:
    if content_type == "multipart":
        return (encode_multipart(BOUNDARY, fields), MULTIPART_CONTENT)
    return urlencode(fields).encode(), "application/x-www-form-urlencoded"


CALLBACK_VIEWS = {"deauthorize": meta_deauthorize, "data-deletion": meta_data_deletion}


@pytest.mark.parametrize("content_type", ["urlencoded", "multipart"])
@pytest.mark.parametrize("which", ["deauthorize", "data-deletion"])
def test_a_body_without_content_length_is_bounded_too(shop, app, token_dir, which,
                                                     content_type):
    # Without a Content-Length only the body itself tells its size: the bound must hold
    # there too, not Django's 2.5 MB (DATA_UPLOAD_MAX_MEMORY_SIZE).
    url = reverse(f"meta-{which}", args=[app.pk])
    view = CALLBACK_VIEWS[which]
    before = snapshot(token_dir)
    good = meta_sign(payload(IG_USER_ID))
    body, kind = form_body({"signed_request": good, "padding": "x" * 20_000}, content_type)
    big = view(chunked_post(url, body, kind), app_pk=app.pk)
    assert big.status_code == 400 and "too large" in json.loads(big.content)["error"]
    assert snapshot(token_dir) == before
    # Just within the bound, the same framing passes.
    body, kind = form_body({"signed_request": good}, content_type)
    assert len(body) <= MAX_BODY_BYTES
    applied = view(chunked_post(url, body, kind), app_pk=app.pk)
    assert applied.status_code == 200
    shop.refresh_from_db()
    assert shop.status == Account.Status.DEAUTHORIZED


def test_the_body_is_read_no_further_than_the_bound(app):
    # A body far larger than the bound (here 3 MB, past DATA_UPLOAD_MAX_MEMORY_SIZE) is
    # refused after reading one byte past it.
    body, kind = form_body({"signed_request": "x" * 3_000_000}, "urlencoded")
    request = chunked_post(deauthorize_url(app), body, kind)
    reads: list[int] = []
    original = request.read

    def counting_read(size: int = -1) -> bytes:
        data = original(size)
        reads.append(len(data))
        return data

    request.read = counting_read
    response = meta_deauthorize(request, app_pk=app.pk)
    assert response.status_code == 400 and "too large" in json.loads(response.content)["error"]
    assert sum(reads) == MAX_BODY_BYTES + 1


@pytest.mark.parametrize("which", ["deauthorize", "data-deletion"])
def test_post_only_and_unknown_apps_are_404(client, shop, app, which):
    url = reverse(f"meta-{which}", args=[app.pk])
    assert client.get(url).status_code == 405
    missing = client.post(reverse(f"meta-{which}", args=[app.pk + 1000]),
                          {"signed_request": meta_sign(payload(IG_USER_ID))})
    assert missing.status_code == 404 and missing.json() == {"error": "unknown app."}


def test_no_csrf_token_is_needed(shop, app):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    response = strict.post(deauthorize_url(app), {"signed_request": meta_sign(payload())})
    assert response.status_code == 200


# --- the parser on its own ---------------------------------------------------------------------


NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def test_the_parser_accepts_meta_variants():
    at = int(NOW.timestamp())
    for user_id, expected in (("218471", "218471"), (17841405793187218, "17841405793187218")):
        parsed = signed_request_parse(
            meta_sign({"algorithm": "hmac-sha256", "issued_at": at, "user_id": user_id}),
            app_secret=SECRET, now=NOW)
        assert (parsed.user_id, parsed.issued_at, parsed.expires) == (expected, at, None)
    # Padding on both parts is tolerated, and the padded payload is what was signed.
    encoded = base64.urlsafe_b64encode(json.dumps(
        {"algorithm": "HMAC-SHA256", "issued_at": at, "user_id": "7"}).encode()).decode()
    assert encoded.endswith("=") or len(encoded) % 4 == 0
    assert signed_request_parse(sign_raw(encoded), app_secret=SECRET, now=NOW).user_id == "7"


def test_the_parser_refuses_a_request_over_its_own_size_limit():
    # The views' body limit refuses first over HTTP; this is the parser's own bound.
    with pytest.raises(SignedRequestInvalid, match="too large"):
        signed_request_parse("A" * (MAX_SIGNED_REQUEST_CHARS + 1), app_secret=SECRET, now=NOW)
    with pytest.raises(SignedRequestInvalid) as at_the_limit:
        signed_request_parse("A" * MAX_SIGNED_REQUEST_CHARS, app_secret=SECRET, now=NOW)
    assert "too large" not in at_the_limit.value.reason


def test_the_parser_bounds_time_with_a_small_skew():
    at = int(NOW.timestamp())
    ok = {"algorithm": "HMAC-SHA256", "user_id": "1"}
    assert signed_request_parse(meta_sign(ok | {"issued_at": at + 200}), app_secret=SECRET,
                                now=NOW)
    for issued_at in (at + 400, at - 25 * 3600):
        with pytest.raises(SignedRequestInvalid):
            signed_request_parse(meta_sign(ok | {"issued_at": issued_at}), app_secret=SECRET,
                                 now=NOW)


@settings(max_examples=300, deadline=500, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=300) | st.text(
    st.sampled_from("ABCabc019-_=.+/ \n\x00"), max_size=120))
@example(text="." * 2)
@example(text="A" * 43 + "." + "e30")
def test_the_parser_refuses_any_text_with_its_own_error_only(text: str) -> None:
    with pytest.raises(SignedRequestInvalid) as refused:
        signed_request_parse(text, app_secret=SECRET, now=NOW)
    assert refused.value.reason and len(refused.value.reason) < 120


@settings(max_examples=200, deadline=500)
@given(user_id=st.integers(0, 10**30) | st.from_regex(r"[0-9]{1,32}", fullmatch=True),
       extra=st.dictionaries(st.text(max_size=10).filter(
           lambda k: k not in {"algorithm", "issued_at", "expires", "user_id"}),
           st.none() | st.booleans() | st.integers() | st.text(max_size=20), max_size=4),
       age=st.integers(0, 86_000), padded=st.booleans())
def test_a_signed_payload_round_trips(user_id, extra, age: int, padded: bool) -> None:
    at = int(NOW.timestamp()) - age
    signed = meta_sign({"algorithm": "HMAC-SHA256", "issued_at": at, "user_id": user_id}
                       | extra)
    if padded:
        sig, body = signed.split(".")
        signed = f"{sig}{'=' * (-len(sig) % 4)}.{body}"
    parsed = signed_request_parse(signed, app_secret=SECRET, now=NOW)
    assert parsed.user_id == str(user_id) and parsed.issued_at == at
    # Any other secret refuses it.
    with pytest.raises(SignedRequestInvalid):
        signed_request_parse(signed, app_secret=SECRET + "x", now=NOW)


# --- admin ---------------------------------------------------------------------------------------


def test_the_app_page_shows_both_callback_urls_to_admins_and_viewers(admin_client, client, app,
                                                                    django_user_model):
    expected = [f"{SITE_URL}/meta/apps/{app.pk}/deauthorize/",
                f"{SITE_URL}/meta/apps/{app.pk}/data-deletion/"]
    viewer = django_user_model.objects.create_user("viewer", password="pw-12345-abcdef",
                                                   is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_instagramapp"))
    client.force_login(viewer)
    page_url = reverse("admin:accounts_instagramapp_change", args=[app.pk])
    for who in (admin_client, client):
        page = who.get(page_url)
        assert page.status_code == 200
        text = page.content.decode()
        for url in expected:
            assert f'value="{url}"' in text
        assert SECRET not in text
    # Each URL is the one the callbacks answer at.
    for url in expected:
        assert client.post(url.removeprefix(SITE_URL)).status_code == 400
    assert admin_client.get(reverse("admin:accounts_instagramapp_add")).status_code == 200


def test_data_deletion_requests_are_listed_read_only(admin_client, client, shop, app):
    code = post(client, deletion_url(app), meta_sign(payload(IG_USER_ID))).json()[
        "confirmation_code"]
    record = DataDeletionRequest.objects.get()
    listing = admin_client.get(reverse("admin:accounts_datadeletionrequest_changelist"))
    assert listing.status_code == 200 and code in listing.content.decode()
    change = admin_client.get(reverse("admin:accounts_datadeletionrequest_change",
                                      args=[record.pk]))
    assert change.status_code == 200 and code in change.content.decode()
    assert admin_client.get(reverse("admin:accounts_datadeletionrequest_add")).status_code == 403
    deleted = admin_client.post(reverse("admin:accounts_datadeletionrequest_delete",
                                        args=[record.pk]), {"post": "yes"})
    assert deleted.status_code == 403
    edited = admin_client.post(reverse("admin:accounts_datadeletionrequest_change",
                                       args=[record.pk]), {"status": "no_data"})
    assert edited.status_code == 403
    record.refresh_from_db()
    assert record.status == "completed"


# --- concurrency (PostgreSQL: each thread commits on a connection of its own) -------------


def test_two_deliveries_at_once_erase_once_and_give_one_code(postgres, transactional_db,
                                                             token_dir):
    from django.test import Client

    from tests.test_refresh_celery import run_in_threads

    app = InstagramApp.objects.create(name="Shop app", flavour="instagram_login",
                                      app_id="1000000000000001", app_secret=SECRET,
                                      redirect_uri="https://registry.test.example/cb/")
    shop = make_shop(app)
    signed = meta_sign(payload(IG_USER_ID))

    answers = run_in_threads(3, lambda: Client().post(deletion_url(app),
                                                      {"signed_request": signed}))

    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert len({answer.json()["confirmation_code"] for answer in answers}) == 1
    record = DataDeletionRequest.objects.get()
    assert (record.status, record.accounts_erased) == ("completed", 1)
    assert Event.objects.filter(action="data_deletion").count() == 1
    shop.refresh_from_db()
    assert shop.username == "" and files(token_dir) == {}
