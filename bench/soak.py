"""Soak: refresh many due accounts through real Celery workers while everything fails.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/14 \\
        .venv/bin/python bench/soak.py [--accounts 2000] [--fault-rate 0.1] [--seed N] \\
        [--workers 2] [--concurrency 4] [--database igregistry_soak] [--json figures.json]

What runs, all on this machine:
- PostgreSQL: a database of its own (`--database`, created and dropped here through
  Django's test database machinery; DATABASE_URL only says where the server is);
- Redis (REDIS_URL): the broker. The script removes Celery's keys there before and after;
  give it a database number nobody else uses;
- `celery -A igregistry worker` processes (prefork pool), as the compose file runs them,
  each refreshing its chunks (8 accounts) in rounds of 4 calls at once;
- the project's fake Instagram in a thread of this process, over real HTTP, in its seeded
  chaos mode: about `--fault-rate` of the refresh calls time out, are reset, answer 5xx,
  are rate-limited (a short pause), answer a malformed body (garbage, cut JSON, a token
  with a newline or NUL, JSON nested 5,000 deep, 1 MiB, an absurd or missing
  `expires_in`) or trickle their answer past the client's deadline;
- this script plays beat: it sends `accounts.tasks.refresh_sweep` through the broker
  whenever the queue is empty (beat's hourly schedule would make the run last hours);
- on our side, at points of the run drawn from the seed: a worker killed with SIGKILL
  (whole process group; a new one is started), a pool process killed with SIGKILL, every
  worker's PostgreSQL session ended with pg_terminate_backend, and the token directory
  made unwritable for a few seconds.

A small share of the accounts (`--revoked`) had their app removed by the owner before the
run: Instagram refuses their token (190), and they must end "needs re-authorization".

Once every other account is refreshed, the workers stop, one fresh worker drains what is
left in the broker (the messages a killed worker held come back after the visibility
timeout), one reconcile pass runs, and the checks below are printed as figures. Exit
status 1 when an invariant fails.

"Refreshed exactly once", decided at the fake (its refresh ledger), not from our logs:
Instagram keeps the old token valid after a refresh (the fake does, as the refresh tests
show; instagram-api.md only says the answer may carry the same string or a new one), and
its refresh endpoint has no idempotency key. So when an answer is lost after Instagram
rotated the token (the client timed out, a trickle outlived the deadline, the body came
back corrupt), no client can know the refresh happened: it must ask again with the old
token, and Instagram refreshes twice. That repeat is allowed, counted apart, and only
when the fake itself saw the answer fail to reach a connected client or carry a readable
token. Everything else is a duplicate:
- exactly once: one refresh at Instagram, its answer delivered, its token stored;
- repeated after a lost answer: one delivered answer, whose token is stored, plus refreshes
  whose answers the fake knows never arrived usable;
- duplicate (fails the run): two delivered answers for one account (the registry got a new
  token and asked again, e.g. a worker or its database session died between Instagram's
  answer and the commit), a refresh of a token this run issued (refreshing an already
  refreshed account), or two successful refresh events recorded for one account.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from tests.fake_instagram import FakeInstagram

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

REFRESH = "/refresh_access_token"
WORKER_DB_APP = "igregistry-soak-worker"
CLIENT_ID, CLIENT_SECRET = "1000000000000001", "soak-app-secret-0123456789"
# The client's timeouts in the run, and the fake's faults measured against them.
READ_TIMEOUT, DEADLINE = 1.0, 2.0
VISIBILITY_TIMEOUT = 8
ROUND = 4  # REFRESH_CONCURRENCY of the workers (the fake, in this process, serves them all)
KOMBU_KEYS = ("celery", "unacked", "unacked_index", "unacked_mutex")
# Database errors a task may raise when the soak ends its PostgreSQL session under it.
DB_GONE = {"OperationalError", "InterfaceError"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--fault-rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--revoked", type=float, default=0.01,
                        help="share of accounts whose token Instagram refuses (190)")
    parser.add_argument("--kills", type=int, default=2, help="workers killed with SIGKILL")
    parser.add_argument("--child-kills", type=int, default=1,
                        help="pool processes killed with SIGKILL")
    parser.add_argument("--db-kills", type=int, default=3,
                        help="times every worker's PostgreSQL session is terminated")
    parser.add_argument("--unwritable", type=int, default=2,
                        help="times the token directory is unwritable for 3 s")
    parser.add_argument("--database", default="igregistry_soak",
                        help="database created (and dropped) for the run")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""))
    parser.add_argument("--time-limit", type=float, default=900,
                        help="seconds for the refresh phase before giving up")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true",
                        help="keep the database and the run directory (for a post-mortem)")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 10**6)
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        parser.error("DATABASE_URL must point at a PostgreSQL server")
    if not args.redis_url.startswith("redis://"):
        parser.error("REDIS_URL (or --redis-url) must point at a Redis server")
    return args


class Cleanup:
    """Undo steps run once, newest first: on success, failure, Ctrl-C or SIGTERM."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, object]] = []

    def push(self, what: str, step) -> None:  # noqa: ANN001
        self.steps.append((what, step))

    def run(self) -> None:
        while self.steps:
            what, step = self.steps.pop()
            try:
                step()
            except Exception as exc:  # keep undoing the rest
                print(f"cleanup: {what} failed: {exc!r}", file=sys.stderr)


try:  # loaded here: the child between fork and exec only makes the call
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent() -> None:
    """In a worker's main process: SIGKILL it if this script dies without cleaning up."""
    if _prctl is not None:
        _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Workers:
    """The `celery worker` processes of the run, each in its own process group."""

    def __init__(self, env: dict[str, str], logs: Path, concurrency: int) -> None:
        self.env, self.logs, self.concurrency = env, logs, concurrency
        self.procs: dict[str, subprocess.Popen] = {}
        self.count = 0

    def start(self) -> str:
        self.count += 1
        name = f"soak{self.count}"
        celery = Path(sys.executable).with_name("celery")
        with open(self.logs / f"{name}.log", "wb") as out:
            self.procs[name] = subprocess.Popen(
                [str(celery), "-A", "igregistry", "worker", "--pool=prefork",
                 f"--concurrency={self.concurrency}", "--loglevel=WARNING",
                 "--without-mingle", "--without-gossip", "-n", f"{name}@%h"],
                cwd=BASE_DIR, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent,
            )
        return name

    def pids(self) -> list[int]:
        """Every worker process now: the main ones and their pools."""
        mains = [p.pid for p in self.procs.values() if p.poll() is None]
        return mains + [c for pid in mains for c in _children(pid)]

    def alive(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None]

    def kill(self, name: str) -> list[int]:
        """SIGKILL the worker and its pool: no warm shutdown, nothing handed back.
        Returns the processes killed."""
        pid = self.procs[name].pid
        victims = [pid, *_children(pid)]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        self.procs[name].wait(10)
        return victims

    def kill_child(self, name: str) -> list[int]:
        """SIGKILL one pool process of the worker (the pool starts another)."""
        children = _children(self.procs[name].pid)
        if not children:
            return []
        with contextlib.suppress(ProcessLookupError):
            os.kill(children[0], signal.SIGKILL)
        return children[:1]

    def stop_all(self, wait: float = 60) -> None:
        """Warm shutdown (running tasks finish, held messages go back), then SIGKILL."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        end = time.monotonic() + wait
        for proc in self.procs.values():
            try:
                proc.wait(max(end - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        for proc in self.procs.values():  # a pool process left behind goes too
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def task_errors(self) -> Counter:
        """Exceptions tasks raised, by type, from the workers' logs."""
        found: Counter = Counter()
        for log in self.logs.glob("soak*.log"):
            for match in re.finditer(r"raised unexpected: (\w+)", log.read_text(errors="replace")):
                found[match.group(1)] += 1
        return found


class ClientNamer:
    """Names the fake's client by process id: the worker process whose TCP connection to
    the fake has the client's port (Linux /proc), looked up while it is connected. So
    the refresh ledger says which answers went to a process the soak then killed."""

    def __init__(self, server_port: int) -> None:
        self.server_port = server_port
        self.pids: list[int] = []  # worker processes, kept current by the main loop

    def __call__(self, address: tuple[str, int]) -> str:
        """"pid:<pid>" for the process holding the client's socket; "gone:<host>:<port>"
        when no process holds it any more (the client died, e.g. SIGKILLed while this
        looked: seen in CI, where the scan took longer than the 100 ms between the
        answer and the kill); "<host>:<port>" when the socket is not a TCP one listed."""
        inode = None
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError), open(table) as rows:
                next(rows)
                for row in rows:
                    fields = row.split()
                    if (int(fields[1].rsplit(":", 1)[1], 16) == address[1]
                            and int(fields[2].rsplit(":", 1)[1], 16) == self.server_port):
                        inode = f"socket:[{fields[9]}]"
                        break
            if inode:
                break
        if inode is not None:
            # The known workers first (cheap); then every process, for a pool child the
            # main loop has not listed yet.
            known = list(self.pids)
            others = [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]
            for pid in known + [p for p in others if p not in known]:
                with contextlib.suppress(OSError):
                    for fd in os.scandir(f"/proc/{pid}/fd"):
                        with contextlib.suppress(OSError):
                            if os.readlink(fd.path) == inode:
                                return f"pid:{pid}"
            return f"gone:{address[0]}:{address[1]}"
        return f"{address[0]}:{address[1]}"


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return sorted(found)


class Unwritable:
    """Makes the token directory unwritable, also for root: chmod for anyone else; for
    root `chattr +i` (immutable), or where that is not possible, the directory swapped
    for a plain file of the same name."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.how = ""

    def on(self) -> None:
        if os.geteuid() != 0:
            self.directory.chmod(0o500)
            self.how = "chmod"
        elif subprocess.run(["chattr", "+i", str(self.directory)],
                            capture_output=True, check=False).returncode == 0:
            self.how = "chattr"
        else:
            self.directory.rename(self.directory.with_name(self.directory.name + ".away"))
            self.directory.write_text("")
            self.how = "swap"

    def off(self) -> None:
        if self.how == "chmod":
            self.directory.chmod(0o700)
        elif self.how == "chattr":
            subprocess.run(["chattr", "-i", str(self.directory)], check=True)
        elif self.how == "swap":
            self.directory.unlink()
            self.directory.with_name(self.directory.name + ".away").rename(self.directory)
        self.how = ""


def run_cleanly(run_: Callable[[argparse.Namespace, Cleanup], int], args: argparse.Namespace,
                name: str) -> int:
    """Run a script's body so that Ctrl-C or SIGTERM (a shell's background job ignores
    SIGINT otherwise) still runs every cleanup step it registered, to its end."""
    cleanup = Cleanup()

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        return run_(args, cleanup)
    except KeyboardInterrupt:
        print(f"{name}: interrupted, cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        cleanup.run()


def main(argv: list[str] | None = None) -> int:
    return run_cleanly(run, parse_args(argv), "soak")


def run(args: argparse.Namespace, cleanup: Cleanup) -> int:  # noqa: C901 (one story)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="igregistry-soak-"))
    if not args.keep:
        cleanup.push("remove the run directory", lambda: _rmtree(workdir))
    token_dir, logs = workdir / "tokens", workdir / "logs"
    token_dir.mkdir()
    logs.mkdir()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "igregistry.settings_test")
    os.environ.update({
        "CELERY_BROKER_URL": args.redis_url, "TOKEN_EXPORT_DIR": str(token_dir),
        "VAR_DIR": str(workdir / "var"), "LOG_LEVEL": "WARNING",
        "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
        "REFRESH_RETRY_BASE_SECONDS": "1", "REFRESH_RETRY_MAX_SECONDS": "4",
        # Rounds of several calls, as in production; a chunk's rounds (each at most the
        # deadline) stay inside the visibility timeout.
        "TEST_REFRESH_CONCURRENCY": str(ROUND), "REFRESH_CHUNK_SIZE": str(2 * ROUND),
    })

    import django

    django.setup()
    import redis
    from django.db import connection
    from django.utils import timezone

    from accounts import services
    from accounts.models import Account, InstagramApp, Token
    from accounts.services import Actor
    from igregistry.celery import app as celery_app
    from tests.fake_instagram import FakeInstagram

    # --- the database, the broker, the fake ------------------------------------------
    connection.settings_dict["TEST"]["NAME"] = args.database
    old_name = connection.settings_dict["NAME"]
    print(f"soak: seed {args.seed}; creating database {args.database}", flush=True)
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    if not args.keep:
        cleanup.push("drop the database", lambda: _drop_database(connection, old_name))
    broker = redis.Redis.from_url(args.redis_url)
    broker.delete(*KOMBU_KEYS)
    cleanup.push("empty the broker", lambda: broker.delete(*KOMBU_KEYS))

    fake = FakeInstagram().start()
    cleanup.push("stop the fake Instagram", fake.stop)
    fake.add_app(CLIENT_ID, CLIENT_SECRET, ["https://registry.test.example/oauth/callback/"])

    # --- the accounts: due (50 days old, 10 left), some revoked by their owner -----------
    rng = random.Random(args.seed)
    now = timezone.now()
    ig_app = InstagramApp.objects.create(
        name="Soak", flavour="instagram_login", app_id=CLIENT_ID, app_secret=CLIENT_SECRET,
        redirect_uri="https://registry.test.example/oauth/callback/",
    )
    usernames = [f"soak_{i:05d}" for i in range(args.accounts)]
    revoked = set(rng.sample(usernames, round(args.accounts * args.revoked)))
    initial = {u: fake.mint_token(client_id=CLIENT_ID, username=u, age=timedelta(days=50))
               for u in usernames}
    for username in revoked:
        fake.revoke_user(username, subcode=458)
    accounts = Account.objects.bulk_create(
        Account(app=ig_app, label=f"Feed {u}", username=u, status=Account.Status.ACTIVE,
                ig_id=str(17841400000000000 + i))
        for i, u in enumerate(usernames)
    )
    Token.objects.bulk_create(
        Token(account=a, value=initial[a.username], kind=Token.Kind.LONG,
              obtained_at=now - timedelta(days=50), expires_at=now + timedelta(days=10))
        for a in accounts
    )
    username_of = {a.pk: a.username for a in accounts}
    setup_report = services.token_files_reconcile(actor=Actor(job="soak"), now=now)
    print(f"soak: {args.accounts} accounts ready ({len(revoked)} revoked), "
          f"{setup_report.rewritten} files written", flush=True)

    # --- workers and chaos --------------------------------------------------------------
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="") + (
        ":" + quote(db["PASSWORD"], safe="") if db.get("PASSWORD") else "")
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": str(BASE_DIR), "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:"
                        f"{db['PORT'] or 5432}/{db['NAME']}?application_name={WORKER_DB_APP}",
        "INSTAGRAM_API_URL": fake.url, "INSTAGRAM_WWW_URL": fake.url,
        "INSTAGRAM_GRAPH_URL": fake.url, "INSTAGRAM_CONNECT_TIMEOUT": "2",
        "INSTAGRAM_READ_TIMEOUT": str(READ_TIMEOUT), "INSTAGRAM_DEADLINE_SECONDS": str(DEADLINE),
    })
    workers = Workers(env, logs, args.concurrency)
    cleanup.push("stop the workers", lambda: workers.stop_all(wait=5))
    unwritable = Unwritable(token_dir)
    cleanup.push("make the token directory writable", unwritable.off)

    fake.chaos(args.fault_rate, seed=args.seed, timeout_seconds=READ_TIMEOUT + 1.5,
               trickle_seconds=DEADLINE * 2.5, regain_minutes=0)
    namer = ClientNamer(fake.port)
    fake.client_namer = namer
    for _ in range(args.workers):
        workers.start()

    # Side faults at points of progress drawn from the seed (share of accounts settled).
    side_rng = random.Random(args.seed * 7919)
    plan = sorted(
        [(side_rng.uniform(0.1, 0.85), "kill") for _ in range(args.kills)]
        + [(side_rng.uniform(0.1, 0.85), "child_kill") for _ in range(args.child_kills)]
        + [(side_rng.uniform(0.1, 0.85), "db_kill") for _ in range(args.db_kills)]
        + [(side_rng.uniform(0.1, 0.85), "unwritable") for _ in range(args.unwritable)]
    )
    side: Counter = Counter()
    side_log: list[str] = []
    kills: list[tuple[datetime, set[int]]] = []
    backends_terminated = 0
    last_kill = 0.0
    writable_again_at: float | None = None
    run_start = timezone.now()
    refresh_started = time.monotonic()
    expected_refreshed = args.accounts - len(revoked)

    def settled() -> tuple[int, int]:
        refreshed = Token.objects.filter(last_refreshed_at__gte=run_start).count()
        flagged = Account.objects.filter(
            status=Account.Status.NEEDS_REAUTH, username__in=revoked
        ).count()
        return refreshed, flagged

    # --- the run: play beat, inject our faults, wait until every account is settled -----
    last_sweep = 0.0
    sweeps = 0
    last_print = time.monotonic()
    finished = False
    while time.monotonic() - refresh_started < args.time_limit:
        namer.pids = workers.pids()
        refreshed, flagged = settled()
        progress = (refreshed + flagged) / max(args.accounts, 1)
        if refreshed == expected_refreshed and flagged == len(revoked):
            finished = True
            break
        while plan and plan[0][0] <= progress:
            _, what = plan.pop(0)
            alive = workers.alive()
            if what in ("kill", "child_kill") and alive:
                victim = side_rng.choice(alive)
                killed = workers.kill(victim) if what == "kill" else workers.kill_child(victim)
                if not killed:
                    continue
                kills.append((timezone.now(), set(killed)))
                if what == "kill":
                    workers.start()
                    last_kill = time.monotonic()
                what = f"{what} (pids {killed})"
            elif what == "db_kill":
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND application_name = %s",
                        [WORKER_DB_APP],
                    )
                    backends_terminated += cursor.fetchone()[0]
            elif what == "unwritable":
                if writable_again_at is not None:
                    continue
                unwritable.on()
                writable_again_at = time.monotonic() + 3
            side[what.split()[0]] += 1
            side_log.append(f"{timezone.now():%H:%M:%S.%f} {what} at {progress:.0%}")
            print(f"soak: {side_log[-1]}", flush=True)
        if writable_again_at is not None and time.monotonic() >= writable_again_at:
            unwritable.off()
            writable_again_at = None
        if broker.llen("celery") == 0 and time.monotonic() - last_sweep >= 1:
            celery_app.send_task("accounts.tasks.refresh_sweep")
            last_sweep = time.monotonic()
            sweeps += 1
        if time.monotonic() - last_print >= 10:
            print(f"soak: {refreshed}/{expected_refreshed} refreshed, {flagged}/{len(revoked)} "
                  f"flagged, {time.monotonic() - refresh_started:.0f} s", flush=True)
            last_print = time.monotonic()
        time.sleep(0.3)
    refresh_seconds = time.monotonic() - refresh_started
    if writable_again_at is not None:
        unwritable.off()

    # --- drain: stop, then one fresh worker takes every message still owed --------------
    chaos = fake.chaos_report() or {}
    fake.chaos(0)
    workers.stop_all()
    time.sleep(max(0.0, last_kill + VISIBILITY_TIMEOUT + 1 - time.monotonic()))
    workers.start()  # kombu hands back abandoned messages when a worker starts
    drain_end = time.monotonic() + 60
    while time.monotonic() < drain_end:
        if broker.llen("celery") == 0 and broker.hlen("unacked") == 0:
            break
        time.sleep(0.5)
    drained = broker.llen("celery") == 0 and broker.hlen("unacked") == 0
    workers.stop_all()
    broker.delete(*KOMBU_KEYS)

    # --- checks -------------------------------------------------------------------------
    connection.close()
    figures = check(args=args, fake=fake, chaos=chaos, initial=initial, revoked=revoked,
                    username_of=username_of, run_start=run_start, kills=kills)
    errors = workers.task_errors()
    figures.update({
        "seed": args.seed, "workers": args.workers, "concurrency": args.concurrency,
        "finished": finished, "drained": drained, "sweeps": sweeps,
        "side_faults": dict(side), "side_fault_log": side_log,
        "backends_terminated": backends_terminated,
        "task_errors": dict(errors),
        "refresh_phase_seconds": round(refresh_seconds, 1),
        "wall_seconds": round(time.monotonic() - started, 1),
    })
    failures = figures["failures"]
    if not finished:
        failures.append("not every account was refreshed or flagged within the time limit")
    if not drained:
        failures.append("the broker still held messages after the drain")
    unexplained = {k: v for k, v in errors.items() if k not in DB_GONE}
    if unexplained:
        failures.append(f"tasks crashed: {unexplained}")
    if set(errors) & DB_GONE and not backends_terminated:
        failures.append("database errors in tasks without a terminated session")
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    if failures:
        print(f"logs: {logs}" + ("" if args.keep else " (removed; --keep keeps them)"))
    return 1 if failures else 0


def check(*, args: argparse.Namespace, fake: FakeInstagram, chaos: dict,
          initial: dict[str, str], revoked: set[str], username_of: dict[int, str],
          run_start: datetime, kills: list[tuple[datetime, set[int]]]) -> dict:
    """The invariants, counted; `failures` lists the ones that do not hold."""
    from django.utils import timezone

    from accounts import selectors, services
    from accounts.models import Account, Event, Token
    from accounts.services import Actor

    failures: list[str] = []
    ledger = defaultdict(list)
    for record in fake.refreshes():
        ledger[record["username"]].append(record)
    tokens = {t.account_id: t for t in Token.objects.select_related("account")}
    ok_events = Counter(
        Event.objects.filter(action="refresh", outcome=Event.Outcome.OK, created_at__gte=run_start)
        .values_list("account_id", flat=True)
    )
    calls = fake.calls(REFRESH)
    called = Counter(c.query.get("access_token", "") for c in calls)

    exactly_once = repeated = repeated_killed = duplicates = lost = unfinished = 0

    def killed_with_answer(record: dict) -> bool:
        """Whether this answer went to a process that a SIGKILL then ended (shortly after):
        the new token died with it before it could be stored. A client whose socket no
        process held any more when the answer was sent ("gone:") counts when a kill
        happened within the window on either side of the answer."""
        client = record["client"]
        window = timedelta(seconds=DEADLINE + 5)
        if client.startswith("gone:"):
            return any(abs(at - record["at"]) <= window for at, _ in kills)
        pid = int(client.removeprefix("pid:")) if client.startswith("pid:") else -1
        return any(pid in pids and at - window <= record["at"] <= at for at, pids in kills)

    flagged = flagged_with_reason = 0
    examples: dict[str, list[str]] = defaultdict(list)
    outcomes: Counter = Counter()
    for account_id, token in tokens.items():
        username = username_of[account_id]
        account = token.account
        records = ledger.get(username, [])
        outcomes.update(r["outcome"] for r in records)
        chained = [r for r in records if r["old"] != initial[username]]
        if account.status in (Account.Status.NEEDS_REAUTH, Account.Status.ERROR):
            flagged += 1
            reason = Event.objects.filter(
                account_id=account_id, outcome=Event.Outcome.FAILED
            ).exclude(message="").exists()
            if reason and account.last_error:
                flagged_with_reason += 1
            else:
                examples["flagged without a reason"].append(username)
        if username in revoked:
            if account.status != Account.Status.NEEDS_REAUTH:
                unfinished += 1
                examples["revoked but not flagged"].append(username)
            continue
        # Lost: the stored token is dead, or a token Instagram issued was never stored
        # while the one it replaced is dead.
        if not fake.accepts(token.value) or any(
            r["new"] != token.value and not fake.accepts(r["old"]) for r in records
        ):
            lost += 1
            examples["lost"].append(username)
        stored = [r for r in records if r["new"] == token.value]
        extras = [r for r in records if r["new"] != token.value]
        died = [r for r in extras if r["outcome"] == "delivered" and killed_with_answer(r)]
        unexplained = [r for r in extras
                       if r["outcome"] == "delivered" and not killed_with_answer(r)]
        if unexplained or chained or ok_events[account_id] > 1:
            duplicates += 1
            answers = ", ".join(f"{r['at']:%H:%M:%S.%f} {r['outcome']}:{r['fault'] or '-'}"
                                f" to {r['client']}" for r in records)
            examples["duplicate"].append(
                f"{username}: {len(records)} refreshes ({answers}), "
                f"{ok_events[account_id]} OK events"
            )
        elif stored and stored[-1]["outcome"] == "delivered":
            if not extras:
                exactly_once += 1
            elif died:
                repeated_killed += 1
            else:
                repeated += 1
        else:
            unfinished += 1
            examples["not refreshed"].append(
                f"{username}: status {account.status}, {len(records)} refreshes, "
                f"stored {'the initial token' if token.value == initial[username] else 'another'}"
            )

    # Files: how many differ from the database now, then after one reconcile pass.
    def mismatched() -> list[str]:
        wrong = []
        for account in selectors.token_files_to_check():
            path = selectors.token_file_path(account=account)
            want = selectors.token_file_content(account=account, token=account.token)
            try:
                have = path.read_text() if path else None
            except OSError:
                have = None
            if have != want or selectors.token_file_state(account=account) != "in_sync":
                wrong.append(account.username)
        return wrong

    before = mismatched()
    services.token_files_reconcile(actor=Actor(job="soak"), now=timezone.now())
    after = mismatched()

    report = chaos
    figures = {
        "accounts": args.accounts,
        "revoked_accounts": len(revoked),
        "fault_rate": args.fault_rate,
        "faults_injected": sum(report.get("injected", {}).values()),
        "faults_by_kind": report.get("injected", {}),
        "faults_by_variant": report.get("variants", {}),
        "refresh_calls": len(calls),
        "refresh_calls_beyond_first": len(calls) - sum(1 for t in initial.values() if called[t]),
        "temporary_failures_recorded": Event.objects.filter(
            action="refresh", outcome=Event.Outcome.FAILED, created_at__gte=run_start,
            message__startswith="Temporary failure").count(),
        "refreshes_at_instagram": sum(len(v) for v in ledger.values()),
        "refresh_answers": dict(outcomes),
        "refreshed_exactly_once": exactly_once,
        "repeated_after_lost_answer": repeated,
        "repeated_after_killed_worker": repeated_killed,
        "duplicates": duplicates,
        "lost_tokens": lost,
        "unfinished": unfinished,
        "flagged": flagged,
        "flagged_with_reason": flagged_with_reason,
        "files_mismatched_before_reconcile": len(before),
        "files_mismatched_after_reconcile": len(after),
        "files_mismatched": after[:20],
        "examples": {k: v[:10] for k, v in examples.items()},
        "failures": failures,
    }
    if lost:
        failures.append(f"{lost} lost tokens")
    if duplicates:
        failures.append(f"{duplicates} duplicate refreshes")
    if unfinished:
        failures.append(f"{unfinished} accounts neither refreshed nor flagged")
    if flagged != flagged_with_reason:
        failures.append(f"{flagged - flagged_with_reason} flagged accounts without a reason")
    if after:
        failures.append(f"{len(after)} token files differ from the database after reconcile")
    return figures


def report(figures: dict) -> None:
    order = [
        ("accounts", "accounts"), ("revoked_accounts", "  of which revoked by their owner"),
        ("seed", "seed"), ("fault_rate", "fault rate"),
        ("faults_injected", "faults injected at Instagram"), ("faults_by_kind", "  by kind"),
        ("side_faults", "faults injected on our side"), ("side_fault_log", "  when"),
        ("backends_terminated", "  PostgreSQL sessions terminated"),
        ("refresh_calls", "refresh calls"), ("refresh_calls_beyond_first", "  retries (calls "
                                             "beyond the first per account)"),
        ("temporary_failures_recorded", "  temporary failures recorded"),
        ("refreshes_at_instagram", "refreshes performed at Instagram"),
        ("refresh_answers", "  their answers"),
        ("refreshed_exactly_once", "refreshed exactly once"),
        ("repeated_after_lost_answer", "refreshed again after a lost answer"),
        ("repeated_after_killed_worker", "refreshed again after SIGKILL took the answer"),
        ("duplicates", "duplicates"), ("lost_tokens", "lost tokens"),
        ("unfinished", "neither refreshed nor flagged"),
        ("flagged", "flagged (needs re-authorization or error)"),
        ("flagged_with_reason", "  with a reason in their events"),
        ("files_mismatched_before_reconcile", "files not matching the database before reconcile"),
        ("files_mismatched_after_reconcile", "files not matching the database after reconcile"),
        ("files_mismatched", "  which"),
        ("task_errors", "task errors by type"), ("sweeps", "sweeps sent"),
        ("refresh_phase_seconds", "refresh phase, s"), ("wall_seconds", "wall time, s"),
    ]
    for key, label in order:
        value = figures.get(key)
        if key == "files_mismatched" and not value:
            continue
        print(f"{label}: {json.dumps(value) if isinstance(value, dict | list) else value}")
    for kind, names in figures["examples"].items():
        print(f"example {kind}: {names}")
    failures = figures["failures"]
    print("soak: PASS" if not failures else "soak: FAIL: " + "; ".join(failures), flush=True)


def _drop_database(connection, old_name: str) -> None:  # noqa: ANN001
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    connection.creation.destroy_test_db(old_name, verbosity=0)


def _rmtree(path: Path) -> None:
    import shutil

    for leftover in (path / "tokens", path / "tokens.away"):
        if leftover.is_dir():
            subprocess.run(["chattr", "-i", str(leftover)], capture_output=True, check=False)
            leftover.chmod(0o700)
    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
