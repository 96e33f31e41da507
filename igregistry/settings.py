"""Settings for igregistry, read from the environment (and an optional `.env`).

Every variable is documented in README.md and `.env.example`. Development gets safe
defaults; with DEBUG off (production) the secrets have no default and start-up fails
without them.
https://docs.djangoproject.com/en/5.2/ref/settings/
https://django-environ.readthedocs.io/
"""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

class _Env(environ.Env):
    """django-environ, saying which variable holds a number that is not one (rather than
    a traceback ending in int()'s ValueError)."""

    def int(self, var: str, default=environ.Env.NOTSET):  # noqa: ANN001, ANN201
        try:
            return super().int(var, default=default)
        except ValueError:
            raise ImproperlyConfigured(f"{var} must be a whole number, not "
                                       f"{os.environ.get(var)!r}.") from None

    def float(self, var: str, default=environ.Env.NOTSET):  # noqa: ANN001, ANN201
        try:
            return super().float(var, default=default)
        except ValueError:
            raise ImproperlyConfigured(f"{var} must be a number, not "
                                       f"{os.environ.get(var)!r}.") from None


env = _Env()
# A `.env` beside manage.py is read when present; real environment variables win.
env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)


def _required_in_production(name: str, dev_default: str) -> str:
    value = env.str(name, default="")
    if value:
        return value
    if DEBUG:
        return dev_default
    raise ImproperlyConfigured(f"{name} must be set when DEBUG is off (production).")


SECRET_KEY = _required_in_production(
    "SECRET_KEY", "django-insecure-development-only-key-do-not-use-in-production"
)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else [])
# The registry's public base URL, as staff open it in a browser: alert e-mails and webhook
# items link to the admin with it (a Celery task has no request to build a link from).
def _site_url(value: str) -> str:
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        parts = parts._replace(netloc="")
    # No user:password@ either: the URL is written into every alert.
    if (parts.scheme not in ("http", "https") or not parts.hostname or parts.username
            or parts.password or parts.query or parts.fragment):
        raise ImproperlyConfigured(
            "SITE_URL must be an absolute http(s) URL without credentials, query or "
            "fragment, e.g. https://registry.example.com"
        )
    return value.rstrip("/")


SITE_URL = _site_url(_required_in_production("SITE_URL", "http://127.0.0.1:8000"))
# Origins that may POST to the admin when served behind https on another host.
# https://docs.djangoproject.com/en/5.2/ref/settings/#csrf-trusted-origins
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # Django's admin with the registry's site: sign-in lockout and a second factor.
    "igregistry.apps.RegistryAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "accounts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it answers a locked-out sign-in.
    "axes.middleware.AxesMiddleware",
]

# --- Sign-in ------------------------------------------------------------------------
# Repeated failed sign-ins are locked out (django-axes): LOGIN_FAILURE_LIMIT failures
# lock for LOGIN_LOCKOUT_HOURS. LOGIN_LOCKOUT_BY says what is locked, comma-separated
# alternatives, "+" joining what must match together: the default locks a username from
# the address that failed (a guesser elsewhere cannot lock the real user out); "username"
# locks the username wherever the attempts come from. Unlock early with
# `manage.py axes_reset_username NAME`.
# https://django-axes.readthedocs.io/en/latest/4_configuration.html
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = env.bool("LOGIN_LOCKOUT_ENABLED", default=True)
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("LOGIN_LOCKOUT_HOURS", default=1.0)
AXES_LOCKOUT_PARAMETERS = [
    part.split("+") if "+" in part else part
    for part in env.list("LOGIN_LOCKOUT_BY", default=["username+ip_address"])
]
# A good sign-in clears the failures only where every lockout names the username: with
# an address-only lockout, a guesser's own good sign-in would clear the count.
AXES_RESET_ON_SUCCESS = all(
    "username" in (part if isinstance(part, list) else [part])
    for part in AXES_LOCKOUT_PARAMETERS
)
# A failed second-factor code is kept out of the attempts log like the password.
AXES_SENSITIVE_PARAMETERS = ["password", "otp_token"]
# Behind LOGIN_PROXY_COUNT proxies the client's address is the X-Forwarded-For entry the
# outermost one appended; without proxies the header is ignored (see admin_site.client_ip).
LOGIN_PROXY_COUNT = env.int("LOGIN_PROXY_COUNT", default=0)
AXES_CLIENT_IP_CALLABLE = "igregistry.admin_site.client_ip"
# Shown in authenticator apps next to the code.
OTP_TOTP_ISSUER = env.str("OTP_ISSUER", default="igregistry")
# Nobody sees another user's TOTP secret or QR code in the admin, superusers included:
# each person sets up their own on the Two-factor page; an administrator can only delete a
# lost device (Admin -> TOTP devices).
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

ROOT_URLCONF = "igregistry.urls"
WSGI_APPLICATION = "igregistry.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The project's own admin templates (base_site with the two-factor link) come
        # before the admin app's.
        "DIRS": [BASE_DIR / "igregistry" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Embedded default: a SQLite file, so the registry runs with no database server.
# https://django-environ.readthedocs.io/en/latest/types.html#environ-env-db-url
VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # The embedded default shares one file between the web server, a worker and beat:
    # take the write lock when a transaction starts and wait for it (rather than fail with
    # "database is locked" mid-transaction), and let readers read while one writes.
    # https://docs.djangoproject.com/en/5.2/ref/databases/#database-is-locked-errors
    DATABASES["default"].setdefault("OPTIONS", {}).update({
        "transaction_mode": "IMMEDIATE",
        "timeout": 60,
        "init_command": "PRAGMA journal_mode=WAL;",
    })
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Seconds libpq may spend connecting (TCP and start-up): a database host that accepts
    # the connection and never answers fails a request or a health check instead of hanging
    # it. A connect_timeout in DATABASE_URL's query string wins.
    # https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNECT-CONNECT-TIMEOUT
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=5)
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True
# Django's own date columns and read-only fields show times as every page of the registry
# does ("2027-01-27 20:25 UTC": no seconds, no "p.m.", the zone named): igregistry/formats.
# https://docs.djangoproject.com/en/5.2/ref/settings/#format-module-path
FORMAT_MODULE_PATH = ["igregistry.formats"]

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# Behind a TLS-terminating proxy set SECURE_PROXY_SSL=true so request.is_secure() is right.
# https://docs.djangoproject.com/en/5.2/ref/settings/#secure-proxy-ssl-header
if env.bool("SECURE_PROXY_SSL", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SESSION_COOKIE_HTTPONLY = True
# Off by default because the TLS proxy usually redirects; turn on when Django sees http.
# https://docs.djangoproject.com/en/5.2/ref/middleware/#http-strict-transport-security
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
# Health checks and scrapes come over plain http from inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz", r"^metrics$"]
X_FRAME_OPTIONS = "DENY"

# --- Encryption at rest -------------------------------------------------------------
# Fernet keys (urlsafe base64, 32 bytes), comma-separated, newest first. The first one
# encrypts; every one decrypts, so a retired key stays listed until
# `manage.py rotate_encryption_keys` has re-encrypted everything with the newest.
# https://cryptography.io/en/latest/fernet/#cryptography.fernet.MultiFernet
_dev_key = base64.urlsafe_b64encode(hashlib.sha256(SECRET_KEY.encode()).digest()).decode()
ENCRYPTION_KEYS = env.list("ENCRYPTION_KEYS", default=[])
if not ENCRYPTION_KEYS:
    ENCRYPTION_KEYS = [_required_in_production("ENCRYPTION_KEYS", _dev_key)]

# --- Instagram ----------------------------------------------------------------------
# The three hosts the registry talks to. Real Instagram by default; the tests and the
# demo point them at the fake server in tests/fake_instagram.
INSTAGRAM_API_URL = env.str("INSTAGRAM_API_URL", default="https://api.instagram.com")
INSTAGRAM_WWW_URL = env.str("INSTAGRAM_WWW_URL", default="https://www.instagram.com")
INSTAGRAM_GRAPH_URL = env.str("INSTAGRAM_GRAPH_URL", default="https://graph.instagram.com")
INSTAGRAM_CONNECT_TIMEOUT = env.float("INSTAGRAM_CONNECT_TIMEOUT", default=5.0)
INSTAGRAM_READ_TIMEOUT = env.float("INSTAGRAM_READ_TIMEOUT", default=20.0)
# The whole call, connect to the last byte of the answer: the read timeout bounds only each
# wait for a byte, and a server trickling bytes would otherwise hold a worker for minutes.
INSTAGRAM_DEADLINE_SECONDS = env.float("INSTAGRAM_DEADLINE_SECONDS", default=15.0)
# An authorization's callback makes up to three calls in one web request: 3 x 18 s stays
# inside gunicorn's 60 s worker timeout (gunicorn.conf.py), and the tasks' 90 s limit.
if not 0 < INSTAGRAM_DEADLINE_SECONDS <= 18:
    raise ImproperlyConfigured("INSTAGRAM_DEADLINE_SECONDS must be between 0 and 18.")
# How long an OAuth `state` handed to Instagram stays valid (Instagram's codes live 1 hour).
OAUTH_STATE_TTL_SECONDS = env.int("OAUTH_STATE_TTL_SECONDS", default=30 * 60)
if not 60 <= OAUTH_STATE_TTL_SECONDS <= 3600:
    raise ImproperlyConfigured("OAUTH_STATE_TTL_SECONDS must be between 60 and 3600.")
# Owner authorization links (README, "Owner authorization links"): how many days a link an
# operator sends to an account's owner stays usable unless the operator picks another
# lifetime (1 to 30 days) when creating it. The link is a bearer secret: keep it short.
OWNER_LINK_TTL_DAYS = env.int("OWNER_LINK_TTL_DAYS", default=3)
if not 1 <= OWNER_LINK_TTL_DAYS <= 30:
    raise ImproperlyConfigured("OWNER_LINK_TTL_DAYS must be between 1 and 30.")

# --- Token files --------------------------------------------------------------------
TOKEN_EXPORT_DIR = Path(env.str("TOKEN_EXPORT_DIR", default=str(VAR_DIR / "tokens")))
# Octal, as chmod takes it. The PHP page of the manual procedure ran as group `apache`.
TOKEN_FILE_MODE = int(env.str("TOKEN_FILE_MODE", default="0640"), 8)
TOKEN_FILE_GROUP = env.str("TOKEN_FILE_GROUP", default="")
# What a token file holds once its token is dead (the owner must authorize again):
# "keep" the last token (the website's calls fail as they would anyway; the dashboard and
# alerts flag the account) or "empty" the file (a JSON file gets "access_token": null).
TOKEN_FILE_DEAD_TOKEN = env.str("TOKEN_FILE_DEAD_TOKEN", default="keep")
if TOKEN_FILE_DEAD_TOKEN not in ("keep", "empty"):
    raise ImproperlyConfigured("TOKEN_FILE_DEAD_TOKEN must be 'keep' or 'empty'.")

# --- Celery -------------------------------------------------------------------------
# Embedded default: kombu's filesystem transport, a broker that needs no server.
# Production: redis://host:6379/0. https://docs.celeryq.dev/en/stable/userguide/configuration.html
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = VAR_DIR / "celery"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir / "queue"),
        "data_folder_out": str(_queue_dir / "queue"),
        "processed_folder": str(_queue_dir / "processed"),
        "store_processed": False,
        # kombu's default is "control" in the working directory: the checkout.
        "control_folder": str(_queue_dir / "control"),
    }
    for _folder in ("queue", "processed", "control"):
        (_queue_dir / _folder).mkdir(parents=True, exist_ok=True)
else:
    # Redis redelivers a message not acknowledged within this many seconds. Task time
    # limits and retry delays stay well under it, or a slow task would run twice.
    # https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html#visibility-timeout
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = TIME_ZONE
# Refresh tasks are idempotent (row lock + re-check), so a message is acknowledged only
# once the task finished, and one taken by a worker that died is delivered again.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = 90
CELERY_TASK_TIME_LIMIT = 120
# With the broker down, publishing fails after a few seconds instead of hanging the sweep.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2, "interval_start": 0, "interval_step": 1, "interval_max": 2
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Refresh policy -----------------------------------------------------------------
# A long-lived token lives 60 days and can be refreshed once it is 24 hours old. It is
# refreshed once its remaining life drops under REFRESH_THRESHOLD_DAYS: with the default
# 50, every token always has about 50 days left, so workers can be down for 30 days (and
# more) without one expiring, at the cost of one refresh call per account every ~10 days.
REFRESH_THRESHOLD_DAYS = env.int("REFRESH_THRESHOLD_DAYS", default=50)
if not 1 <= REFRESH_THRESHOLD_DAYS <= 59:
    raise ImproperlyConfigured("REFRESH_THRESHOLD_DAYS must be between 1 and 59.")
REFRESH_SWEEP_MINUTES = env.float("REFRESH_SWEEP_MINUTES", default=60)
RECONCILE_MINUTES = env.float("RECONCILE_MINUTES", default=15)
# Temporary failures: exponential back-off with jitter from the base, capped, bounded.
REFRESH_RETRY_BASE_SECONDS = env.int("REFRESH_RETRY_BASE_SECONDS", default=30)
REFRESH_RETRY_MAX_SECONDS = env.int("REFRESH_RETRY_MAX_SECONDS", default=900)
REFRESH_MAX_RETRIES = env.int("REFRESH_MAX_RETRIES", default=5)
# Refresh calls in flight at once per worker process and per `refresh_tokens` run, in
# threads that never touch the database; a round of that many accounts is one
# transaction. The sweep hands due accounts to workers in chunks of REFRESH_CHUNK_SIZE.
REFRESH_CONCURRENCY = env.int("REFRESH_CONCURRENCY", default=32)
REFRESH_CHUNK_SIZE = env.int("REFRESH_CHUNK_SIZE", default=64)
if not 1 <= REFRESH_CONCURRENCY <= 64 or not 1 <= REFRESH_CHUNK_SIZE <= 500:
    raise ImproperlyConfigured("REFRESH_CONCURRENCY must be 1-64 and REFRESH_CHUNK_SIZE 1-500.")
# Instagram's usage headers (percent of quota): above SLOWDOWN the sweep spaces its
# refreshes out; at STOP it pauses until Instagram says access is regained.
USAGE_SLOWDOWN_PERCENT = env.int("USAGE_SLOWDOWN_PERCENT", default=75)
USAGE_STOP_PERCENT = env.int("USAGE_STOP_PERCENT", default=95)
USAGE_SLOWDOWN_SPACING_SECONDS = env.int("USAGE_SLOWDOWN_SPACING_SECONDS", default=20)
# A usage reading older than this is ignored: Meta measures usage over a rolling hour, and
# answers stop carrying the headers once usage is low, so the last high reading would
# otherwise slow every later sweep.
USAGE_READING_MAX_AGE_MINUTES = env.float("USAGE_READING_MAX_AGE_MINUTES", default=60)
_visibility_timeout = CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600)
if _visibility_timeout < REFRESH_RETRY_MAX_SECONDS * 2:
    raise ImproperlyConfigured(
        "REFRESH_RETRY_MAX_SECONDS must stay under half of CELERY_VISIBILITY_TIMEOUT."
    )

# --- Alerts -------------------------------------------------------------------------
# Staff hear about an account once per change of its state, plus a daily reminder while
# it lasts: needs re-authorization, expired, refreshes failing, or expiring within
# ALERT_EXPIRY_DAYS. By e-mail to ALERT_EMAILS (default: ADMINS) and, optionally, a webhook
# whose JSON body is signed with HMAC-SHA256 (header X-Igregistry-Signature: sha256=<hex>).
ALERT_EXPIRY_DAYS = env.int("ALERT_EXPIRY_DAYS", default=7)
ALERT_FAILURES_THRESHOLD = env.int("ALERT_FAILURES_THRESHOLD", default=3)
ALERT_REMINDER_HOURS = env.int("ALERT_REMINDER_HOURS", default=24)
ALERT_MINUTES = env.float("ALERT_MINUTES", default=10)
# "Name <address>" pairs, comma-separated: ADMINS=Ops <ops@example.com>
ADMINS = [parseaddr(entry) for entry in env.list("ADMINS", default=[])]
ALERT_EMAILS = env.list("ALERT_EMAILS", default=[email for _, email in ADMINS])
ALERT_WEBHOOK_URL = env.str("ALERT_WEBHOOK_URL", default="")
ALERT_WEBHOOK_SECRET = env.str("ALERT_WEBHOOK_SECRET", default="")
if ALERT_WEBHOOK_URL and not ALERT_WEBHOOK_SECRET:
    raise ImproperlyConfigured("ALERT_WEBHOOK_URL needs ALERT_WEBHOOK_SECRET to sign its body.")
# A failed e-mail or webhook delivery is retried by later runs of send_alerts (so no sooner
# than ALERT_MINUTES): the wait doubles from the base per failure, with jitter, capped; the
# attempt that reaches the maximum gives up (an event and an ERROR log line). The defaults
# keep trying for two to four hours.
ALERT_RETRY_BASE_SECONDS = env.int("ALERT_RETRY_BASE_SECONDS", default=60)
ALERT_RETRY_MAX_SECONDS = env.int("ALERT_RETRY_MAX_SECONDS", default=3600)
ALERT_DELIVERY_MAX_ATTEMPTS = env.int("ALERT_DELIVERY_MAX_ATTEMPTS", default=10)
if not 1 <= ALERT_RETRY_BASE_SECONDS <= ALERT_RETRY_MAX_SECONDS:
    raise ImproperlyConfigured(
        "ALERT_RETRY_BASE_SECONDS must be at least 1 and at most ALERT_RETRY_MAX_SECONDS."
    )
if ALERT_DELIVERY_MAX_ATTEMPTS < 1:
    raise ImproperlyConfigured("ALERT_DELIVERY_MAX_ATTEMPTS must be at least 1.")
# Change webhooks to API keys' consumers (README "Token API and sync"): how often token
# changes are looked for and due deliveries sent, minutes; a failed delivery is retried with
# the same back-off and bound as alerts (ALERT_RETRY_*, ALERT_DELIVERY_MAX_ATTEMPTS).
WEBHOOK_MINUTES = env.float("WEBHOOK_MINUTES", default=1)
if WEBHOOK_MINUTES <= 0:
    raise ImproperlyConfigured("WEBHOOK_MINUTES must be positive.")
# Mail: https://django-environ.readthedocs.io/en/latest/types.html#environ-env-email-url
EMAIL_CONFIG = env.email_url(
    "EMAIL_URL", default="consolemail://" if DEBUG else "smtp://localhost:25"
)
vars().update(EMAIL_CONFIG)  # EMAIL_BACKEND, EMAIL_HOST, ... as django-environ's docs do
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="igregistry@localhost")
# Seconds before an unanswering mail server counts as down (Django waits forever otherwise).
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=30)
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Health and metrics -------------------------------------------------------------
# /healthz answers 503 when the last successful sweep is older than this (default: two
# sweep intervals plus five minutes).
HEALTH_MAX_SWEEP_AGE_MINUTES = env.float(
    "HEALTH_MAX_SWEEP_AGE_MINUTES", default=2 * REFRESH_SWEEP_MINUTES + 5
)
# Worker liveness: /healthz fails, and staff are alerted, when a due refresh handed to the
# broker has waited longer than this past its planned start (no worker, or all stuck).
REFRESH_QUEUE_MAX_LAG_MINUTES = env.float("REFRESH_QUEUE_MAX_LAG_MINUTES", default=30)
# Overall deadline of /healthz (and `manage.py healthcheck`), seconds: a check that has not
# answered by then counts as failed ("timeout"), so a hung database or broker gives a quick
# 503 rather than no answer. The broker check's socket timeouts are the same.
HEALTH_CHECK_TIMEOUT_SECONDS = env.float("HEALTH_CHECK_TIMEOUT_SECONDS", default=3)
if HEALTH_CHECK_TIMEOUT_SECONDS <= 0:
    raise ImproperlyConfigured("HEALTH_CHECK_TIMEOUT_SECONDS must be positive.")
# /metrics: with METRICS_TOKEN set, only requests with "Authorization: Bearer <token>";
# without it, only from METRICS_ALLOWED_IPS (default: this machine).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=["127.0.0.1", "::1"])

# Exactly one beat process runs this schedule (docker-compose: the `beat` service).
def _every(task: str, minutes: float) -> dict:
    # A run not started within its interval is pointless: the next one replaces it.
    return {
        "task": task,
        "schedule": timedelta(minutes=minutes),
        "options": {"expires": minutes * 60},
    }


CELERY_BEAT_SCHEDULE = {
    "refresh-sweep": _every("accounts.tasks.refresh_sweep", REFRESH_SWEEP_MINUTES),
    # Short-lived tokens of interrupted authorizations live one hour: look often.
    "swap-pending-tokens": _every("accounts.tasks.swap_pending_tokens", 5),
    "reconcile-token-files": _every("accounts.tasks.reconcile_token_files", RECONCILE_MINUTES),
    "send-alerts": _every("accounts.tasks.send_alerts", ALERT_MINUTES),
    "send-webhooks": _every("accounts.tasks.send_webhooks", WEBHOOK_MINUTES),
}

# --- Logging ------------------------------------------------------------------------
# Every handler passes through the redaction filter: request lines and third-party debug
# output (urllib3 logs full URLs) must not carry tokens, codes or secrets.
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "accounts.instagram.RedactSecretsFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Replace Django's own handlers: its development-server request log prints query
        # strings, and its error e-mails to ADMINS carry the request's GET parameters and
        # raw URL (an authorization code), neither passing the filter above. Errors still
        # reach the console; staff are alerted through ALERT_* instead.
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
