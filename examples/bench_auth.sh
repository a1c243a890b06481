#!/usr/bin/env bash
# What token verification costs on the API path (docs/BENCHMARKS.md):
# runs/s of `POST /api/v1/flows/bench-api/runs` (api trigger → map → if,
# durable) with a workspace secret and a bearer token on every request,
# and without one (the open API of a laptop), in alternation, on this
# machine. Prints each round and the medians.
#
#   bash examples/bench_auth.sh                     # 3 rounds of 10 s each
#   ROUNDS=5 SECONDS_PER_RUN=15 bash examples/bench_auth.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
PORT=${PORT:-18183}
cargo build --release -q -p weir-runtime --bin weir --example loadgen
WEIR=${WEIR:-$PWD/target/release/weir}
LOADGEN=$PWD/target/release/examples/loadgen
WORK=$(mktemp -d)
trap 'pkill -f "weir serve --listen 127.0.0.1:$PORT" 2>/dev/null || true; rm -rf "$WORK"' EXIT
SECRET=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
mkdir -p "$WORK/flows"
cp examples/bench/api-flow.yaml "$WORK/flows/"
URL="http://127.0.0.1:$PORT/api/v1/flows/bench-api/runs?tenant=bench"

# Starts the daemon with secret $1 (empty: none); prints its pid once ready.
start() {
  rm -rf "$WORK/data"
  WEIR_WORKSPACE_SECRET="$1" WEIR_LOG=warn "$WEIR" serve --listen "127.0.0.1:$PORT" \
    --flows "$WORK/flows" --data "$WORK/data" >"$WORK/serve.log" 2>&1 &
  local pid=$!
  until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { cat "$WORK/serve.log"; exit 1; }
    sleep 0.01
  done
  echo "$pid"
}

stop() { kill -TERM "$1"; while kill -0 "$1" 2>/dev/null; do sleep 0.01; done; }

# One run of the load generator; prints acknowledged runs/s.
load() {
  "$LOADGEN" --url "$URL" --concurrency 64 --seconds "$SECONDS_PER_RUN" \
    --body examples/payloads/api-run.json "$@" >"$WORK/load.txt"
  grep -q 'statuses     {202: ' "$WORK/load.txt" || { cat "$WORK/load.txt" >&2; exit 1; }
  awk '/^acknowledged/ {gsub(/[(\/s)]/, "", $3); print $3}' "$WORK/load.txt"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

: >"$WORK/open.txt"
: >"$WORK/tokens.txt"
open_round() {
  PID=$(start "")
  OPEN=$(load)
  stop "$PID"
}
tokens_round() {
  PID=$(start "$SECRET")
  TOKEN=$(WEIR_WORKSPACE_SECRET="$SECRET" "$WEIR" token --tenant bench --ttl 1h)
  TOKENS=$(load --header "authorization: Bearer $TOKEN")
  stop "$PID"
}
for round in $(seq "$ROUNDS"); do
  # Each goes first in every other round (a machine that slows down or
  # warms up over the run favours neither).
  if (( round % 2 )); then open_round; tokens_round; else tokens_round; open_round; fi
  echo "round $round: open $OPEN runs/s, with tokens $TOKENS runs/s"
  echo "$OPEN" >>"$WORK/open.txt"
  echo "$TOKENS" >>"$WORK/tokens.txt"
done
OPEN=$(median <"$WORK/open.txt")
TOKENS=$(median <"$WORK/tokens.txt")
echo "median: open $OPEN runs/s, with tokens $TOKENS runs/s ($(awk -v o="$OPEN" -v t="$TOKENS" 'BEGIN {printf "%+.1f", (t - o) / o * 100}') %)"
