#!/usr/bin/env bash
# Mutation testing (mutmut) of one module of accounts/services/ or accounts/instagram/,
# against the test files that bear on it, on SQLite. Not part of CI; see README,
# "Mutation testing". Usage:
#
#   bench/mutation.sh refresh          # accounts/services/refresh.py
#   bench/mutation.sh client           # accounts/instagram/client.py
#   bench/mutation.sh                  # every module, one after the other
#
# Then `python bench/mutation_report.py --survivors` lists the survivors per module and
# `mutmut show NAME` shows one. MUTATION_CHILDREN (default 2) bounds the parallel test
# processes. MUTANTS="name ..." bench/mutation.sh refresh reruns only those mutants
# (after new tests: the survivors), with the module's test files.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
MUTMUT="$(dirname "$PY")/mutmut"
[ -x "$MUTMUT" ] || MUTMUT=mutmut

# Test files per module: the ones that drive it through its public functions.
tests_for() {
  local pinned="test_pinned_behaviour.py"
  local services="test_pinned_services.py"
  case "$1" in
    refresh) echo "test_refresh.py test_fault_matrix.py test_hostile_input.py test_feed_never_dies.py $pinned test_pinned_refresh.py test_scale.py test_concurrency.py" ;;
    files) echo "test_token_files.py test_fault_matrix.py test_feed_never_dies.py $pinned test_pinned_refresh.py test_pinned_files.py" ;;
    oauth) echo "test_oauth_flow.py test_fault_matrix.py test_refresh.py test_hostile_input.py $pinned $services" ;;
    tokens) echo "test_import_token.py test_oauth_flow.py test_hostile_input.py $pinned $services" ;;
    # test_logging.py is left out: under mutmut its console handler writes to a stream
    # mutmut has closed (ValueError: I/O operation on closed file), which stops the run.
    common) echo "test_oauth_flow.py test_refresh.py $pinned $services" ;;
    alerts|alert_outbox) echo "test_alerts.py test_feed_never_dies.py $pinned test_pinned_alerts.py" ;;
    keys) echo "test_encryption.py $pinned $services" ;;
    answers|client|transport|usage|errors|callback|flavours|redaction)
      echo "test_instagram_client.py test_hostile_input.py test_oauth_flow.py test_fake_instagram.py $pinned test_pinned_instagram.py" ;;
    *) echo "unknown module: $1" >&2; return 1 ;;
  esac
}

package_of() {
  if [ -f "accounts/services/$1.py" ]; then echo services; else echo instagram; fi
}

modules=("$@")
if [ ${#modules[@]} -eq 0 ]; then
  modules=(refresh files oauth tokens common alerts alert_outbox keys
           answers client transport usage errors callback flavours redaction)
fi
for module in "${modules[@]}"; do
  files=$(tests_for "$module")
  echo "== accounts/$(package_of "$module")/$module.py: $files"
  if [ -n "${MUTANTS:-}" ]; then
    read -r -a names <<< "$MUTANTS"
  else
    names=("accounts.$(package_of "$module").$module.*")
  fi
  # SQLite, no Redis: the fast local set-up. MUTATION_DATABASE_URL (PostgreSQL) instead
  # for the mutants only PostgreSQL can kill (row locks); then one child at a time, since
  # every child creates the same test database.
  if [ -n "${MUTATION_DATABASE_URL:-}" ]; then
    env -u REDIS_URL DATABASE_URL="$MUTATION_DATABASE_URL" MUTATION_TEST_FILES="$files" \
      "$MUTMUT" run --max-children 1 "${names[@]}"
  else
    env -u DATABASE_URL -u REDIS_URL MUTATION_TEST_FILES="$files" \
      "$MUTMUT" run --max-children "${MUTATION_CHILDREN:-2}" "${names[@]}"
  fi
done
