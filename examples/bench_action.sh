#!/usr/bin/env bash
# Action runs through the API (docs/BENCHMARKS.md): POST
# /api/v1/actions/create-contact/run against the local example CRM
# (examples/fake_app.rs) through the tenant's API-key connection — input
# and output checked against their schemas, every call a durable run — at
# 64 concurrent callers, then at half of that rate for the latency.
#
#   bash examples/bench_action.sh           # 10 s each
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
PORT=${PORT:-18186}
cargo build --release -q -p weir-runtime --bin weir --example loadgen --example fake_app
WEIR=${WEIR:-$PWD/target/release/weir}
LOADGEN=$PWD/target/release/examples/loadgen
FAKE_APP=$PWD/target/release/examples/fake_app
WORK=$(mktemp -d)
trap 'pkill -f "weir serve --listen 127.0.0.1:$PORT" 2>/dev/null || true; kill "$APP" 2>/dev/null || true; rm -rf "$WORK"' EXIT
export WEIR_WORKSPACE_SECRET
WEIR_WORKSPACE_SECRET=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
export WEIR_SECRET_KEYS="k1:$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
mkdir -p "$WORK/flows" "$WORK/integrations" "$WORK/actions"
cp integrations/example-crm.yaml "$WORK/integrations/"
cp actions/create-contact.yaml "$WORK/actions/"
FAKE_APP_LISTEN=127.0.0.1:8090 "$FAKE_APP" >"$WORK/app.log" 2>&1 &
APP=$!

WEIR_LOG=warn "$WEIR" serve --listen "127.0.0.1:$PORT" --flows "$WORK/flows" \
  --integrations "$WORK/integrations" --actions "$WORK/actions" --data "$WORK/data" >"$WORK/serve.log" 2>&1 &
PID=$!
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/serve.log"; exit 1; }
  sleep 0.01
done
TOKEN=$("$WEIR" token --tenant bench --ttl 1h)
curl -sf -X POST "http://127.0.0.1:$PORT/api/v1/connections" -H "authorization: Bearer $TOKEN" \
  -H 'content-type: application/json' \
  -d '{"integration": "example-crm", "parameters": {"region": "eu"}, "credentials": {"api_key": "demo-key"}}' >/dev/null
echo '{"input": {"email": "ada@example.com", "name": "Ada"}}' >"$WORK/body.json"
URL="http://127.0.0.1:$PORT/api/v1/actions/create-contact/run"

echo "== 64 concurrent callers, $SECONDS_PER_RUN s"
"$LOADGEN" --url "$URL" --concurrency 64 --seconds "$SECONDS_PER_RUN" --body "$WORK/body.json" \
  --header "authorization: Bearer $TOKEN" | tee "$WORK/max.txt"
grep -q 'statuses     {200: ' "$WORK/max.txt" || { echo "not every call answered 200" >&2; exit 1; }
MAX=$(awk '/^acknowledged/ {gsub(/[(\/s)]/, "", $3); print $3}' "$WORK/max.txt")
HALF=$(( MAX / 2 ))
echo "== half of that rate: $HALF/s open loop, $SECONDS_PER_RUN s"
"$LOADGEN" --url "$URL" --rate "$HALF" --concurrency 64 --seconds "$SECONDS_PER_RUN" \
  --body "$WORK/body.json" --header "authorization: Bearer $TOKEN"
echo "RSS: $(( $(awk '/^VmRSS/ {print $2}' /proc/$PID/status) / 1024 )) MB"
kill -TERM "$PID"
