#!/usr/bin/env bash
# An http node through an OAuth2 connection (docs/BENCHMARKS.md): runs/s at
# 64 concurrent requests to the local example app (examples/fake_app.rs),
# and how many token-endpoint calls weir made meanwhile. The app's tokens
# live TOKEN_TTL seconds (default 90): weir refreshes a token when less than
# 60 s of it remain, so a run of SECONDS_PER_RUN (default 40) seconds should
# see exactly one refresh per token lifetime past the first 30 s, and none
# before.
#
#   bash examples/bench_oauth2.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${SECONDS_PER_RUN:-40}
TOKEN_TTL=${TOKEN_TTL:-90}
PORT=${PORT:-18187}
cargo build --release -q -p weir-runtime --bin weir --example loadgen --example fake_app
WEIR=${WEIR:-$PWD/target/release/weir}
LOADGEN=$PWD/target/release/examples/loadgen
FAKE_APP=$PWD/target/release/examples/fake_app
WORK=$(mktemp -d)
trap 'pkill -f "weir serve --listen 127.0.0.1:$PORT" 2>/dev/null || true; kill "$APP" 2>/dev/null || true; rm -rf "$WORK"' EXIT
export WEIR_WORKSPACE_SECRET
WEIR_WORKSPACE_SECRET=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
export WEIR_SECRET_KEYS="k1:$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
export FAKE_CLIENT_ID=weir FAKE_CLIENT_SECRET=bench-secret
mkdir -p "$WORK/flows" "$WORK/integrations"
cp examples/bench/oauth2-flow.yaml "$WORK/flows/"
cat >"$WORK/integrations/fake-oauth.yaml" <<YAML
key: fake-oauth
base_url: http://127.0.0.1:8090/eu
auth:
  type: oauth2
  authorize_url: http://127.0.0.1:8090/oauth/authorize
  token_url: http://127.0.0.1:8090/oauth/token
  client_id_env: FAKE_CLIENT_ID
  client_secret_env: FAKE_CLIENT_SECRET
test:
  request: {path: /me}
YAML
FAKE_APP_TOKEN_TTL=$TOKEN_TTL FAKE_APP_LISTEN=127.0.0.1:8090 "$FAKE_APP" >"$WORK/app.log" 2>&1 &
APP=$!
WEIR_LOG=warn "$WEIR" serve --listen "127.0.0.1:$PORT" --flows "$WORK/flows" \
  --integrations "$WORK/integrations" --data "$WORK/data" >"$WORK/serve.log" 2>&1 &
PID=$!
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/serve.log"; exit 1; }
  sleep 0.01
done
API="http://127.0.0.1:$PORT"
TOKEN=$("$WEIR" token --tenant bench --ttl 1h)
ADMIN=$("$WEIR" token --admin --ttl 1h)
# Connect: the request's state, then the callback as the provider would
# send the browser (the example app grants any code).
URL=$(curl -sf -X POST "$API/api/v1/connection-requests" -H "authorization: Bearer $TOKEN" \
  -H 'content-type: application/json' -d '{"integration": "fake-oauth"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])')
STATE=$(python3 -c 'import sys, urllib.parse as u; print(u.parse_qs(u.urlparse(sys.argv[1]).query)["state"][0])' "$URL")
curl -sf "$API/oauth2/callback?code=bench&state=$STATE" >/dev/null
grants() { curl -sf http://127.0.0.1:8090/stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["token_grants"])'; }
refreshes() { curl -sf "$API/metrics" -H "authorization: Bearer $ADMIN" | awk '/^weir_oauth2_refresh_total/ {print $2}'; }
echo '{}' >"$WORK/body.json"
BEFORE=$(grants)
"$LOADGEN" --url "$API/api/v1/flows/bench-oauth2/runs?wait=30" --concurrency 64 \
  --seconds "$SECONDS_PER_RUN" --body "$WORK/body.json" --header "authorization: Bearer $TOKEN" | tee "$WORK/load.txt"
grep -q 'statuses     {200: ' "$WORK/load.txt" || { echo "some runs failed" >&2; exit 1; }
echo "token-endpoint calls during the run: $(( $(grants) - BEFORE )) (tokens live ${TOKEN_TTL}s; refresh grants counted by weir: $(refreshes))"
kill -TERM "$PID"
