"""Settings for the test suite: the normal settings with fixed, test-only secrets.

The database and broker still come from the environment, so CI runs the same suite on
PostgreSQL and Redis (see .ci/run).
"""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production")
# Two keys so that rotation is exercised: the first encrypts, both decrypt.
os.environ.setdefault(
    "ENCRYPTION_KEYS",
    "sCBxoYbl6wYKbd3CK9tHhBSJMLPIM4H_t48L4QlPYOk=,lmQB_1aZQUxD1-m1pYjx4B5vQ7Me4RKngxTZj2y9Bb8=",
)
# Alerts link here; a host of its own so a test can tell it from anything else.
os.environ.setdefault("SITE_URL", "https://registry.test.example")
os.environ.setdefault("VAR_DIR", tempfile.mkdtemp(prefix="igregistry-test-"))

from .settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Most tests run inside a transaction that other connections cannot see: refreshes run in
# the test's own thread. The tests of concurrency set it themselves (transactional_db).
# (The soak sets TEST_REFRESH_CONCURRENCY for its workers: rounds of several calls.)
REFRESH_CONCURRENCY = int(os.environ.get("TEST_REFRESH_CONCURRENCY", 1))
