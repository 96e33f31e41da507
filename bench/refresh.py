"""Benchmark: refresh N due long-lived tokens three ways, side by side, at a network's latency.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/13 \\
        .venv/bin/python bench/refresh.py [--accounts 1000] [--latency 0.1] [--scale 100000] \\
        [--loop-accounts N] [--profile docs/refresh-profile.txt] [--json figures.json]

The three paths, each on a fresh set of `--accounts` due tokens (50 days old, 10 left):
- loop: what a user writes by hand. Plain `requests`, one token after another: refresh at
  the fake, write the new token to a temporary file and rename it over the account's file
  (a process of its own). `--loop-accounts M` times it on M tokens only and scales its
  wall time to N (it is strictly sequential); the report says so;
- cron: `manage.py refresh_tokens` in a subprocess, default REFRESH_CONCURRENCY;
- celery: `celery -A igregistry worker --loglevel=INFO --concurrency=4` (the compose file's
  worker), started and idle first, then `accounts.tasks.refresh_sweep` sent through the
  broker; timed until every due account is refreshed.

Per path: wall time, tokens/s, the speed-up over the loop, CPU per refreshed token (user +
sys of the command or worker processes, and of the PostgreSQL backends serving them, read
from /proc: the server must run on this machine for the second figure) and the peak RSS
of the command or worker processes (a worker: the sum over its main and pool processes).
The loop and the command are timed from start to exit (interpreter and Django start-up
included); the workers from the sweep's sending, already started.

Then, at `--scale` accounts (bulk-inserted, 1% due, the rest refreshed lately, as in a
steady state): the due selection's time (median of 20) and its EXPLAIN (ANALYZE); and the
peak memory of a sweep (`accounts.tasks.refresh_sweep` run in a process of its own: the
selection, the queue markers, the chunks sent to the real broker, then purged) with 1%,
10% and 100% of the accounts due.

`--profile FILE`: the cron path once more (at most 500 accounts, every refresh call made
in the main thread, the fake's latency 0) under cProfile with a CPU clock;
the top entries go to FILE.

What runs: PostgreSQL (a database of its own, `--database`, created and dropped here;
DATABASE_URL only says where the server is), Redis (REDIS_URL; Celery's keys there are
removed before and after: give it a database nobody else uses), the fake Instagram in a
process of its own (`python -m tests.fake_instagram serve --latency`). Every process is
stopped and the database dropped on success, failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.soak import (  # noqa: E402
    KOMBU_KEYS,
    Cleanup,
    _children,
    _die_with_parent,
    _drop_database,
    run_cleanly,
)

CLIENT_ID, CLIENT_SECRET = "1000000000000001", "bench-app-secret-0123456789"
REDIRECT_URI = "https://registry.test.example/oauth/callback/"
DB_APP = "igregistry-bench"  # application_name of the measured processes' sessions
CLK_TCK = os.sysconf("SC_CLK_TCK")
PYTHON = sys.executable


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.1,
                        help="seconds the fake waits before answering each call")
    parser.add_argument("--loop-accounts", type=int, default=None,
                        help="time the hand-written loop on this many tokens only "
                        "(default: --accounts) and scale its wall time to --accounts")
    parser.add_argument("--scale", type=int, default=100_000,
                        help="accounts for the due selection and sweep memory (0: skip)")
    parser.add_argument("--paths", default="loop,cron,celery",
                        help="which paths to run, comma-separated")
    parser.add_argument("--profile", type=Path, help="write the cron path's CPU profile here")
    parser.add_argument("--database", default="igregistry_bench_refresh",
                        help="database created (and dropped) for the run")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""))
    parser.add_argument("--time-limit", type=float, default=1800,
                        help="seconds a path may take before the run gives up")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        parser.error("DATABASE_URL must point at a PostgreSQL server")
    if not args.redis_url.startswith("redis://"):
        parser.error("REDIS_URL (or --redis-url) must point at a Redis server")
    if args.loop_accounts is None or args.loop_accounts > args.accounts:
        args.loop_accounts = args.accounts
    return args


# --- /proc --------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a live process (all its threads), or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident set (VmHWM), KiB; 0 when unreadable."""
    with contextlib.suppress(OSError):
        match = re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
        if match:
            return int(match.group(1))
    return 0


class BackendCpu:
    """CPU of the PostgreSQL backends serving the measured processes (their sessions carry
    application_name DB_APP), sampled every 0.1 s from /proc. A backend that ends between
    two samples loses at most its last 0.1 s; None when /proc does not show them (the
    server runs elsewhere)."""

    def __init__(self) -> None:
        self.seen: dict[int, float] = {}  # pid: last CPU reading
        self.unreadable = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backend-cpu", daemon=True)

    def __enter__(self) -> BackendCpu:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        from django.db import connection

        try:
            while True:
                self.sample(connection)
                if self._stop.wait(0.1):
                    break
            self.sample(connection)
        finally:
            connection.close()

    def sample(self, connection) -> None:  # noqa: ANN001
        with connection.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                           " AND application_name = %s", [DB_APP])
            pids = [row[0] for row in cursor.fetchall()]
        for pid in pids:
            now = cpu_seconds(pid)
            if now is None:
                self.unreadable += 1
            else:
                self.seen[pid] = now

    def seconds(self, *, baseline: dict[int, float] | None = None) -> float | None:
        """CPU the sessions used: a session that existed before counts from its baseline,
        a new one from its start. None when no backend could be read."""
        if not self.seen:
            return None
        return sum(last - (baseline or {}).get(pid, 0.0) for pid, last in self.seen.items())


def backend_baseline() -> dict[int, float]:
    """CPU so far of the measured sessions that exist now (idle workers' connections)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                       " AND application_name = %s", [DB_APP])
        pids = [row[0] for row in cursor.fetchall()]
    return {pid: cpu for pid in pids if (cpu := cpu_seconds(pid)) is not None}


# --- the hand-written loop (run as `bench/refresh.py _loop URL TOKENS DIR`) -----------------


def hand_loop(url: str, tokens_file: str, out_dir: str) -> int:
    """What a user writes: one refresh after another with plain requests, each new token
    written to a temporary file renamed over the account's file."""
    import requests

    tokens = json.loads(Path(tokens_file).read_text())
    for username, token in tokens.items():
        answer = requests.get(f"{url}/refresh_access_token", timeout=30,
                              params={"grant_type": "ig_refresh_token", "access_token": token})
        answer.raise_for_status()
        new = answer.json()["access_token"]
        temporary = Path(out_dir, f".{username}.tmp")
        temporary.write_text(new)
        os.replace(temporary, Path(out_dir, username))
    return 0


# --- a sweep's memory (run as `bench/refresh.py _sweep`) ------------------------------------


def sweep_memory() -> int:
    """Run the sweep task's body in this process; print its RSS before and peak after."""
    import django

    django.setup()
    from django.db import connection

    from accounts.tasks import refresh_sweep

    connection.ensure_connection()
    before = int(re.search(r"^VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text(),
                           re.M).group(1))
    started = time.perf_counter()
    result = refresh_sweep()
    print(json.dumps({"rss_before_kib": before, "peak_rss_kib": peak_rss_kib(os.getpid()),
                      "seconds": time.perf_counter() - started, "enqueued": result["refresh"]}))
    return 0


# --- the cron path under cProfile (run as `bench/refresh.py _profile OUT`) -----------------


def profile_cron(out: str) -> int:
    """refresh_tokens under cProfile with a CPU clock; stats to OUT. Rounds of the default
    REFRESH_CONCURRENCY as in production, but each round's calls made one after another
    in the main thread (cProfile sees only that thread): the same work, all of it seen."""
    import cProfile
    import io
    import pstats

    import django

    django.setup()
    from django.core.management import call_command

    from accounts.services import refresh

    refresh._Calls.refresh_all = lambda self, values: ([self._one(v) for v in values], None)
    refresh._in_threads = lambda run, chunks, workers: (
        item for chunk in chunks for item in run.refresh(chunk))
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    with open(os.devnull, "w") as quiet:
        call_command("refresh_tokens", stdout=quiet)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).strip_dirs()
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(45)
    Path(out).write_text(text.getvalue())
    return 0


# --- the run ------------------------------------------------------------------------------


class Run:
    """State shared by the steps of one benchmark run."""

    def __init__(self, args: argparse.Namespace, cleanup: Cleanup) -> None:
        self.args, self.cleanup = args, cleanup
        self.workdir = Path(tempfile.mkdtemp(prefix="igregistry-bench-refresh-"))
        cleanup.push("remove the run directory", self._rmtree)
        self.procs: list[subprocess.Popen] = []
        cleanup.push("stop every process started", self._stop_all)
        self.fake_url = ""
        self.env: dict[str, str] = {}

    def _rmtree(self) -> None:
        import shutil

        shutil.rmtree(self.workdir, ignore_errors=True)

    def _stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        end = time.monotonic() + 10
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
                proc.wait(max(end - time.monotonic(), 0.1))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # and whatever it left behind
            with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
                proc.wait(5)

    def spawn(self, argv: list[str], log: str, env: dict[str, str] | None = None
              ) -> subprocess.Popen:
        """A child in its own process group, killed if this script dies uncleanly."""
        with open(self.workdir / log, "ab") as out:
            proc = subprocess.Popen(argv, cwd=BASE_DIR, env=env or self.env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, preexec_fn=_die_with_parent)
        self.procs.append(proc)
        return proc

    def wait_rusage(self, proc: subprocess.Popen, timeout: float) -> tuple[int, float, int]:
        """Wait for a child; its exit code, CPU seconds (user + sys, all threads) and peak
        RSS (KiB), from wait4."""
        end = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                return proc.returncode, usage.ru_utime + usage.ru_stime, usage.ru_maxrss
            if time.monotonic() > end:
                raise TimeoutError(f"{proc.args[:3]} still running after {timeout:.0f} s")
            time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_loop"]:
        return hand_loop(*argv[1:4])
    if argv[:1] == ["_sweep"]:
        return sweep_memory()
    if argv[:1] == ["_profile"]:
        return profile_cron(argv[1])
    return run_cleanly(run, parse_args(argv), "bench")


def run(args: argparse.Namespace, cleanup: Cleanup) -> int:
    bench = Run(args, cleanup)
    from cryptography.fernet import Fernet

    # Production settings (DEBUG off, REFRESH_CONCURRENCY and chunks at their defaults),
    # with throwaway secrets; the same for this script and every process it starts.
    os.environ["DJANGO_SETTINGS_MODULE"] = "igregistry.settings"
    os.environ.update({
        "DEBUG": "false", "SECRET_KEY": Fernet.generate_key().decode(),
        "ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "SITE_URL": "https://registry.test.example", "CELERY_BROKER_URL": args.redis_url,
        "VAR_DIR": str(bench.workdir / "var"), "TOKEN_EXPORT_DIR": str(bench.workdir / "none"),
        "LOG_LEVEL": "WARNING",
    })
    for name in ("REFRESH_CONCURRENCY", "REFRESH_CHUNK_SIZE"):
        os.environ.pop(name, None)
    import django

    django.setup()
    import redis
    from django.conf import settings
    from django.db import connection

    from igregistry.celery import app as celery_app

    # --- the fake, the database, the broker ---------------------------------------------
    fake = bench.spawn([PYTHON, "-m", "tests.fake_instagram", "serve", "--port", "0",
                        "--latency", str(args.latency)], "fake.log", env=dict(os.environ))
    bench.fake_url = _fake_url(bench.workdir / "fake.log", fake)
    print(f"bench: fake Instagram at {bench.fake_url}, latency {args.latency * 1000:.0f} ms",
          flush=True)
    control = f"{bench.fake_url}/_fake"
    import requests

    requests.post(f"{control}/apps", timeout=10, json={
        "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uris": [REDIRECT_URI]})

    connection.settings_dict["TEST"]["NAME"] = args.database
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    cleanup.push("drop the database", lambda: _drop_database(connection, old_name))
    broker = redis.Redis.from_url(args.redis_url)
    broker.delete(*KOMBU_KEYS)
    cleanup.push("empty the broker", lambda: broker.delete(*KOMBU_KEYS))

    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="") + (
        ":" + quote(db["PASSWORD"], safe="") if db.get("PASSWORD") else "")
    bench.env = dict(os.environ)
    bench.env.update({
        "PYTHONPATH": str(BASE_DIR), "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:"
                        f"{db['PORT'] or 5432}/{db['NAME']}?application_name={DB_APP}",
        "INSTAGRAM_API_URL": bench.fake_url, "INSTAGRAM_WWW_URL": bench.fake_url,
        "INSTAGRAM_GRAPH_URL": bench.fake_url,
    })
    print(f"bench: database {db['NAME']}; REFRESH_CONCURRENCY {settings.REFRESH_CONCURRENCY}, "
          f"REFRESH_CHUNK_SIZE {settings.REFRESH_CHUNK_SIZE}; {os.cpu_count()} CPUs", flush=True)

    figures: dict = {"accounts": args.accounts, "latency_s": args.latency,
                     "cpus": os.cpu_count(), "paths": {}}
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if "loop" in paths:
        figures["paths"]["loop"] = path_loop(bench, control)
    if "cron" in paths:
        figures["paths"]["cron"] = path_cron(bench, control)
    if "celery" in paths:
        figures["paths"]["celery"] = path_celery(bench, control, celery_app)
    if args.profile:
        figures["profile"] = str(args.profile)
        profile(bench, control)
    if args.scale:
        figures["scale"] = at_scale(bench, broker)
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def _fake_url(log: Path, proc: subprocess.Popen) -> str:
    end = time.monotonic() + 20
    while time.monotonic() < end:
        match = re.search(r"listening on (http://\S+)", log.read_text())
        if match:
            return match.group(1)
        if proc.poll() is not None:
            raise RuntimeError(f"the fake Instagram did not start: {log.read_text()}")
        time.sleep(0.05)
    raise RuntimeError("the fake Instagram did not start within 20 s")


def mint(control: str, usernames: list[str]) -> dict[str, str]:
    """Long-lived tokens 50 days old at the fake (due: 10 days left), by username."""
    import requests

    tokens: dict[str, str] = {}
    for start in range(0, len(usernames), 1000):
        part = usernames[start:start + 1000]
        answer = requests.post(f"{control}/tokens", timeout=60, json={
            "client_id": CLIENT_ID, "usernames": part, "age_days": 50})
        answer.raise_for_status()
        tokens.update(zip(part, answer.json()["access_tokens"], strict=True))
    return tokens


def bench_app():  # noqa: ANN201
    """The benchmark's Instagram app (created on first use)."""
    from accounts.models import InstagramApp

    app, _ = InstagramApp.objects.get_or_create(
        app_id=CLIENT_ID, defaults={"name": "Bench", "flavour": "instagram_login",
                                    "app_secret": CLIENT_SECRET, "redirect_uri": REDIRECT_URI})
    return app


def seed(bench: Run, control: str, tag: str, count: int, token_dir: Path) -> None:
    """A fresh set of `count` due accounts (the previous path's are deleted), their files
    written once (as in a running registry: the refresh rewrites a file it owns)."""
    from django.utils import timezone

    from accounts import services
    from accounts.models import Account, Token
    from accounts.services import Actor

    Account.objects.all().delete()
    app = bench_app()
    tokens = mint(control, [f"{tag}_{i:06d}" for i in range(count)])
    now = timezone.now()
    accounts = Account.objects.bulk_create(
        Account(app=app, label=f"Feed {u}", username=u, status=Account.Status.ACTIVE,
                ig_id=str(17841400000000000 + i))
        for i, u in enumerate(tokens)
    )
    Token.objects.bulk_create(
        Token(account=a, value=tokens[a.username], kind=Token.Kind.LONG,
              obtained_at=now - timedelta(days=50), expires_at=now + timedelta(days=10))
        for a in accounts
    )
    token_dir.mkdir()
    with _settings(TOKEN_EXPORT_DIR=str(token_dir)):
        services.token_files_reconcile(actor=Actor(job="bench"), now=now)


@contextlib.contextmanager
def _settings(**values: str):  # noqa: ANN202
    from django.test import override_settings

    with override_settings(**values):
        yield


def refreshed_since(since) -> int:  # noqa: ANN001
    from accounts.models import Token

    return Token.objects.filter(last_refreshed_at__gte=since).count()


def path_loop(bench: Run, control: str) -> dict:
    n, m = bench.args.accounts, bench.args.loop_accounts
    print(f"bench: loop: {m} tokens one after another", flush=True)
    tokens = mint(control, [f"loop_{i:06d}" for i in range(m)])
    out = bench.workdir / "tokens-loop"
    out.mkdir()
    for username, token in tokens.items():  # the files exist, as for the registry
        (out / username).write_text(token)
    tokens_file = bench.workdir / "loop-tokens.json"
    tokens_file.write_text(json.dumps(tokens))
    started = time.monotonic()
    proc = bench.spawn([PYTHON, __file__, "_loop", bench.fake_url, str(tokens_file), str(out)],
                       "loop.log")
    code, cpu, rss = bench.wait_rusage(proc, bench.args.time_limit)
    wall = time.monotonic() - started
    if code != 0:
        raise RuntimeError(f"the loop failed: {(bench.workdir / 'loop.log').read_text()[-2000:]}")
    fresh = sum(1 for u, t in tokens.items() if (out / u).read_text() != t)
    if fresh != m:
        raise RuntimeError(f"the loop refreshed {fresh} of {m} files")
    return {"wall_s": wall * n / m, "measured_wall_s": wall, "measured_tokens": m,
            "refreshed": n, "cpu_s": cpu * n / m, "db_cpu_s": 0.0, "peak_rss_kib": rss}


def path_cron(bench: Run, control: str) -> dict:
    from django.utils import timezone

    n = bench.args.accounts
    seed(bench, control, "cron", n, bench.workdir / "tokens-cron")
    print(f"bench: cron: manage.py refresh_tokens over {n} due accounts", flush=True)
    env = dict(bench.env, TOKEN_EXPORT_DIR=str(bench.workdir / "tokens-cron"))
    since = timezone.now()
    with BackendCpu() as backends:
        started = time.monotonic()
        proc = bench.spawn([PYTHON, "manage.py", "refresh_tokens"], "cron.log", env=env)
        code, cpu, rss = bench.wait_rusage(proc, bench.args.time_limit)
        wall = time.monotonic() - started
    refreshed = refreshed_since(since)
    if code != 0 or refreshed != n:
        tail = (bench.workdir / "cron.log").read_text()[-2000:]
        raise RuntimeError(f"refresh_tokens exited {code}, refreshed {refreshed} of {n}: {tail}")
    return {"wall_s": wall, "refreshed": refreshed, "cpu_s": cpu,
            "db_cpu_s": backends.seconds(), "peak_rss_kib": rss}


def path_celery(bench: Run, control: str, celery_app) -> dict:  # noqa: ANN001
    from django.utils import timezone

    n = bench.args.accounts
    token_dir = bench.workdir / "tokens-celery"
    seed(bench, control, "celery", n, token_dir)
    env = dict(bench.env, TOKEN_EXPORT_DIR=str(token_dir))
    celery = Path(PYTHON).with_name("celery")
    # docker-compose.yml's worker command.
    worker = bench.spawn([str(celery), "-A", "igregistry", "worker", "--loglevel=INFO",
                          "--concurrency=4"], "worker.log", env=env)
    log = bench.workdir / "worker.log"
    end = time.monotonic() + 60
    while " ready." not in log.read_text(errors="replace"):
        if worker.poll() is not None or time.monotonic() > end:
            raise RuntimeError(f"the worker did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    time.sleep(1)  # the pool's processes are up and waiting
    pids = [worker.pid, *_children(worker.pid)]
    print(f"bench: celery: 1 worker, {len(pids) - 1} pool processes; sweep over {n} due "
          f"accounts", flush=True)
    cpu_before = {pid: cpu_seconds(pid) or 0.0 for pid in pids}
    baseline = backend_baseline()
    since = timezone.now()
    with BackendCpu() as backends:
        started = time.monotonic()
        celery_app.send_task("accounts.tasks.refresh_sweep")
        refreshed = 0
        while time.monotonic() - started < bench.args.time_limit:
            refreshed = refreshed_since(since)
            if refreshed >= n:
                break
            time.sleep(0.1)
        wall = time.monotonic() - started
        pids = sorted(set(pids) | set(_children(worker.pid)))
        cpu = sum((cpu_seconds(pid) or 0.0) - cpu_before.get(pid, 0.0) for pid in pids)
        rss = sum(peak_rss_kib(pid) for pid in pids)
    os.killpg(worker.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        worker.wait(30)
    if refreshed < n:
        raise RuntimeError(f"the workers refreshed {refreshed} of {n} within the time limit")
    return {"wall_s": wall, "refreshed": refreshed, "cpu_s": cpu,
            "db_cpu_s": backends.seconds(baseline=baseline), "peak_rss_kib": rss,
            "processes": len(pids)}


def profile(bench: Run, control: str) -> None:
    import requests

    n = min(bench.args.accounts, 500)
    token_dir = bench.workdir / "tokens-profile"
    seed(bench, control, "prof", n, token_dir)
    print(f"bench: profiling refresh_tokens (calls in the main thread, latency 0) over {n} "
          f"accounts",
          flush=True)
    requests.post(f"{control}/settings", json={"latency": 0}, timeout=10)
    try:
        out = bench.workdir / "profile.txt"
        proc = bench.spawn([PYTHON, __file__, "_profile", str(out)], "profile.log",
                           env=dict(bench.env, TOKEN_EXPORT_DIR=str(token_dir)))
        code, _cpu, _rss = bench.wait_rusage(proc, bench.args.time_limit)
        if code != 0:
            raise RuntimeError((bench.workdir / "profile.log").read_text()[-2000:])
        header = (f"cProfile (CPU clock) of `manage.py refresh_tokens` over {n} due accounts "
                  f"(rounds of REFRESH_CONCURRENCY, their calls one after another in the main "
                  f"thread), fake latency 0; written by bench/refresh.py --profile.\n\n")
        bench.args.profile.write_text(header + out.read_text())
    finally:
        requests.post(f"{control}/settings", json={"latency": bench.args.latency}, timeout=10)


def at_scale(bench: Run, broker) -> dict:  # noqa: ANN001
    """The due selection and a sweep's memory over `--scale` accounts."""
    from django.db import connection
    from django.utils import timezone

    from accounts import selectors
    from accounts.models import Account, Token

    total = bench.args.scale
    print(f"bench: {total} accounts for the due selection and the sweep", flush=True)
    Account.objects.all().delete()
    app = bench_app()
    now = timezone.now()
    due_every = 100  # 1% due; the rest refreshed within the last 10 days
    for start in range(0, total, 10_000):
        stop = min(start + 10_000, total)
        accounts = Account.objects.bulk_create(
            Account(app=app, label=f"Scale {i}", username=f"scale_{i:06d}",
                    status=Account.Status.ACTIVE, ig_id=str(17841400000000000 + i))
            for i in range(start, stop)
        )
        tokens = []
        for i, a in enumerate(accounts, start):
            if i % due_every == 0:
                expires = now + timedelta(days=10, minutes=i % 1440)
            else:
                expires = now + timedelta(days=50, seconds=1 + (i * 86400 * 10) // total)
            tokens.append(Token(account=a, value=f"IGAA{i:0150d}", kind=Token.Kind.LONG,
                                obtained_at=expires - timedelta(days=60), expires_at=expires))
        Token.objects.bulk_create(tokens)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    due = selectors.tokens_due(now=timezone.now()).values_list("account_id", flat=True)
    count = len(list(due))
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        list(selectors.tokens_due(now=timezone.now()).values_list("account_id", flat=True))
        timings.append(time.perf_counter() - started)
    plan = selectors.tokens_due(now=timezone.now()).values_list("account_id", flat=True
                                                                ).explain(analyze=True)
    result = {"accounts": total, "due": count,
              "selection_median_ms": statistics.median(timings) * 1000,
              "selection_max_ms": max(timings) * 1000, "explain": plan,
              "uses_expires_at_index": "token_expires_at_idx" in plan, "sweeps": []}

    def make_due(share: int) -> int:
        """Make every `share`-th account due (the others not); clear the queue markers."""
        moment = timezone.now()
        Token.objects.update(refresh_queued_for=None,
                             expires_at=moment + timedelta(days=55),
                             obtained_at=moment - timedelta(days=5))
        ids = list(Token.objects.order_by("pk").values_list("pk", flat=True)[::share])
        for start in range(0, len(ids), 10_000):
            Token.objects.filter(pk__in=ids[start:start + 10_000]).update(
                expires_at=moment + timedelta(days=10), obtained_at=moment - timedelta(days=50))
        return len(ids)

    for share in (100, 10, 1):
        due_now = make_due(share)
        broker.delete(*KOMBU_KEYS)
        proc = bench.spawn([PYTHON, __file__, "_sweep"], "sweep.log",
                           env=dict(bench.env, TOKEN_EXPORT_DIR=str(bench.workdir / "none")))
        code, _cpu, _rss = bench.wait_rusage(proc, bench.args.time_limit)
        lines = (bench.workdir / "sweep.log").read_text().strip().splitlines()
        if code != 0:
            raise RuntimeError("\n".join(lines[-30:]))
        measured = json.loads(lines[-1])
        messages = broker.llen("celery")
        broker.delete(*KOMBU_KEYS)
        measured.update({"due": due_now, "messages": messages})
        result["sweeps"].append(measured)
        print(f"bench: sweep with {due_now} due: peak RSS {measured['peak_rss_kib'] / 1024:.0f}"
              f" MiB (+{(measured['peak_rss_kib'] - measured['rss_before_kib']) / 1024:.1f}), "
              f"{measured['seconds']:.2f} s, {messages} messages", flush=True)
        (bench.workdir / "sweep.log").unlink()
    return result


def report(figures: dict) -> None:
    paths = figures["paths"]
    loop = paths.get("loop")
    n = figures["accounts"]
    print(f"\n{n} due accounts, fake latency {figures['latency_s'] * 1000:.0f} ms, "
          f"{figures['cpus']} CPUs")
    print(f"{'path':8} {'wall s':>8} {'tokens/s':>9} {'x loop':>7} {'CPU ms/token':>13} "
          f"{'(proc':>6} {'+ db)':>6} {'x loop CPU':>10} {'peak RSS MiB':>13}")
    for name, p in paths.items():
        db = p["db_cpu_s"]
        cpu_ms = (p["cpu_s"] + (db or 0.0)) / p["refreshed"] * 1000
        ratio = f"{loop['wall_s'] / p['wall_s']:.1f}" if loop else "-"
        cpu_ratio = (f"{cpu_ms / (loop['cpu_s'] / loop['refreshed'] * 1000):.1f}"
                     if loop and loop["cpu_s"] else "-")
        db_ms = "n/a" if db is None else f"{db / p['refreshed'] * 1000:.1f}"
        print(f"{name:8} {p['wall_s']:8.1f} {p['refreshed'] / p['wall_s']:9.1f} {ratio:>7} "
              f"{cpu_ms:13.2f} {p['cpu_s'] / p['refreshed'] * 1000:6.2f} {db_ms:>6} "
              f"{cpu_ratio:>10} {p['peak_rss_kib'] / 1024:13.0f}")
    if loop and loop["measured_tokens"] != n:
        print(f"(loop: measured on {loop['measured_tokens']} tokens in "
              f"{loop['measured_wall_s']:.1f} s, scaled to {n})")
    scale = figures.get("scale")
    if scale:
        print(f"\ndue selection at {scale['accounts']} accounts ({scale['due']} due): median "
              f"{scale['selection_median_ms']:.1f} ms, max {scale['selection_max_ms']:.1f} ms, "
              f"expires_at index {'used' if scale['uses_expires_at_index'] else 'NOT used'}")
        print(scale["explain"])
        print(f"\nsweep over {scale['accounts']} accounts (one process, selection + markers + "
              f"enqueueing):")
        for s in scale["sweeps"]:
            print(f"  {s['due']:>7} due: {s['seconds']:6.2f} s, "
                  f"RSS {s['rss_before_kib'] / 1024:.0f} MiB before, "
                  f"peak {s['peak_rss_kib'] / 1024:.0f} MiB "
                  f"(+{(s['peak_rss_kib'] - s['rss_before_kib']) / 1024:.1f}), "
                  f"{s['messages']} messages")


if __name__ == "__main__":
    sys.exit(main())
