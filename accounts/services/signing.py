"""Standard Webhooks signing (https://www.standardwebhooks.com/), shared by the alert
webhook (`alert_outbox`) and the change webhooks (`webhooks`): made with the
`standardwebhooks` library, so consumers verify with that library in any language."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

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
