#!/usr/bin/env bash
# Console benchmarks (docs/BENCHMARKS.md, "The console"): the runs page with
# 100,000 runs in the store, the page of a 50-node run, and the page of a
# run whose output is 10 MB. Each page is fetched 21 times with curl over
# loopback; the median and the slowest are reported (time to the last byte).
#
#   bash examples/bench_console.sh
#   RUNS=20000 bash examples/bench_console.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-100000}
PORT=${PORT:-18383}
BIG_PORT=${BIG_PORT:-18384}
cargo build --release -q -p weir-runtime --bin weir --example loadgen
WEIR=${WEIR:-$PWD/target/release/weir}
LOADGEN=$PWD/target/release/examples/loadgen
WORK=$(mktemp -d)
trap 'pkill -f "weir serve --flows $WORK" 2>/dev/null || true; kill "${BIG:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/flows"
cp examples/bench/webhook-flow.yaml "$WORK/flows/"

# A 50-node flow: a chain of maps with an `if` every tenth node (its other
# branch a `fail` that is never taken) and a 4-node loop body.
python3 - "$WORK/flows/fifty.yaml" "$BIG_PORT" <<'EOF'
import sys
path, big_port = sys.argv[1], sys.argv[2]
lines = ["id: fifty", "triggers: [{id: start, type: api}]", "nodes:"]
n, chain = 0, []
while n < 40:
    node = f"step_{n}"
    if n % 10 == 9:
        lines += [f"  - id: {node}", "    type: if", "    condition: 'true'",
                  f"    then: step_{n + 1}", f"    else: stop_{n}",
                  f"  - {{id: stop_{n}, type: fail, message: '\"never\"'}}"]
    else:
        lines += [f"  - id: {node}", "    type: map",
                  f"    mapping: {{n: {n}, text: '\"value of node {n}\"', list: '[1, 2, 3]'}}",
                  f"    next: step_{n + 1}"]
    n += 1
lines += ["  - id: step_40", "    type: for_each", "    items: '[1, 2, 3]'", "    do:",
          "      - {id: a, type: map, mapping: {x: item}, next: b}",
          "      - {id: b, type: map, mapping: {y: nodes.a.x}, next: c}",
          "      - {id: c, type: map, mapping: {z: nodes.b.y}, next: d}",
          "      - {id: d, type: map, mapping: {w: nodes.c.z}}",
          "    next: step_41"]
lines += ["  - {id: step_41, type: map, mapping: {done: 'true'}}"]
open(path, "w").write("\n".join(lines) + "\n")
big = ["id: big", "triggers: [{id: start, type: api}]", "nodes:",
       f"  - {{id: fetch, type: http, url: 'http://127.0.0.1:{big_port}/big.json'}}"]
open(path.replace("fifty", "big"), "w").write("\n".join(big) + "\n")
EOF
python3 -c "import json; print(json.dumps({'blob': 'x' * (10 << 20)}))" >"$WORK/big.json"
(cd "$WORK" && exec python3 -m http.server "$BIG_PORT" --bind 127.0.0.1 >/dev/null 2>&1) &
BIG=$!

WEIR_LOG=warn "$WEIR" serve --flows "$WORK/flows" --data "$WORK/data" --listen "127.0.0.1:$PORT" >"$WORK/serve.log" 2>&1 &
PID=$!
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/serve.log"; exit 1; }
  sleep 0.05
done
BASE="http://127.0.0.1:$PORT"

echo "== storing $RUNS runs (webhook → map → if)"
"$LOADGEN" --url "$BASE/hooks/default/bench/hook" --concurrency 64 --requests "$RUNS" --seconds 600 | grep -E '^(acknowledged|status)'
api_run() { curl -sf -X POST "$BASE/api/v1/flows/$1/runs?wait=30" -H 'content-type: application/json' -d '{}' | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["id"], r["status"], len(r["nodes"]))'; }
read -r FIFTY FIFTY_STATUS FIFTY_NODES < <(api_run fifty)
read -r BIGRUN BIG_STATUS _ < <(api_run big)
echo "50-node run $FIFTY: $FIFTY_STATUS, $FIFTY_NODES node records; 10 MB run $BIGRUN: $BIG_STATUS"
# Let the last runs' commits settle before timing.
sleep 2

# Fetches $1 21 times; prints the median and the slowest time in ms, and the page's size.
measure() {
  local times=() bytes
  for _ in $(seq 1 21); do
    times+=("$(curl -s -o "$WORK/page" -w '%{time_total}' "$BASE$1")")
  done
  bytes=$(wc -c <"$WORK/page")
  printf '%s\n' "${times[@]}" | sort -n | awk -v what="$2" -v bytes="$bytes" \
    '{t[NR] = $1 * 1000} END {printf "%-44s median %6.1f ms, slowest %6.1f ms, %d bytes\n", what, t[11], t[21], bytes}'
}

echo "== pages (21 fetches each, over loopback)"
measure "/console/runs" "runs page, first page of $RUNS runs"
LAST=$(curl -s "$BASE/api/v1/runs?limit=500" | python3 -c 'import json,sys; print(json.load(sys.stdin)["next_after"])')
measure "/console/runs?after=$LAST" "runs page, after the first 500"
measure "/console/runs?flow=fifty" "runs page, filtered to a rare flow"
measure "/console/runs/$FIFTY" "run page, 50-node flow ($FIFTY_NODES records)"
measure "/console/runs/$BIGRUN" "run page, 10 MB output"
measure "/console/flows" "flows page (3 flows, one of 50 nodes)"
measure "/api/v1/runs/$FIFTY" "for comparison: GET /api/v1/runs/{50-node}"
echo "RSS after: $(( $(awk '/^VmRSS/ {print $2}' "/proc/$PID/status") / 1024 )) MB"
