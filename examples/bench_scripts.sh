#!/usr/bin/env bash
# The HTTP edge while scripts burn CPU (docs/BENCHMARKS.md): /healthz and a
# webhook's acknowledgement, timed while runs of a script that loops until
# its 2 s timeout keep every worker busy.
#
#   bash examples/bench_scripts.sh
#   WEIR=path/to/another/weir bash examples/bench_scripts.sh   # compare builds
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${SECONDS_PER_RUN:-15}
PORT=${PORT:-18383}
cargo build --release -q -p weir-runtime --bin weir --example loadgen
WEIR=${WEIR:-$PWD/target/release/weir}
LOADGEN=$PWD/target/release/examples/loadgen
WORK=$(mktemp -d)
trap 'pkill -f "weir serve --listen 127.0.0.1:$PORT" 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/flows"
cp examples/bench/burn-flow.yaml examples/bench/webhook-flow.yaml "$WORK/flows/"
WEIR_LOG=error "$WEIR" serve --listen "127.0.0.1:$PORT" --flows "$WORK/flows" --data "$WORK/data" >"$WORK/serve.log" 2>&1 &
PID=$!
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do sleep 0.05; done
BASE="http://127.0.0.1:$PORT"

echo "== idle: /healthz at 100/s"
"$LOADGEN" --url "$BASE/healthz" --get --rate 100 --concurrency 8 --seconds 5 | grep -E "statuses|latency"

echo "== while scripts burn: 6 runs started per second (each burns 2 s of CPU)"
"$LOADGEN" --url "$BASE/hooks/default/burn/hook" --rate 6 --concurrency 16 --seconds "$((SECONDS_PER_RUN + 4))" >"$WORK/burn.txt" &
BURN=$!
sleep 3
echo "-- /healthz at 100/s"
"$LOADGEN" --url "$BASE/healthz" --get --rate 100 --concurrency 8 --seconds "$SECONDS_PER_RUN" | grep -E "statuses|latency"
wait "$BURN" || true
echo "-- the burning webhooks themselves"
grep -E "statuses|latency" "$WORK/burn.txt"

echo "== while scripts burn: webhook acknowledgements at 200/s"
"$LOADGEN" --url "$BASE/hooks/default/burn/hook" --rate 6 --concurrency 16 --seconds "$((SECONDS_PER_RUN + 4))" >/dev/null &
BURN=$!
sleep 3
"$LOADGEN" --url "$BASE/hooks/default/bench/hook" --rate 200 --concurrency 32 --seconds "$SECONDS_PER_RUN" | grep -E "statuses|latency"
wait "$BURN" || true
kill -TERM "$PID"
