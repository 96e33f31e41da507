"""The structure that keeps the sweep cheap at scale (timings: bench/refresh.py).

The due selection must reach the due tokens through the expires_at index, not by reading
every token: at 100,000 accounts a sweep then reads the ~1% that are due.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import selectors, services
from accounts.models import Account, InstagramApp, Token
from accounts.services import Actor, Outcome
from tests.conftest import active_account

ACCOUNTS = 2000


def test_due_selection_uses_the_expires_at_index(postgres) -> None:  # noqa: ANN001
    now = timezone.now()
    app = InstagramApp.objects.create(
        name="Scale", flavour="instagram_login", app_id="1000000000000001",
        app_secret="scale-app-secret-0123456789", redirect_uri="https://example.com/cb/",
    )
    accounts = Account.objects.bulk_create(
        Account(app=app, label=f"Scale {i}", username=f"scale_{i}", status="active",
                ig_id=str(17841400000000000 + i))
        for i in range(ACCOUNTS)
    )
    # A steady state: 1% due (10 days left), the rest refreshed within the last 10 days.
    Token.objects.bulk_create(
        Token(account=a, value=f"IGAA{i:040d}", kind="long",
              obtained_at=expires - timedelta(days=60), expires_at=expires)
        for i, a in enumerate(accounts)
        for expires in [now + (timedelta(days=10) if i % 100 == 0
                               else timedelta(days=50, minutes=1 + i * 7))]
    )
    due = selectors.tokens_due(now=now).values_list("account_id", flat=True)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE accounts_token")
        cursor.execute("ANALYZE accounts_account")
        # The planner's choice between a scan of 2,000 rows and the index is a matter of
        # costs; with sequential scans priced out it shows whether the index is usable
        # for this query at all (the benchmark shows it chosen at 100,000).
        cursor.execute("SET LOCAL enable_seqscan = off")
    plan = due.explain()
    assert "token_expires_at_idx" in plan, plan
    # The accounts' status is read per due token through their primary key, never by
    # scanning (or hashing) every account.
    assert "accounts_account_pkey" in plan and "Hash" not in plan, plan
    index_line = next(line for line in plan.splitlines() if "token_expires_at_idx" in line)
    condition = plan.splitlines()[plan.splitlines().index(index_line) + 1]
    assert "Index Cond" in condition and "expires_at" in condition, plan
    assert len(list(due)) == ACCOUNTS // 100


# --- the refresh: queries per round, not per token -------------------------------------


def exported_accounts(fake, app, n: int, prefix: str) -> list[int]:  # noqa: ANN001
    return [active_account(fake, app, f"{prefix} {i}", exported=True).pk for i in range(n)]


def refresh_queries(ids: list[int], *, concurrency: int) -> tuple[int, set[str]]:
    with CaptureQueriesContext(connection) as queries:
        results = dict(services.tokens_refresh_many(
            account_ids=ids, actor=Actor(job="test"), now=timezone.now(),
            concurrency=concurrency))
    assert set(results.values()) == {services.RefreshResult(Outcome.REFRESHED)}
    # Statements, not the test transaction's savepoints (BEGIN and COMMIT in production).
    statements = [q for q in queries if q["sql"].split()[0] not in {"SAVEPOINT", "RELEASE"}]
    return len(statements), {q["sql"].split()[0] for q in statements}


def test_a_round_costs_the_same_queries_for_2_accounts_or_12(fake, login_app, settings):
    settings.REFRESH_CHUNK_SIZE = 64
    few = refresh_queries(exported_accounts(fake, login_app, 2, "Few"), concurrency=16)
    many = refresh_queries(exported_accounts(fake, login_app, 12, "Many"), concurrency=16)
    assert many[0] == few[0], (few, many)
    # Per round: lock, re-check, pause, claim; held, tokens, accounts, events, release;
    # files: accounts, token files, written, file state, events.
    assert few[0] <= 14, few
    # Rounds of the concurrency: 12 accounts 4 at a time cost three rounds' queries.
    rounds = refresh_queries(exported_accounts(fake, login_app, 12, "Rounds"), concurrency=4)
    assert rounds[0] == 3 * few[0], (few, rounds)


def test_the_sweep_reads_the_due_accounts_page_by_page(login_app, settings):
    now = timezone.now()
    for i in range(12):
        account = Account.objects.create(app=login_app, label=f"Page {i}", status="active")
        Token.objects.create(account=account, value=f"IGAA{i:040d}", kind="long",
                             obtained_at=now - timedelta(days=50),
                             expires_at=now + timedelta(days=10, minutes=i))
    plan = services.refresh_sweep(actor=Actor(job="test"), now=now)
    with CaptureQueriesContext(connection) as queries:
        pages = plan.refresh_pages(5)
        first = next(pages)
        if connection.vendor == "postgresql":
            # The rest is still on the server, behind a cursor, while the first page is out.
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_cursors")
                assert cursor.fetchone()[0] == 1
        pages = [first, *pages]
    assert [len(page) for page in pages] == [5, 5, 2]
    selections = [q for q in queries if "accounts_token" in q["sql"]]
    assert len(selections) == 1  # one query, read in pages
    # Soonest expiry first, each account once.
    ids = [i for page in pages for i in page]
    assert ids == sorted(ids) and len(set(ids)) == 12
