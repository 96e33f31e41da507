"""Property-based tests: nothing a person or Instagram's redirect sends crashes the
registry or stores anything it should not.

- the callback's and the paste form's parsers, on any input, and their round trips;
- token file names: accepted exactly when the documented rule says so;
- the callback view, the admin forms and the admin pages, as a superuser, on any input.
Instagram's answers: test_properties_answers.py (the parsers) and test_properties_http.py
(the client over HTTP).
"""

from __future__ import annotations

import os
import re
import string
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.apps import apps
from django.contrib.admin.models import LogEntry
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import QueryDict
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from accounts import services
from accounts.forms import AccountForm, ImportTokenForm, InstagramAppForm, PasteForm
from accounts.instagram import (
    CallbackParams,
    Flavour,
    parse_callback,
    parse_pasted,
    scopes_check,
)
from accounts.models import Account, InstagramApp, Token, validate_token_filename

MAX_PARAM_CHARS = 2048
URL_SAFE = st.text(st.sampled_from(string.ascii_letters + string.digits + "-._~"), min_size=1,
                   max_size=300)
BLANKS = st.text(st.sampled_from(" \t\r\n"), max_size=3)
CALLBACK_KEYS = ["code", "state", "error", "error_reason", "error_description"]
# Text with what breaks naive parsers: '#', '?', '&', '=', '%', control characters, NUL.
tricky_text = st.one_of(
    st.text(max_size=40),
    st.text(st.sampled_from("#_?&=%+ \t\n\x00\x1b\x7f\x85\u2028aZ9-./:"), max_size=40),
    st.integers(MAX_PARAM_CHARS - 2, MAX_PARAM_CHARS + 2).map(lambda n: "A" * n),
)


def is_control(char: str) -> bool:
    return unicodedata.category(char) == "Cc"


def assert_clean_params(params: CallbackParams) -> None:
    """What the parsers return is safe to use: bounded, no control characters, and the
    code and state carry no `#…` suffix or surrounding blanks."""
    for value in (params.code, params.state):
        if value is not None:
            assert isinstance(value, str) and 0 < len(value) <= MAX_PARAM_CHARS
            assert not any(is_control(c) for c in value), repr(value)
            assert "#" not in value
    if params.code is not None:
        assert params.code == params.code.strip()
    assert params.error is None or len(params.error) <= 200
    assert params.error_description is None or len(params.error_description) <= 500


# --- 1. the callback's parameters ----------------------------------------------------------


@settings(max_examples=300, deadline=500)
@given(params=st.dictionaries(st.sampled_from(CALLBACK_KEYS) | st.text(max_size=8), tricky_text))
@example(params={"code": "abc\x85def"})  # NEL: a C1 control character
@example(params={"state": "st\x9b31m#_"})
def test_parse_callback_never_raises_and_returns_clean_values(params: dict[str, str]) -> None:
    assert_clean_params(parse_callback(params))


@settings(max_examples=150, deadline=500)
@given(code=URL_SAFE, state=URL_SAFE, code_first=st.booleans(),
       suffix_on=st.sampled_from(["code", "state", "none"]))
def test_redirect_query_round_trips_code_and_state(code: str, state: str, code_first: bool,
                                                   suffix_on: str) -> None:
    values = {"code": code, "state": state}
    if suffix_on != "none":
        values[suffix_on] += "#_"  # what a pasted address bar carries
    pairs = [f"{key}={values[key]}" for key in (("code", "state") if code_first
                                                  else ("state", "code"))]
    parsed = parse_callback(QueryDict("&".join(pairs)))
    assert (parsed.code, parsed.state, parsed.error) == (code, state, None)


# --- 2. the paste form's parser ------------------------------------------------------------


@settings(max_examples=300, deadline=500)
@given(text=st.text() | tricky_text | st.builds(
    lambda head, query: head + "?" + query,
    st.sampled_from(["https://www.mywebsite.com/", "http://[::1", "https://x/", ""]),
    tricky_text))
@example(text="https://www.mywebsite.com/?code=ab\x85c#_")
def test_parse_pasted_never_raises_and_returns_clean_values(text: str) -> None:
    assert_clean_params(parse_pasted(text))


@settings(max_examples=150, deadline=500)
@given(code=URL_SAFE, state=URL_SAFE | st.none(), code_first=st.booleans(),
       base=st.sampled_from(["https://www.mywebsite.com/", "http://127.0.0.1:8000/oauth/callback/",
                             "https://shop.example/instagram/"]),
       fragment=st.sampled_from(["#_", ""]), before=BLANKS, after=BLANKS)
def test_pasted_url_round_trips_code_and_state(code: str, state: str | None, code_first: bool,
                                               base: str, fragment: str, before: str,
                                               after: str) -> None:
    pairs = [("code", code)] + ([("state", state)] if state is not None else [])
    query = urlencode(pairs if code_first else pairs[::-1])
    parsed = parse_pasted(f"{before}{base}?{query}{fragment}{after}")
    assert (parsed.code, parsed.state, parsed.error) == (code, state, None)


@settings(max_examples=150, deadline=500)
@given(code=URL_SAFE, before=BLANKS, after=BLANKS, fragment=st.sampled_from(["#_", "#", ""]))
def test_pasted_bare_code_is_the_code(code: str, before: str, after: str, fragment: str) -> None:
    parsed = parse_pasted(f"{before}{code}{fragment}{after}")
    assert (parsed.code, parsed.state) == (code, None)


# --- 3. token file names -------------------------------------------------------------------

DOCUMENTED_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
names = st.one_of(
    st.text(max_size=110),
    st.text(st.sampled_from("aZ9._-/\\\x00\n é"), max_size=12),
    st.from_regex(DOCUMENTED_NAME, fullmatch=True),
    st.from_regex(DOCUMENTED_NAME, fullmatch=True).map(lambda n: n + "\n"),
    st.integers(98, 102).map(lambda n: "a" * n),
)


def accepted(name: str) -> bool:
    try:
        validate_token_filename(name)
    except ValidationError:
        return False
    return True


@settings(max_examples=400, deadline=500)
@given(name=names)
@example(name="feed\n")
@example(name="a" * 100)
@example(name="a" * 101)
@example(name="a..b")
@example(name="2024")
def test_token_file_names_follow_the_documented_rule_exactly(name: str) -> None:
    documented = name == "" or (DOCUMENTED_NAME.fullmatch(name) is not None and ".." not in name
                                and not name.isdigit())
    assert accepted(name) == documented


@settings(max_examples=300, deadline=500)
@given(name=names)
def test_an_accepted_name_stays_a_direct_child_of_its_directory(name: str) -> None:
    if not name or not accepted(name):
        return
    directory = "/srv/igregistry/tokens"
    path = os.path.normpath(os.path.join(directory, name))
    assert os.path.dirname(path) == directory
    assert os.path.basename(path) == name


# --- the callback view, the admin forms and pages (as a superuser) -------------------------
# Function-scoped fixtures (the database, the signed-in client) are shared by every example
# on purpose: each example runs in a savepoint that is rolled back, so none sees another's.
WEB = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                     HealthCheck.too_slow])


@contextmanager
def rolled_back() -> Iterator[None]:
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def snapshot() -> dict[str, list[dict[str, Any]]]:
    """Every row the registry keeps (and the admin's change log)."""
    models = [*apps.get_app_config("accounts").get_models(), LogEntry]
    return {m.__name__: list(m.objects.order_by("pk").values()) for m in models}


def wsgi_query(text: str) -> str:
    """A query string as a WSGI server hands it over: the raw bytes, read as latin-1."""
    return text.encode("utf-8").decode("latin-1")


queries = st.one_of(
    st.text(max_size=80),
    st.lists(st.tuples(st.sampled_from(CALLBACK_KEYS) | st.text(max_size=6), tricky_text),
             max_size=5).map(urlencode),
    st.lists(st.tuples(st.sampled_from(CALLBACK_KEYS), tricky_text), max_size=5).map(
        lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)),
)


@pytest.mark.django_db
@settings(WEB, max_examples=60)
@given(query=queries, give_state=st.sampled_from(["no", "exact", "with #_", "with junk"]),
       state_first=st.booleans())
def test_callback_view_answers_a_page_and_stores_nothing_without_a_valid_state(
    admin_client, admin_user, login_account, fake, query: str, give_state: str,
    state_first: bool,
) -> None:
    with rolled_back():
        authorize_url = services.oauth_start(account=login_account, user=admin_user,
                                             now=timezone.now())
        state = parse_qs(urlsplit(authorize_url).query)["state"][0]
        if give_state != "no":
            carried = state + {"exact": "", "with #_": "#_", "with junk": "\x00"}[give_state]
            pair = urlencode({"state": carried})
            query = f"{pair}&{query}" if state_first else f"{query}&{pair}"
        before = snapshot()
        response = admin_client.get(reverse("oauth-callback"), QUERY_STRING=wsgi_query(query))
        assert response.status_code in (400, 403), response.status_code
        assert "accounts/oauth_error.html" in [t.name for t in response.templates]
        after = snapshot()
        # The view reads the last `state` it was given.
        seen = QueryDict(query).get("state", "").split("#", 1)[0]
        for name in ("Token", "PendingToken", "Account", "InstagramApp", "TokenFile"):
            assert after[name] == before[name], name
        if seen != state:
            assert after == before
        else:  # the valid state was spent, and only it
            used = [row for row in after["OAuthState"] if row["used_at"] is not None]
            assert len(used) == 1 and len(after["OAuthState"]) == len(before["OAuthState"])


APP = "<the app's pk>"  # replaced by the real primary key in each test
form_text = st.text(max_size=30) | tricky_text | st.sampled_from(["١٢٣", "１２３", "123\n", " 42 "])
words = st.text(st.sampled_from(string.ascii_letters + " "), min_size=1, max_size=30).filter(
    str.strip)
# Per field: values the form should accept, and anything at all (with the odd cases named).
VALID: dict[str, st.SearchStrategy] = {
    "name": words, "label": words,
    "flavour": st.sampled_from([f.value for f in Flavour]),
    "app_id": st.from_regex(r"[0-9]{1,32}", fullmatch=True),
    "app_secret": st.from_regex(r"[A-Za-z0-9-]{6,40}", fullmatch=True),
    "redirect_uri": st.sampled_from(["https://www.mywebsite.com/",
                                     "http://testserver/oauth/callback/"]),
    "scopes": st.just(""),
    "app": st.just(APP),
    "token_filename": st.just("") | st.from_regex(DOCUMENTED_NAME, fullmatch=True).filter(
        lambda n: ".." not in n),
    "export_enabled": st.sampled_from(["on", ""]),
    "export_format": st.sampled_from(["text", "json"]),
    "redirected_url": st.sampled_from(["https://www.mywebsite.com/?code=AQx#_", "  AQBcode#_ "]),
    "access_token": st.just("IGQV" + "t" * 40),
    "kind": st.sampled_from(["long", "short"]),
    "expires_at": st.sampled_from(["", "2030-01-01 10:00"]),
}
ANY: dict[str, st.SearchStrategy] = {
    "name": st.sampled_from(["x" * 100, "x" * 101]),
    "app_id": st.from_regex(r"[0-9]{33,40}", fullmatch=True) | st.sampled_from(["١٢٣", "１２３"]),
    "app_secret": st.sampled_from(["", "two words", "tab\tsecret"]),
    "redirect_uri": st.sampled_from([
        "www.mywebsite.com", "http://[::1", "javascript:alert(1)", "ftp://x.test/",
        "https://" + "a" * 600 + ".test/"]),
    "scopes": st.sampled_from(["instagram_business_basic", "user_profile, user_media",
                               "business_basic", ",,, "]),
    "app": st.sampled_from(["0", "99999999999999999999", "-1", "1.5"]),
    "token_filename": names,
    "export_enabled": st.sampled_from(["true", "0"]),
    "access_token": st.just("IGQ V"),
    "expires_at": st.sampled_from(["2030-02-30 10:00", "9999-12-31 23:59", "0001-01-01 00:00",
                                   "2001-01-01 10:00"]),
}


FORMS = {
    "app": (InstagramAppForm, ["name", "flavour", "app_id", "app_secret", "redirect_uri",
                               "scopes"]),
    "account": (AccountForm, ["app", "label", "token_filename", "export_enabled",
                              "export_format"]),
    "import": (ImportTokenForm, ["access_token", "kind", "expires_at"]),
    "paste": (PasteForm, ["redirected_url"]),
}


@st.composite
def form_data(draw: st.DrawFn, fields: list[str]) -> dict[str, str]:
    """The form's fields, a few of them missing or holding anything at all (so that often
    every other field is valid and the odd one decides), and a few unknown fields."""
    odd = draw(st.sets(st.sampled_from(fields), max_size=2))
    missing = draw(st.sets(st.sampled_from(fields), max_size=1))
    data = draw(st.dictionaries(st.text(max_size=6), st.text(max_size=10), max_size=2))
    for field in fields:
        if field in missing:
            continue
        wild = form_text | ANY[field] if field in ANY else form_text
        data[field] = draw(wild if field in odd else VALID[field])
    return data


def with_app(data: dict[str, str], app: InstagramApp) -> dict[str, str]:
    return {k: str(app.pk) if v == APP else v for k, v in data.items()}


def assert_cleaned_by_the_rules(kind: str, cleaned: dict[str, Any]) -> None:
    """What a valid form hands on follows the model's documented rules."""
    if kind == "app":
        assert re.fullmatch(r"[0-9]{1,32}", cleaned["app_id"]), cleaned["app_id"]
        assert cleaned["app_secret"] and not any(c.isspace() for c in cleaned["app_secret"])
        assert cleaned["redirect_uri"].lower().startswith(("http://", "https://"))
        flavour = Flavour(cleaned["flavour"])
        scopes = [s for s in re.split(r"[,\s]+", cleaned["scopes"]) if s]
        # Unknown scopes pass (with a warning in the admin); names that never work do not.
        assert not scopes_check(flavour, scopes).refused
    elif kind == "account":
        assert isinstance(cleaned["app"], InstagramApp)
        assert accepted(cleaned["token_filename"])
        assert cleaned["export_format"] in Account.ExportFormat.values
    elif kind == "import":
        assert cleaned["access_token"] and "\x00" not in cleaned["access_token"]
        assert cleaned["kind"] in Token.Kind.values
        assert cleaned["expires_at"] is None or timezone.is_aware(cleaned["expires_at"])
    else:
        assert cleaned["redirected_url"] == cleaned["redirected_url"].strip() != ""


@pytest.mark.django_db
@pytest.mark.parametrize(("kind", "editing"), [("app", False), ("app", True), ("account", False),
                                               ("account", True), ("import", False),
                                               ("paste", False)])
@settings(WEB, max_examples=60)
@given(data=st.data())
def test_admin_forms_on_any_data(login_account, kind: str, editing: bool,
                                 data: st.DataObject) -> None:
    form_class, fields = FORMS[kind]
    values = with_app(data.draw(form_data(fields), label="data"), login_account.app)
    if editing:
        instance = {"app": login_account.app, "account": login_account}[kind]
        form = form_class(values, instance=instance)
    else:
        form = form_class(values)
    valid = form.is_valid()
    assert valid is True or valid is False
    if valid:
        assert_cleaned_by_the_rules(kind, form.cleaned_data)


ADMIN_PAGES = {
    # page: (url name, takes the object's pk, form fields, the form deciding validity)
    "app add": ("admin:accounts_instagramapp_add", None, FORMS["app"][1], None),
    "app change": ("admin:accounts_instagramapp_change", "app", FORMS["app"][1], None),
    "account add": ("admin:accounts_account_add", None, FORMS["account"][1], None),
    "account change": ("admin:accounts_account_change", "account", FORMS["account"][1], None),
    "paste": ("admin:accounts_account_paste", "account", ["redirected_url"], PasteForm),
    "import": ("admin:accounts_account_import", "account", FORMS["import"][1], ImportTokenForm),
}


@pytest.mark.django_db
@pytest.mark.parametrize("page", ADMIN_PAGES)
@settings(WEB, max_examples=25)
@given(data=st.data())
def test_admin_pages_on_any_post(admin_client, login_account, fake, page: str,
                                 data: st.DataObject) -> None:
    url_name, pk_of, fields, form_class = ADMIN_PAGES[page]
    values = with_app(data.draw(form_data(fields), label="data"), login_account.app)
    args = [] if pk_of is None else [{"app": login_account.app, "account": login_account}[
        pk_of].pk]
    with rolled_back():
        before = snapshot()
        response = admin_client.post(reverse(url_name, args=args), urlencode(values),
                                     content_type="application/x-www-form-urlencoded")
        after = snapshot()
    assert response.status_code in (200, 302, 400), response.status_code
    if form_class is None:
        # Django's add and change pages redirect once saved; an invalid form is shown again.
        form_valid = response.status_code == 302
        assert form_valid or response.context["adminform"].form.errors
    else:
        form_valid = form_class(values).is_valid()
        assert response.status_code in ((302, 400) if form_valid else (400,))
        # Made-up codes and tokens: Instagram (the fake) accepts none of them.
        for name in ("Token", "PendingToken", "OAuthState"):
            assert after[name] == before[name], name
    if not form_valid:
        assert after == before


def valid_values(fields: list[str], app: InstagramApp) -> dict[str, str]:
    examples = {"name": "Shop app", "label": "Shop feed", "flavour": "instagram_login",
                "app_id": "1000000000000009", "app_secret": "s3cret-value",
                "redirect_uri": "https://www.mywebsite.com/", "scopes": "", "app": str(app.pk),
                "token_filename": "", "export_enabled": "on", "export_format": "text"}
    return {field: examples[field] for field in fields}


ONE_FIELD_RULES = {
    # (form, field): what the field must be for the form to be valid, all else being valid
    ("app", "app_id"): lambda v: re.fullmatch(r"[0-9]{1,32}", v.strip()) is not None,
    ("app", "app_secret"): lambda v: v.strip() != "" and not any(c.isspace() for c in v.strip())
    and "\x00" not in v,
    ("account", "token_filename"): lambda v: "\x00" not in v and accepted(v.strip()),
}


@pytest.mark.django_db
@pytest.mark.parametrize(("kind", "field"), ONE_FIELD_RULES)
@settings(WEB, max_examples=80)
@given(data=st.data())
def test_one_field_decides_by_its_documented_rule(login_account, kind: str, field: str,
                                                  data: st.DataObject) -> None:
    form_class, fields = FORMS[kind]
    value = data.draw(VALID[field] | ANY[field] | form_text, label=field)
    values = {**valid_values(fields, login_account.app), field: value}
    assert form_class(values).is_valid() == ONE_FIELD_RULES[kind, field](value)


@pytest.mark.django_db
@settings(WEB, max_examples=60)
@given(scheme=st.sampled_from(["ftp", "FTPS", "file", "javascript", "data", "ws", "http",
                               "HTTPS"]),
       host=st.from_regex(r"[a-z]{1,10}\.(test|example)", fullmatch=True), path=URL_SAFE)
def test_redirect_uri_is_http_or_https(login_account, scheme: str, host: str,
                                       path: str) -> None:
    uri = f"{scheme}://{host}/{path}"
    form = InstagramAppForm({**valid_values(FORMS["app"][1], login_account.app),
                             "redirect_uri": uri})
    assert form.is_valid() == (scheme.lower() in ("http", "https"))
