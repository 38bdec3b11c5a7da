#!/usr/bin/env bash
# Set up and run the service: the FastAPI app (local path), the cloud path's offline emulator,
# and the Inngest Dev Server where npx can start it.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh requirements.txt
if [ ! -f .env ]; then
  cp .env.example .env
  echo "Created .env from .env.example (edit it to change settings)."
fi
# The example's input goes where the app reads local inputs (LLM_INPUT_ROOT's default); an
# edited copy is kept.
mkdir -p data/inputs
[ -f data/inputs/reviews.jsonl ] || cp examples/reviews.jsonl data/inputs/

host=${HOST:-127.0.0.1}
port=${PORT:-8000}
app_url="http://127.0.0.1:${port}/api/inngest"
dev_url=${INNGEST_DEV_SERVER_URL:-http://127.0.0.1:8288}
dev_cmd=(npx --yes --ignore-scripts=false inngest-cli@latest dev -u "$app_url" --no-discovery)
dev_log=data/inngest-dev-server.log

answers() { .venv/bin/python -c "import httpx,sys; httpx.get(sys.argv[1], timeout=2).raise_for_status()" "$1" 2>/dev/null; }

explain_no_dev_server() {
  cat >&2 <<MSG

!! The Inngest Dev Server is not running: $1
   The app still serves on http://${host}:${port} (GET /jobs, GET /healthz, /docs), but
   POST /jobs answers 503 until a Dev Server (or Inngest Cloud) takes events.
   npx fetches the Dev Server binary from the internet when it installs; where that is
   blocked it cannot start. On a machine that can, run it yourself in another terminal:
     npx --ignore-scripts=false inngest-cli@latest dev -u ${app_url} --no-discovery
   then open ${dev_url} and send the events listed in the README.

MSG
}

dev_pid=""
emu_pid=""
cleanup() {
  for pid in $dev_pid $emu_pid; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # exit through the EXIT trap, so the helpers stop too

setting() {  # an environment variable, else its value in .env
  local name=$1
  echo "${!name:-$(sed -n "s/^${name}=//p" .env | tail -n 1)}"
}

start_emulator=$(setting START_CLOUD_EMULATOR)
if [ "${start_emulator:-1}" = "0" ]; then
  echo "START_CLOUD_EMULATOR=0: not starting the cloud path emulator."
elif answers "http://127.0.0.1:3000/_emulator"; then
  echo "Using the cloud path emulator already running on :3000"
else
  .venv/bin/python -m aws.local.emulator >data/cloud-emulator.log 2>&1 &
  emu_pid=$!
  echo "Cloud path emulator (SAM stack on moto): http://127.0.0.1:3000/Prod/start" \
    "(x-api-key: local-dev-key; log: data/cloud-emulator.log)"
  (
    for _ in $(seq 1 60); do
      answers "http://127.0.0.1:3000/_emulator" && exit 0
      kill -0 "$emu_pid" 2>/dev/null || break
      sleep 1
    done
    echo "!! The cloud path emulator did not start (ports 3000 and 5000 must be free):" >&2
    tail -n 5 data/cloud-emulator.log >&2
  ) &
fi

start_dev=$(setting START_INNGEST_DEV_SERVER)
if [ "${start_dev:-1}" = "0" ]; then
  echo "START_INNGEST_DEV_SERVER=0: not starting the Inngest Dev Server."
elif answers "$dev_url"; then
  echo "Using the Inngest Dev Server already running at $dev_url"
elif ! command -v npx >/dev/null; then
  explain_no_dev_server "npx was not found (install Node.js 18+ to get it)."
else
  echo "Starting the Inngest Dev Server with npx (log: $dev_log) ..."
  "${dev_cmd[@]}" >"$dev_log" 2>&1 &
  dev_pid=$!
  (
    for _ in $(seq 1 180); do
      if answers "$dev_url"; then echo "Inngest Dev Server UI: $dev_url"; exit 0; fi
      kill -0 "$dev_pid" 2>/dev/null || break
      sleep 1
    done
    explain_no_dev_server "'${dev_cmd[*]}' exited or did not answer within 3 minutes (see $dev_log)."
  ) &
fi

echo "App: http://${host}:${port}  (dashboard at /ui, API docs at /docs, Inngest endpoint at /api/inngest)"
.venv/bin/uvicorn main:app --host "$host" --port "$port"
