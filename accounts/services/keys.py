"""Encryption key rotation."""

from __future__ import annotations

from django.db import transaction

from ..models import InstagramApp, Token

# --- encryption keys --------------------------------------------------------------------


def secrets_reencrypt() -> int:
    """Re-encrypt every app secret and token with the newest key; returns rows rewritten.

    Safe to run twice; each row is locked while it is rewritten."""
    count = 0
    for model, field in ((InstagramApp, "app_secret"), (Token, "value")):
        for pk in model.objects.values_list("pk", flat=True).iterator():
            with transaction.atomic():
                row = model.objects.select_for_update().filter(pk=pk).first()
                if row is not None:
                    # Saving writes the decrypted value back, encrypted with the first key.
                    row.save(update_fields=[field])
                    count += 1
    return count

