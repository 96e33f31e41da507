"""What every registry admin page shares."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from ..crypto import EncryptedTextField

# Regular expressions from a URL reach the database as they are: a bad one is a server
# error, a slow one a denial of service.
_REFUSED_LOOKUPS = ("regex", "iregex")


class RegistryModelAdmin(admin.ModelAdmin):
    """Refuses changelist filters on encrypted columns (`?app_secret__startswith=gA...`
    would let anyone who may view the list read the ciphertext a character at a time)
    and regular-expression filters. A refused filter is a 400, as Django answers any
    lookup it does not allow."""

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None
                       ) -> bool:
        parts = lookup.split("__")
        if parts[-1] in _REFUSED_LOOKUPS:
            return False
        model = self.model
        for part in parts:
            try:
                field = model._meta.get_field(part)
            except Exception:  # a lookup name (startswith, ...), not a field
                break
            if isinstance(field, EncryptedTextField):
                return False
            if not field.is_relation or field.related_model is None:
                break
            model = field.related_model
        return super().lookup_allowed(lookup, value, request)
