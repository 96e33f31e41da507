"""The refresh policy and the refresh service, against the fake Instagram over HTTP."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts import selectors, services
from accounts.instagram import RateLimited, Transient, Usage
from accounts.models import Account, Event, PendingToken, SweepState, Token
from accounts.services import Actor, FlowError, Outcome
from tests.conftest import SECRETS, allow_at_fake
from tests.fake_instagram import garbage, graph_error, rate_limited, status

CLIENT_ID = SECRETS["instagram_login"][0]
ACTOR = Actor(job="test")


def make_token(fake, app, label: str, *, age: timedelta, left: timedelta,
               status_: str = Account.Status.ACTIVE, kind: str = Token.Kind.LONG) -> Account:
    """An account whose token was issued `age` ago and expires in `left`."""
    now = timezone.now()
    username = label.lower().replace(" ", "_")
    account = Account.objects.create(app=app, label=label)
    Account.objects.filter(pk=account.pk).update(status=status_, username=username,
                                                 ig_id=str(10**17 + account.pk))
    value = fake.mint_token(client_id=CLIENT_ID, username=username, kind=kind, age=age)
    Token.objects.create(account=account, value=value, kind=kind, obtained_at=now - age,
                         expires_at=now + left)
    return account


@pytest.fixture
def due(fake, login_app) -> Account:
    return make_token(fake, login_app, "Due", age=timedelta(days=50), left=timedelta(days=10))


def refresh(account: Account, **kwargs) -> services.RefreshResult:
    return services.token_refresh(account_id=account.pk, actor=ACTOR, now=timezone.now(),
                                  **kwargs)


def test_due_selection(fake, login_app, due):
    app = login_app
    make_token(fake, app, "Fresh", age=timedelta(days=2), left=timedelta(days=58))
    make_token(fake, app, "Young", age=timedelta(hours=2), left=timedelta(days=5))
    make_token(fake, app, "Expired", age=timedelta(days=61), left=timedelta(hours=-1))
    make_token(fake, app, "Owner gone", age=timedelta(days=50), left=timedelta(days=10),
               status_=Account.Status.NEEDS_REAUTH)
    backing_off = make_token(fake, app, "Backing off", age=timedelta(days=50),
                             left=timedelta(days=10))
    Token.objects.filter(account=backing_off).update(
        next_attempt_at=timezone.now() + timedelta(minutes=5))
    errored = make_token(fake, app, "Errored", age=timedelta(days=50), left=timedelta(days=9),
                         status_=Account.Status.ERROR)

    due_ids = list(selectors.tokens_due(now=timezone.now()).values_list("account_id",
                                                                         flat=True))
    # Soonest expiry first; only what Instagram would refresh and the policy wants.
    assert due_ids == [errored.pk, due.pk]


def test_threshold_is_configurable(settings, fake, login_app):
    account = make_token(fake, login_app, "Thirty left", age=timedelta(days=30),
                         left=timedelta(days=30))
    settings.REFRESH_THRESHOLD_DAYS = 29
    assert not selectors.tokens_due(now=timezone.now()).exists()
    settings.REFRESH_THRESHOLD_DAYS = 31
    assert list(selectors.tokens_due(now=timezone.now())) == [account.token]


def test_refresh_stores_what_came_back_and_rewrites_the_file(due, fake, token_dir):
    old = due.token.value
    result = refresh(due)
    assert result.outcome == Outcome.REFRESHED
    token = Token.objects.get(account=due)
    assert token.value != old
    assert fake.token_info(token.value)["kind"] == "long"
    assert abs(token.expires_at - (timezone.now() + timedelta(days=60))) < timedelta(minutes=1)
    assert token.last_refreshed_at is not None
    assert (token_dir / "due").read_text() == token.value
    assert Event.objects.filter(account=due, action="refresh", outcome="ok").exists()
    # Idempotent: a second run finds nothing to do and calls nobody.
    assert refresh(due).outcome == Outcome.NOT_DUE
    assert len(fake.calls("/refresh_access_token")) == 1


def test_refresh_returning_the_same_string(due, fake):
    fake.refresh_returns_same_token = True
    old_expiry = due.token.expires_at
    assert refresh(due).outcome == Outcome.REFRESHED
    token = Token.objects.get(account=due)
    assert token.value == due.token.value
    assert token.expires_at > old_expiry + timedelta(days=40)


def test_never_sends_a_token_too_young_or_expired(fake, login_app):
    young = make_token(fake, login_app, "Young", age=timedelta(hours=23), left=timedelta(days=5))
    expired = make_token(fake, login_app, "Expired", age=timedelta(days=61),
                         left=timedelta(seconds=-1))
    for account in (young, expired):
        assert refresh(account, force=True).outcome == Outcome.NOT_DUE
    assert fake.calls("/refresh_access_token") == []


def test_force_refreshes_a_token_not_yet_due(fake, login_app):
    fresh = make_token(fake, login_app, "Fresh", age=timedelta(days=2), left=timedelta(days=58))
    assert refresh(fresh).outcome == Outcome.NOT_DUE
    assert refresh(fresh, force=True).outcome == Outcome.REFRESHED
    assert len(fake.calls("/refresh_access_token")) == 1


@pytest.mark.parametrize("fault", [status(500), status(503), garbage(),
                                   graph_error(2, http_status=500)])
def test_temporary_failure_backs_off(due, fake, settings, fault):
    fake.inject("/refresh_access_token", fault)
    before = timezone.now()
    result = refresh(due)
    assert result.outcome == Outcome.RETRY
    assert 1 <= result.retry_in <= settings.REFRESH_RETRY_BASE_SECONDS + 1
    token = Token.objects.get(account=due)
    assert token.refresh_failures == 1
    assert token.next_attempt_at >= before + timedelta(seconds=result.retry_in - 1)
    assert token.value == due.token.value
    due.refresh_from_db()
    assert due.status == Account.Status.ACTIVE
    assert "Temporary failure" in due.last_error
    # Backing off: the sweep leaves it alone until then.
    assert not selectors.tokens_due(now=timezone.now()).filter(pk=token.pk).exists()
    # Once the wait is over it goes through and the failure count resets.
    Token.objects.filter(pk=token.pk).update(next_attempt_at=timezone.now())
    assert refresh(due).outcome == Outcome.REFRESHED
    assert Token.objects.get(pk=token.pk).refresh_failures == 0
    due.refresh_from_db()
    assert due.last_error == ""


@pytest.mark.parametrize("subcode", [None, 458, 460, 463, 467])
def test_dead_token_needs_reauthorization_after_one_call(due, fake, subcode):
    fake.inject("/refresh_access_token", graph_error(190, subcode))
    assert refresh(due).outcome == Outcome.NEEDS_REAUTH
    due.refresh_from_db()
    assert due.status == Account.Status.NEEDS_REAUTH
    assert "authorize again" in due.last_error
    # Not retried, and no longer due.
    assert not selectors.tokens_due(now=timezone.now()).exists()
    assert refresh(due, force=True).outcome == Outcome.NOT_DUE
    assert len(fake.calls("/refresh_access_token")) == 1


def test_other_errors_are_recorded_and_retried_next_sweep(due, fake):
    fake.inject("/refresh_access_token", graph_error(100, message="Unsupported request"))
    result = refresh(due)
    assert result.outcome == Outcome.FAILED
    due.refresh_from_db()
    assert due.status == Account.Status.ERROR
    assert "Unsupported request" in due.last_error
    event = Event.objects.get(account=due, action="refresh")
    assert event.outcome == "failed" and "Unsupported request" in event.message
    assert refresh(due).outcome == Outcome.REFRESHED
    due.refresh_from_db()
    assert due.status == Account.Status.ACTIVE


def test_rate_limit_pauses_the_sweep(due, fake, login_app, settings):
    other = make_token(fake, login_app, "Other", age=timedelta(days=50), left=timedelta(days=9))
    fake.inject("/refresh_access_token",
                rate_limited(usage={"call_count": 100, "estimated_time_to_regain_access": 60}))
    result = refresh(other)
    # An hour's wait is more than a task retry may sleep: the sweep takes it up later.
    assert result.outcome == Outcome.DEFERRED
    assert result.retry_in >= 3600
    state = SweepState.objects.get()
    assert state.throttled_until > timezone.now() + timedelta(minutes=59)
    plan = services.refresh_sweep(actor=ACTOR, now=timezone.now())
    assert plan.refresh_ids == [] and plan.throttled_until == state.throttled_until
    later = timezone.now() + timedelta(minutes=61)
    plan = services.refresh_sweep(actor=ACTOR, now=later)
    assert set(plan.refresh_ids) == {due.pk, other.pk}


def test_high_usage_spaces_the_sweep_out(due, fake, settings):
    fake.usage_headers = {"X-App-Usage": '{"call_count": 80, "total_cputime": 5, "total_time": 5}'}
    assert refresh(due).outcome == Outcome.REFRESHED
    assert SweepState.objects.get().usage_percent == 80
    plan = services.refresh_sweep(actor=ACTOR, now=timezone.now())
    assert plan.spacing_seconds == 0  # nothing due, nothing to space out
    Token.objects.filter(account=due).update(expires_at=timezone.now() + timedelta(days=9),
                                             obtained_at=timezone.now() - timedelta(days=51))
    plan = services.refresh_sweep(actor=ACTOR, now=timezone.now())
    assert plan.spacing_seconds == settings.USAGE_SLOWDOWN_SPACING_SECONDS
    # Spacing never pushes the last task past half of Redis' visibility timeout.
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 20}
    plan = services.refresh_sweep(actor=ACTOR, now=timezone.now())
    assert plan.spacing_seconds * len(plan.refresh_ids) <= 10
    fake.usage_headers = {"X-App-Usage": '{"call_count": 10, "total_cputime": 5, "total_time": 5}'}
    fresh = Token.objects.get(account=due)
    Token.objects.filter(pk=fresh.pk).update(obtained_at=timezone.now() - timedelta(days=2))
    fake.advance(2 * 86400)  # Instagram's side of the same two days
    assert refresh(due, force=True).outcome == Outcome.REFRESHED
    assert services.refresh_sweep(actor=ACTOR, now=timezone.now()).spacing_seconds == 0


def test_sweep_flags_expired_tokens_once(fake, login_app):
    expired = make_token(fake, login_app, "Expired", age=timedelta(days=61),
                         left=timedelta(minutes=-5))
    plan = services.refresh_sweep(actor=ACTOR, now=timezone.now())
    assert plan.flagged == 1 and plan.refresh_ids == []
    expired.refresh_from_db()
    assert expired.status == Account.Status.NEEDS_REAUTH
    assert "expired" in expired.last_error
    assert services.refresh_sweep(actor=ACTOR, now=timezone.now()).flagged == 0
    assert Event.objects.filter(account=expired, action="refresh").count() == 1
    assert fake.calls("/refresh_access_token") == []


def test_retry_delay_grows_with_jitter_and_a_cap(settings):
    settings.REFRESH_RETRY_BASE_SECONDS = 10
    settings.REFRESH_RETRY_MAX_SECONDS = 100
    for failures, (low, high) in {1: (5, 11), 2: (10, 21), 3: (20, 41), 10: (50, 101)}.items():
        delays = {services.retry_delay(failures=failures) for _ in range(50)}
        assert min(delays) >= low and max(delays) <= high
        assert len(delays) > 1  # jittered
    limited = RateLimited("slow down", usage=Usage(percent=100, regain_seconds=600))
    assert services.retry_delay(failures=1, error=limited) >= 600
    assert services.retry_delay(failures=1, error=Transient("x")) <= 11


# --- short-lived tokens left by an interrupted flow ---------------------------------------


def authorize_until_swap_fails(admin_client, account, fake) -> None:
    fake.inject("/access_token", status(503))
    response = admin_client.post(reverse("admin:accounts_account_authorize", args=[account.pk]))
    location = allow_at_fake(response["Location"])
    parts = location.split("#")[0].split("testserver", 1)[1]
    page = admin_client.get(parts)
    assert page.status_code == 400
    assert "tries again until the short-lived token expires" in page.content.decode()


def test_interrupted_flow_is_finished_by_the_sweep(admin_client, login_account, fake, token_dir):
    authorize_until_swap_fails(admin_client, login_account, fake)
    assert not Token.objects.filter(account=login_account).exists()
    assert PendingToken.objects.filter(account=login_account).exists()

    plan = services.refresh_sweep(actor=ACTOR, now=timezone.now())
    assert plan.swap_ids == [login_account.pk]
    result = services.pending_swap(account_id=login_account.pk, actor=ACTOR, now=timezone.now())
    assert result.outcome == Outcome.REFRESHED
    token = Token.objects.get(account=login_account)
    assert token.kind == Token.Kind.LONG
    assert (token_dir / token.account.username).read_text() == token.value
    assert not PendingToken.objects.exists()
    # Nothing left to do on a rerun.
    assert services.pending_swap(account_id=login_account.pk, actor=ACTOR,
                                 now=timezone.now()).outcome == Outcome.NOT_DUE


def test_interrupted_flow_past_the_hour_is_flagged(admin_client, login_account, fake):
    authorize_until_swap_fails(admin_client, login_account, fake)
    later = timezone.now() + timedelta(minutes=61)
    plan = services.refresh_sweep(actor=ACTOR, now=later)
    assert plan.flagged == 1 and plan.swap_ids == []
    login_account.refresh_from_db()
    assert login_account.status == Account.Status.NEEDS_REAUTH
    assert not PendingToken.objects.exists()
    assert len(fake.calls("/access_token")) == 1  # the expired token was never sent


def test_pending_swap_refused_discards_it(admin_client, login_account, fake):
    authorize_until_swap_fails(admin_client, login_account, fake)
    fake.inject("/access_token", graph_error(190, 463))
    with pytest.raises(FlowError, match="Nothing was stored"):
        services.oauth.pending_token_swap(account_id=login_account.pk, actor=ACTOR,
                                          now=timezone.now())
    assert not PendingToken.objects.exists()
    assert not Token.objects.exists()


def test_pending_swaps_are_looked_at_well_within_the_hour(admin_client, login_account, fake,
                                                          token_dir):
    from accounts import tasks
    from igregistry.celery import app

    entry = app.conf.beat_schedule["swap-pending-tokens"]
    assert entry["task"] == "accounts.tasks.swap_pending_tokens"
    assert entry["schedule"] <= timedelta(minutes=10)

    authorize_until_swap_fails(admin_client, login_account, fake)
    app.conf.task_always_eager = True  # run the enqueued swap here and now
    try:
        assert tasks.swap_pending_tokens() == {"swap": 1, "flagged": 0}
    finally:
        app.conf.task_always_eager = False
    token = Token.objects.get(account=login_account)
    assert (token_dir / token.account.username).read_text() == token.value
