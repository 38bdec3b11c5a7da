#!/usr/bin/env bash
# Set up .venv (dev requirements) and .venv-sam (SAM CLI), then run the test suite.
# No tests collected is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh requirements-dev.txt
# SAM CLI and cfn-lint check and build aws/template.yaml in the tests.
VENV=.venv-sam bash scripts/bootstrap.sh requirements-sam.txt
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
fi
exit "$status"
