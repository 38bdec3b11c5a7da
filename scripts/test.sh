#!/usr/bin/env bash
# Set up .venv (dev requirements) and .venv-sam (SAM CLI), then run the test suite.
# No tests collected is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh requirements-dev.txt
# SAM CLI and cfn-lint check and build aws/template.yaml in the tests.
VENV=.venv-sam bash scripts/bootstrap.sh requirements-sam.txt

needs_debian_package() {  # package, what needs it; installs it with apt-get when we are root
  local package=$1 for_what=$2
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "Installing Debian's $package package for $for_what ..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
  else
    echo "warning: $package not found; $for_what will fail. Install it: apt-get install $package" >&2
  fi
}
# The store tests run a real Postgres server (tests/postgres_server.py): Debian's package.
if ! command -v pg_ctl >/dev/null && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  needs_debian_package postgresql "the Postgres store tests"
fi
# The dashboard's browser test drives headless Chromium through Playwright: Debian's package
# (Playwright's own browser download needs the internet).
if ! command -v chromium >/dev/null; then
  needs_debian_package chromium "the dashboard's browser test"
fi
status=0
# Two worker processes (TEST_WORKERS=0: one process, as plain pytest runs), each given one test
# file at a time: a module's emulator or app process is started once, in the worker that runs
# it. Much of the suite waits (polls, queues, subprocesses' starts), so two overlap well on 2
# cores; more made the load-bound tests' waits run past their bounds.
workers=${TEST_WORKERS:-2}
xdist=()
[ "$workers" = 0 ] || xdist=(-n "$workers" --dist loadfile)
.venv/bin/python -m pytest "${xdist[@]}" "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
fi
exit "$status"
