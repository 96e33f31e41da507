"""Standard Webhooks (https://www.standardwebhooks.com/), shared by the alert webhook
(`alert_outbox`) and the change webhooks (`webhooks`): the signing, made with the
`standardwebhooks` library so consumers verify with that library in any language, and the
POST itself."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import requests
from standardwebhooks.webhooks import Webhook


def standard_webhook_headers(*, msg_id: str, body: str, secret: str,
                             now: datetime) -> dict[str, str]:
    """The Standard Webhooks headers for `body` sent at `now` (UTC): `webhook-id`,
    `webhook-timestamp`, `webhook-signature`. `secret`: "whsec_" and base64 (the
    convention's form, as the registry makes them), or any other text, whose UTF-8 bytes
    are then the key (ALERT_WEBHOOK_SECRET from before the convention; a consumer gives
    the library "whsec_" and the base64 of those bytes)."""
    key: str | bytes = secret if secret.startswith("whsec_") else secret.encode()
    signature = Webhook(key).sign(msg_id=msg_id, timestamp=now.astimezone(UTC), data=body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature, "Content-Type": "application/json"}


def new_msg_id() -> str:
    return "msg_" + secrets.token_hex(12)


def webhook_post(*, url: str, body: str, headers: dict[str, str], timeout: float) -> str | None:
    """POST `body` (sent as these exact UTF-8 bytes) to `url`. Returns None on a 2xx, else
    why it failed, in words that never quote the URL (a webhook URL may hold a key): no
    answer within `timeout` seconds, the kind of connection error, or the HTTP status. A
    redirect counts as a failure: it would be followed as a GET without the body."""
    try:
        response = requests.post(url, data=body.encode(), headers=headers, timeout=timeout,
                                 allow_redirects=False)
    except requests.Timeout:
        return f"no answer within {timeout:g} s"
    except requests.RequestException as exc:
        return type(exc).__name__
    if not 200 <= response.status_code < 300:
        return f"HTTP {response.status_code}"
    return None
