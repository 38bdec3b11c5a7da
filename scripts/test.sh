#!/usr/bin/env bash
# Set up .venv with the dev requirements and run the test suite; no tests collected is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh requirements-dev.txt
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
fi
exit "$status"
