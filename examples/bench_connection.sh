#!/usr/bin/env bash
# What a connection costs an `http` node (docs/BENCHMARKS.md): runs/s of
# the api trigger → http to the local example CRM (examples/fake_app.rs),
# through the tenant's API-key connection (looked up, decrypted, joined to
# base_url) and with the URL and key written in the flow, alternately, at
# 64 concurrent requests.
#
#   bash examples/bench_connection.sh           # 2 rounds of 10 s each
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-2}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
PORT=${PORT:-18185}
cargo build --release -q -p weir-runtime --bin weir --example loadgen --example fake_app
WEIR=${WEIR:-$PWD/target/release/weir}
LOADGEN=$PWD/target/release/examples/loadgen
FAKE_APP=$PWD/target/release/examples/fake_app
WORK=$(mktemp -d)
trap 'pkill -f "weir serve --listen 127.0.0.1:$PORT" 2>/dev/null || true; kill "$APP" 2>/dev/null || true; rm -rf "$WORK"' EXIT
export WEIR_WORKSPACE_SECRET
WEIR_WORKSPACE_SECRET=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
export WEIR_SECRET_KEYS="k1:$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
export BENCH_CRM_KEY=demo-key
mkdir -p "$WORK/flows" "$WORK/integrations"
cp examples/bench/connection-flow.yaml examples/bench/direct-flow.yaml "$WORK/flows/"
cp integrations/example-crm.yaml "$WORK/integrations/"
FAKE_APP_LISTEN=127.0.0.1:8090 "$FAKE_APP" >"$WORK/app.log" 2>&1 &
APP=$!

WEIR_LOG=warn "$WEIR" serve --listen "127.0.0.1:$PORT" --flows "$WORK/flows" \
  --integrations "$WORK/integrations" --data "$WORK/data" >"$WORK/serve.log" 2>&1 &
PID=$!
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/serve.log"; exit 1; }
  sleep 0.01
done
TOKEN=$("$WEIR" token --tenant bench --ttl 1h)
curl -sf -X POST "http://127.0.0.1:$PORT/api/v1/connections" -H "authorization: Bearer $TOKEN" \
  -H 'content-type: application/json' \
  -d '{"integration": "example-crm", "parameters": {"region": "eu"}, "credentials": {"api_key": "demo-key"}}' >/dev/null
echo '{"input": {"id": 7}}' >"$WORK/body.json"

load() {
  "$LOADGEN" --url "http://127.0.0.1:$PORT/api/v1/flows/$1/runs?wait=30" --concurrency 64 \
    --seconds "$SECONDS_PER_RUN" --body "$WORK/body.json" --header "authorization: Bearer $TOKEN" >"$WORK/load.txt"
  grep -q 'statuses     {200: ' "$WORK/load.txt" || { cat "$WORK/load.txt" >&2; exit 1; }
  awk '/^acknowledged/ {gsub(/[(\/s)]/, "", $3); print $3}' "$WORK/load.txt"
}

for round in $(seq "$ROUNDS"); do
  if (( round % 2 )); then
    THROUGH=$(load bench-connection); DIRECT=$(load bench-direct)
  else
    DIRECT=$(load bench-direct); THROUGH=$(load bench-connection)
  fi
  echo "round $round: through the connection $THROUGH runs/s, URL and key in the flow $DIRECT runs/s"
done
kill -TERM "$PID"
