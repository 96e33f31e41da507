"""Benchmark: render the expiry dashboard for N accounts; prints SQL queries and timings.

    .venv/bin/python bench/dashboard.py [--accounts 10000] [--runs 20]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench .venv/bin/python bench/dashboard.py

Runs against a throwaway test database (created and destroyed here), like the test suite.
Figures are in README ("Dashboard, alerts, health and metrics").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "igregistry.settings_test")
# The static files directory is not collected for a benchmark.
warnings.filterwarnings("ignore", message="No directory at")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402
from django.urls import reverse  # noqa: E402
from django.utils import timezone  # noqa: E402

from accounts.models import Account, InstagramApp, Token  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    setup_test_environment()
    name = connection.creation.create_test_db(verbosity=0)
    try:
        now = timezone.now()
        app = InstagramApp.objects.create(name="Bench", flavour="instagram_login", app_id="1",
                                          app_secret="bench-secret-value",
                                          redirect_uri="https://example.com/cb/")
        accounts = Account.objects.bulk_create(
            Account(app=app, label=f"Account {i}", username=f"user{i}", status="active",
                    ig_id=str(17841400000000000 + i))
            for i in range(args.accounts)
        )
        Token.objects.bulk_create(
            Token(account=a, value=f"IGAA{i}", kind="long",
                  obtained_at=now - timedelta(days=i % 59),
                  expires_at=now + timedelta(days=60 - i % 61, minutes=5))
            for i, a in enumerate(accounts)
        )
        admin = get_user_model().objects.create_superuser("bench", "", "bench-password")
        client = Client()
        client.force_login(admin)
        url = reverse("admin:accounts_account_dashboard")
        client.get(url)  # warm up
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code == 200
        query_count = len(queries)  # now: the next request clears the connection's log
        seconds = []
        for _ in range(args.runs):
            started = time.perf_counter()
            client.get(url, {"page": 2})
            seconds.append(time.perf_counter() - started)
        print(f"{connection.vendor}: {args.accounts} accounts, {query_count} SQL queries, "
              f"median {statistics.median(seconds) * 1000:.0f} ms, "
              f"max {max(seconds) * 1000:.0f} ms over {args.runs} renders")
    finally:
        connection.creation.destroy_test_db(name, verbosity=0)


if __name__ == "__main__":
    main()
