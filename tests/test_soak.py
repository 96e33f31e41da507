"""The soak (bench/soak.py) in CI: 2,000 due accounts refreshed through real Celery
workers on Redis and PostgreSQL while the fake Instagram injects about 10% faults of
every kind and the soak kills workers, ends their database sessions and makes the token
directory unwritable. About 3.5 minutes on the project's 2-core machine.

Needs DATABASE_URL (PostgreSQL) and REDIS_URL: skipped locally without them, failing in
CI (CI=true), through `tests.conftest.require_service`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

BASE_DIR = Path(__file__).resolve().parent.parent
ACCOUNTS = 2000
SEED = 20251130


@pytest.mark.postgres
@pytest.mark.redis
def test_soak_loses_no_token_and_refreshes_none_twice(postgres, redis_url, tmp_path):
    figures_file = tmp_path / "soak.json"
    database = f"{connection.settings_dict['NAME']}_soak"  # beside the test database
    run = subprocess.run(
        [sys.executable, "bench/soak.py", "--accounts", str(ACCOUNTS), "--seed", str(SEED),
         "--database", database, "--redis-url", redis_url, "--json", str(figures_file)],
        cwd=BASE_DIR, env=dict(os.environ), capture_output=True, text=True, timeout=600,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert "soak: PASS" in run.stdout
    assert re.search(r"^lost tokens: 0$", run.stdout, re.M), output[-6000:]
    assert re.search(r"^duplicates: 0$", run.stdout, re.M), output[-6000:]

    figures = json.loads(figures_file.read_text())
    assert figures["accounts"] == ACCOUNTS
    refreshed = (figures["refreshed_exactly_once"] + figures["repeated_after_lost_answer"]
                 + figures["repeated_after_killed_worker"])
    assert refreshed == ACCOUNTS - figures["revoked_accounts"]
    assert figures["flagged"] == figures["flagged_with_reason"] == figures["revoked_accounts"]
    assert figures["files_mismatched_after_reconcile"] == 0
    # The faults really happened: every kind at Instagram, each of ours.
    assert set(figures["faults_by_kind"]) == {
        "timeout", "disconnect", "5xx", "rate_limit", "malformed", "expires_in", "trickle"
    }
    assert 0.05 * ACCOUNTS < figures["faults_injected"] < 0.2 * ACCOUNTS
    assert figures["side_faults"] == {"kill": 2, "child_kill": 1, "db_kill": 3, "unwritable": 2}
    assert figures["backends_terminated"] > 0
    assert figures["refresh_answers"].get("undelivered", 0) > 0  # ambiguous failures met
