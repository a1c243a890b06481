#!/usr/bin/env bash
# MCP against the HTTP API (docs/BENCHMARKS.md): the create-contact action
# against the local example CRM (examples/fake_app.rs), called as an MCP
# `tools/call` on /mcp (stateless 2026-07-28 requests) and as POST
# /api/v1/actions/create-contact/run, alternately, 32 concurrent callers
# each; then `tools/list` for a tenant whose integration implements 200
# actions.
#
#   bash examples/bench_mcp.sh           # 10 s each, 2 rounds
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
ROUNDS=${ROUNDS:-2}
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
mkdir -p "$WORK/flows" "$WORK/integrations" "$WORK/actions"
cp integrations/example-crm.yaml "$WORK/integrations/"
cp actions/create-contact.yaml "$WORK/actions/"
# A second integration with 200 actions, for the tools/list figure.
{
  echo "key: wide"
  echo "base_url: http://127.0.0.1:8090/eu"
  echo "auth: {type: api_key, in: header, name: X-API-Key}"
  echo "actions:"
  for n in $(seq 1 200); do
    echo "  - key: action-$n"
    echo "    description: Action number $n of a wide integration."
    echo "    input_schema: {type: object, properties: {email: {type: string}, n: {type: integer}}}"
    echo "    request: {method: POST, path: /contacts, body: {email: input.email}}"
  done
} >"$WORK/integrations/wide.yaml"
FAKE_APP_LISTEN=127.0.0.1:8090 "$FAKE_APP" >"$WORK/app.log" 2>&1 &
APP=$!

WEIR_LOG=warn "$WEIR" serve --listen "127.0.0.1:$PORT" --flows "$WORK/flows" \
  --integrations "$WORK/integrations" --actions "$WORK/actions" --data "$WORK/data" >"$WORK/serve.log" 2>&1 &
PID=$!
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/serve.log"; exit 1; }
  sleep 0.01
done
BASE="http://127.0.0.1:$PORT"
TOKEN=$("$WEIR" token --tenant bench --ttl 1h)
WIDE=$("$WEIR" token --tenant wide --ttl 1h)
curl -sf -X POST "$BASE/api/v1/connections" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -d '{"integration": "example-crm", "parameters": {"region": "eu"}, "credentials": {"api_key": "demo-key"}}' >/dev/null
curl -sf -X POST "$BASE/api/v1/connections" -H "authorization: Bearer $WIDE" -H 'content-type: application/json' \
  -d '{"integration": "wide", "credentials": {"api_key": "demo-key"}}' >/dev/null
META='"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}, "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"}}'
echo '{"input": {"email": "ada@example.com", "name": "Ada"}}' >"$WORK/http.json"
echo "{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"tools/call\", \"params\": {\"name\": \"create-contact\", \"arguments\": {\"email\": \"ada@example.com\", \"name\": \"Ada\"}, $META}}" >"$WORK/mcp.json"
MCP_HEADERS=(--header "authorization: Bearer $TOKEN" --header "accept: application/json, text/event-stream"
  --header "mcp-protocol-version: 2026-07-28" --header "mcp-method: tools/call" --header "mcp-name: create-contact")
# One call of each, to show they do the same thing.
curl -sf -X POST "$BASE/api/v1/actions/create-contact/run" -H "authorization: Bearer $TOKEN" \
  -H 'content-type: application/json' -d @"$WORK/http.json"; echo
curl -sf -X POST "$BASE/mcp" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2026-07-28' \
  -H 'mcp-method: tools/call' -H 'mcp-name: create-contact' -d @"$WORK/mcp.json" | grep -o '"structuredContent":{[^}]*}' \
  || { echo "the MCP call did not answer structuredContent" >&2; exit 1; }

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round: POST /api/v1/actions/create-contact/run, 32 concurrent, $SECONDS_PER_RUN s"
  "$LOADGEN" --url "$BASE/api/v1/actions/create-contact/run" --concurrency 32 --seconds "$SECONDS_PER_RUN" \
    --body "$WORK/http.json" --header "authorization: Bearer $TOKEN" | grep -E 'acknowledged|statuses|latency'
  echo "== round $round: MCP tools/call create-contact, 32 concurrent, $SECONDS_PER_RUN s"
  "$LOADGEN" --url "$BASE/mcp" --concurrency 32 --seconds "$SECONDS_PER_RUN" \
    --body "$WORK/mcp.json" "${MCP_HEADERS[@]}" | grep -E 'acknowledged|statuses|latency'
done

echo "== tools/list for a tenant with 200 actions (20 calls, each timed)"
echo "{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"tools/list\", \"params\": {$META}}" >"$WORK/list.json"
for _ in $(seq 1 20); do
  curl -s -o "$WORK/list.out" -w '%{time_total}\n' -X POST "$BASE/mcp" -H "authorization: Bearer $WIDE" \
    -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
    -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: tools/list' -d @"$WORK/list.json"
done | sort -n | awk '{a[NR]=$1*1000} END {printf "tools/list: p50 %.2f ms, max %.2f ms over %d calls\n", a[int((NR+1)/2)], a[NR], NR}'
echo "tools listed: $(grep -o '"name":"action-[0-9]*"' "$WORK/list.out" | wc -l)"
kill -TERM "$PID"
