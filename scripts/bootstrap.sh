#!/usr/bin/env bash
# Create a virtualenv once (.venv, or VENV=...), and (re)install a requirements file into it
# whenever that file changes.
set -euo pipefail
cd "$(dirname "$0")/.."

req=${1:-requirements.txt}
py=${PYTHON:-python3}

if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: Python 3.11 or newer is needed; '$py' is $("$py" --version 2>&1 || echo missing)." >&2
  echo "       Set PYTHON=/path/to/python3.11 and run again." >&2
  exit 1
fi
venv=${VENV:-.venv}
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"

stamp="$venv/.deps-$(basename "$req").sha256"
want=$(cat "$req" requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)  # pyproject: `-e .`
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "Installing $req into $venv ..."
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  echo "$want" >"$stamp"
fi
