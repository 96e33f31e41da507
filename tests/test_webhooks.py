"""Webhooks in the Standard Webhooks convention (issue 12, item 2): the change webhook per
API key consumer and the alert webhook, both verified with the `standardwebhooks`
library's own verifier, tampered and stale ones refused; change webhooks retried with
back-off and counted in /metrics."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from accounts import services
from accounts.models import Account, ApiKey, Token, WebhookDelivery
from accounts.services import Actor
from accounts.services.signing import standard_webhook_headers
from tests.conftest import active_account
from tests.test_alerts import WEBHOOK_SECRET, WebhookServer, make_account, run


@pytest.fixture
def hook():
    with WebhookServer() as server:
        yield server


@pytest.fixture
def consumer(fake, login_app, token_dir, hook, settings):  # noqa: ANN001
    settings.ALERT_RETRY_BASE_SECONDS = 60
    settings.ALERT_RETRY_MAX_SECONDS = 3600
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 3
    feed = active_account(fake, login_app, "Shop feed", exported=True)
    key, _, secret = services.api_key_create(name="site", accounts=[feed],
                                             webhook_url=hook.url, user=None,
                                             now=timezone.now())
    # The first look records what the consumer is assumed to have fetched: no webhook.
    assert services.token_changes_queue(now=timezone.now()) == 0
    return {"feed": feed, "key": key, "secret": secret}


def headers_of(request) -> dict[str, str]:  # noqa: ANN001
    return {name: request.headers[name]
            for name in ("webhook-id", "webhook-timestamp", "webhook-signature")}


def refresh(feed: Account) -> None:
    result = services.token_refresh(account_id=feed.pk, actor=Actor(job="test"),
                                    now=timezone.now(), force=True)
    assert result.outcome == services.Outcome.REFRESHED


def test_a_refresh_sends_one_verifiable_change_webhook(consumer, hook):
    feed, secret = consumer["feed"], consumer["secret"]
    assert secret.startswith("whsec_")
    refresh(feed)
    queued, report = services.token_webhooks_dispatch(now=timezone.now())
    assert queued == 1 and report.delivered == ["site"]
    (request,) = hook.received
    payload = Webhook(secret).verify(request.body, headers_of(request))
    # Signed as it left, not when the run began (a consumer allows 5 minutes).
    sent_at = int(request.headers["webhook-timestamp"])
    assert abs(sent_at - timezone.now().timestamp()) < 60
    assert payload["type"] == "token.changed"
    assert payload["data"]["account"] == feed.pk and payload["data"]["has_token"] is True
    assert payload["data"]["url"].endswith(reverse("api-token", args=[feed.pk]))
    token = Token.objects.get(account=feed).value
    assert token.encode() not in request.body  # fetched from the API, never sent
    # Nothing changed since: nothing more.
    assert services.token_webhooks_dispatch(now=timezone.now())[0] == 0
    assert len(hook.received) == 1


def test_a_tampered_or_stale_change_webhook_is_refused(consumer, hook):
    refresh(consumer["feed"])
    services.token_webhooks_dispatch(now=timezone.now())
    (request,) = hook.received
    verifier = Webhook(consumer["secret"])
    headers = headers_of(request)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(request.body.replace(b"token.changed", b"token.chang3d"), headers)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(request.body, {**headers, "webhook-id": "msg_other"})
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"another-secret-32-bytes-long-xx").decode()
                ).verify(request.body, headers)
    # Signed correctly, but ten minutes ago: a replay is refused as too old.
    stale = standard_webhook_headers(msg_id=headers["webhook-id"], body=request.body.decode(),
                                     secret=consumer["secret"],
                                     now=timezone.now() - timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError, match="too old"):
        verifier.verify(request.body, stale)


def test_a_failing_consumer_is_retried_after_its_back_off_with_the_same_id(consumer, hook,
                                                                            client):
    refresh(consumer["feed"])
    hook.script = [500]
    now = timezone.now()
    queued, report = services.token_webhooks_dispatch(now=now)
    assert (queued, report.failed) == (1, ["site"])
    delivery = WebhookDelivery.objects.get()
    assert delivery.last_error == "HTTP 500" and delivery.next_attempt_at > now
    assert services.webhook_deliveries_send(now=now + timedelta(seconds=1)).failed == []
    report = services.webhook_deliveries_send(now=delivery.next_attempt_at)
    assert report.delivered == ["site"]
    first, second = hook.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery.msg_id
    assert first.body == second.body
    Webhook(consumer["secret"]).verify(second.body, headers_of(second))
    # Counted in /metrics.
    text = client.get(reverse("metrics"), REMOTE_ADDR="127.0.0.1").content.decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("igregistry_webhook_deliveries_total", (("outcome", "delivered"),))] == 1
    assert samples[("igregistry_webhook_delivery_failures_total", ())] == 1
    assert samples[("igregistry_webhook_deliveries_pending", ())] == 0


def test_a_consumer_that_keeps_failing_is_abandoned_and_others_still_served(
        consumer, hook, fake, login_app, settings):
    from tests.test_alerts import WebhookServer as Other

    refresh(consumer["feed"])
    with Other() as other:
        other_feed = active_account(fake, login_app, "Other feed", exported=True)
        services.api_key_create(name="other-site", accounts=[other_feed],
                                webhook_url=other.url, user=None, now=timezone.now())
        services.token_changes_queue(now=timezone.now())
        refresh(other_feed)
        hook.status = 503
        now = timezone.now()
        services.token_webhooks_dispatch(now=now)
        for _ in range(3):
            now += timedelta(hours=2)
            services.webhook_deliveries_send(now=now)
        assert len(other.received) == 1  # the dead consumer held nobody up
    dead = WebhookDelivery.objects.get(api_key__name="site")
    assert dead.abandoned_at is not None and dead.attempts == 3
    assert len(hook.received) == 3


def test_an_account_added_to_a_keys_app_later_is_announced(fake, login_app, token_dir, hook):
    services.api_key_create(name="agency", apps=[login_app], webhook_url=hook.url, user=None,
                            now=timezone.now() - timedelta(minutes=5))
    old = active_account(fake, login_app, "Before the key", exported=True)
    Account.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=1))
    new = active_account(fake, login_app, "After the key", exported=True)
    queued, _ = services.token_webhooks_dispatch(now=timezone.now())
    assert queued == 1
    (request,) = hook.received
    assert json.loads(request.body)["data"]["account"] == new.pk


def test_only_consumers_whose_scope_covers_the_account_hear_of_it(consumer, hook, fake,
                                                                  login_app):
    other = active_account(fake, login_app, "Not theirs", exported=True)
    services.token_changes_queue(now=timezone.now())
    refresh(other)
    assert services.token_webhooks_dispatch(now=timezone.now())[0] == 0
    # A revoked key hears nothing either.
    services.api_key_revoke(key=ApiKey.objects.get(), user=None, now=timezone.now())
    refresh(consumer["feed"])
    assert services.token_webhooks_dispatch(now=timezone.now())[0] == 0
    assert hook.received == []


def test_a_token_gone_is_a_change_too(consumer, hook):
    Token.objects.filter(account=consumer["feed"]).delete()
    Account.objects.filter(pk=consumer["feed"].pk).update(status="deauthorized")
    services.token_webhooks_dispatch(now=timezone.now())
    (request,) = hook.received
    data = Webhook(consumer["secret"]).verify(request.body, headers_of(request))["data"]
    assert (data["has_token"], data["status"], data["expires_at"]) == (False, "deauthorized",
                                                                       None)


# --- the alert webhook, in the same convention -----------------------------------------


@pytest.fixture
def alerting(db, settings, hook, mailoutbox):  # noqa: ANN001
    settings.ALERT_EMAILS = []
    settings.ALERT_WEBHOOK_URL = hook.url
    settings.ALERT_EXPIRY_DAYS = 7
    settings.REFRESH_SWEEP_MINUTES = 10**7
    return hook


@pytest.mark.parametrize("secret", [
    WEBHOOK_SECRET,  # a secret from before the convention: its UTF-8 bytes are the key
    "whsec_" + base64.b64encode(b"a-secret-made-the-standard-way!!").decode(),
])
def test_the_alert_webhook_verifies_with_the_library(alerting, settings, secret):
    from accounts.models import InstagramApp

    settings.ALERT_WEBHOOK_SECRET = secret
    app = InstagramApp.objects.create(name="Shop app", app_id="1", app_secret="x" * 20,
                                      redirect_uri="https://example.com/cb/")
    make_account(app, "Expiring shop", left=timedelta(days=2), now=timezone.now())
    run(now=timezone.now())
    (request,) = alerting.received
    consumer_secret = secret if secret.startswith("whsec_") else (
        "whsec_" + base64.b64encode(secret.encode()).decode())
    payload = Webhook(consumer_secret).verify(request.body, headers_of(request))
    assert payload["items"][0]["label"] == "Expiring shop"
    with pytest.raises(WebhookVerificationError):
        Webhook(consumer_secret).verify(request.body + b" ", headers_of(request))
    stale = standard_webhook_headers(msg_id=request.headers["webhook-id"],
                                     body=request.body.decode(), secret=secret,
                                     now=timezone.now() - timedelta(minutes=6))
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(consumer_secret).verify(request.body, stale)
    # The registry's own signature is still sent, for receivers set up before.
    assert request.headers["X-Igregistry-Signature"].startswith("sha256=")
    assert json.loads(request.body)["items"]
