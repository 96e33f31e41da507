"""Small fixes of issue 13: `bin/run` says a busy port before starting anything and leaves
nothing untracked in the checkout; `refresh_tokens --dry-run` says when nothing is due."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

BASE_DIR = Path(__file__).resolve().parent.parent


def test_bin_run_refuses_a_busy_port_before_starting_anything(tmp_path):
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind(("127.0.0.1", 8000))
        except OSError:
            pass  # something else holds it already: busy either way
        else:
            holder.listen()
        before = sorted(p.name for p in BASE_DIR.iterdir())
        done = subprocess.run(["bash", str(BASE_DIR / "bin" / "run")], capture_output=True,
                              text=True, timeout=60, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 1
    assert "Port 8000 on 127.0.0.1 is already in use" in done.stderr
    assert "Nothing was started" in done.stderr
    assert done.stdout == ""  # no migration, no worker, no .env written
    assert sorted(p.name for p in BASE_DIR.iterdir()) == before


def test_the_embedded_broker_keeps_its_control_folder_under_var_dir(tmp_path):
    # kombu's filesystem transport would otherwise make ./control in the checkout.
    code = ("from django.conf import settings; "
            "print(settings.CELERY_BROKER_TRANSPORT_OPTIONS['control_folder'])")
    env = {**os.environ, "CELERY_BROKER_URL": "filesystem://", "VAR_DIR": str(tmp_path),
           "DJANGO_SETTINGS_MODULE": "igregistry.settings_test"}
    done = subprocess.run([sys.executable, "-c", "import django; django.setup(); " + code],
                          cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip())
    assert folder.is_relative_to(tmp_path) and folder.is_dir()


@pytest.mark.django_db
def test_dry_run_says_when_nothing_is_due():
    out = StringIO()
    call_command("refresh_tokens", "--dry-run", stdout=out)
    assert "Nothing is due" in out.getvalue()
