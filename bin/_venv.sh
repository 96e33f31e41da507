# Sourced by bin/run and bin/test: make .venv (Python 3.11+) and install the given
# requirements file into it when the file changed since the last install.
# Usage: . bin/_venv.sh requirements.txt
set -euo pipefail
_requirements="$1"
_python="${PYTHON:-python3}"
if ! "$_python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "igregistry needs Python 3.11 or newer as '$_python' (set PYTHON=/path/to/python3.11)." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$_python" -m venv .venv
fi
_stamp=".venv/.installed-$(basename "$_requirements")"
_hash="$(cat requirements*.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$_stamp" 2>/dev/null || true)" != "$_hash" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$_requirements"
  echo "$_hash" > "$_stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
