#!/usr/bin/env bash
# Set up .venv (dev requirements) and .venv-sam (SAM CLI), then run the test suite.
# No tests collected is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh requirements-dev.txt
# SAM CLI and cfn-lint check and build aws/template.yaml in the tests.
VENV=.venv-sam bash scripts/bootstrap.sh requirements-sam.txt
# The store tests run a real Postgres server (tests/postgres_server.py): Debian's package.
if ! command -v pg_ctl >/dev/null && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "Installing Debian's postgresql package for the store tests ..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "warning: no Postgres server found; the Postgres store tests will fail." \
      "Install it: apt-get install postgresql" >&2
  fi
fi
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
fi
exit "$status"
