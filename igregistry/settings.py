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
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
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
# Origins that may POST to the admin when served behind https on another host.
# https://docs.djangoproject.com/en/5.2/ref/settings/#csrf-trusted-origins
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "accounts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "igregistry.urls"
WSGI_APPLICATION = "igregistry.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
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

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# Behind a TLS-terminating proxy set SECURE_PROXY_SSL=true so request.is_secure() is right.
# https://docs.djangoproject.com/en/5.2/ref/settings/#secure-proxy-ssl-header
if env.bool("SECURE_PROXY_SSL", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SESSION_COOKIE_HTTPONLY = True
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
# How long an OAuth `state` handed to Instagram stays valid (Instagram's codes live 1 hour).
OAUTH_STATE_TTL_SECONDS = env.int("OAUTH_STATE_TTL_SECONDS", default=30 * 60)

# --- Token files --------------------------------------------------------------------
TOKEN_EXPORT_DIR = Path(env.str("TOKEN_EXPORT_DIR", default=str(VAR_DIR / "tokens")))
# Octal, as chmod takes it. The PHP page of the manual procedure ran as group `apache`.
TOKEN_FILE_MODE = int(env.str("TOKEN_FILE_MODE", default="0640"), 8)
TOKEN_FILE_GROUP = env.str("TOKEN_FILE_GROUP", default="")

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
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = TIME_ZONE

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
}
