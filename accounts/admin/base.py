"""What every registry admin page shares."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ChangeList
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from .. import selectors
from ..crypto import EncryptedTextField
from ..return_to import NEXT

# Regular expressions from a URL reach the database as they are: a bad one is a server
# error, a slow one a denial of service.
_REFUSED_LOOKUPS = ("regex", "iregex")


class RegistryModelAdmin(admin.ModelAdmin):
    """Refuses changelist filters on encrypted columns (`?app_secret__startswith=gA...`
    would let anyone who may view the list read the ciphertext a character at a time)
    and regular-expression filters. A refused filter is a 400, as Django answers any
    lookup it does not allow. A posted selection that is not a list of ids is refused
    with a message rather than Django's server error."""

    def response_action(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        if not all(value.isascii() and value.isdigit() for value in selected):
            self.message_user(request, "That selection is not a list of ids: nothing was done.",
                              messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
        return super().response_action(request, queryset)

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


class KeepsNextChangeList(ChangeList):
    """A change list that carries `next` in its links (filters, pages, sorting) instead
    of reading it as a filter on a field (which Django refuses with `?e=1`)."""

    def get_filters_params(self, params=None):  # noqa: ANN001, ANN201
        lookup_params = super().get_filters_params(params)
        lookup_params.pop(NEXT, None)
        return lookup_params


class AppFilter(admin.RelatedFieldListFilter):
    """The "by app" filter, from the apps' ids and names only: Django's own loads whole
    app rows, decrypting every app secret for each list page (and failing the page on
    one no key in ENCRYPTION_KEYS decrypts)."""

    def field_choices(self, field, request, model_admin):  # noqa: ANN001, ANN201
        return [(app.pk, app.name) for app in selectors.instagram_apps_named()]
