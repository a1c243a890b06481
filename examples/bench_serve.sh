#!/usr/bin/env bash
# Benchmarks of `weir serve` (docs/BENCHMARKS.md): webhook throughput and
# latency with durable acknowledgements, memory, loading 1,000 flows, and
# starting with 100,000 unfinished runs on disk. Everything runs on this
# machine: the daemon, the load generator and the disk.
#
#   bash examples/bench_serve.sh            # all of it (~3 minutes)
#   SECONDS_PER_RUN=5 UNFINISHED=20000 bash examples/bench_serve.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${SECONDS_PER_RUN:-15}
UNFINISHED=${UNFINISHED:-100000}
PORT=${PORT:-18181}
cargo build --release -q -p weir-runtime --bin weir --example loadgen
# WEIR=path/to/weir compares another build with the same load generator.
WEIR=${WEIR:-$PWD/target/release/weir}
LOADGEN=$PWD/target/release/examples/loadgen
WORK=$(mktemp -d)
trap 'pkill -f "weir serve --listen 127.0.0.1:$PORT" 2>/dev/null || true; rm -rf "$WORK"' EXIT

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
now_ms() { date +%s%3N; }

# Starts the daemon on $1 (flows) and $2 (data); prints its pid once it answers.
start() {
  WEIR_LOG=warn "$WEIR" serve --flows "$1" --data "$2" --listen "127.0.0.1:$PORT" >"$WORK/serve.log" 2>&1 &
  local pid=$!
  until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { cat "$WORK/serve.log"; exit 1; }
    sleep 0.01
  done
  echo "$pid"
}

# Waits until process $1 is gone (it is not this shell's child).
gone() { while kill -0 "$1" 2>/dev/null; do sleep 0.01; done; }

stop() { kill -TERM "$1"; gone "$1"; }

echo "== webhook → map → if, durable acknowledgements"
mkdir -p "$WORK/flows"
cp examples/bench/webhook-flow.yaml "$WORK/flows/"
PID=$(start "$WORK/flows" "$WORK/data")
sleep 2
echo "idle RSS: $(( $(rss_kb "$PID") / 1024 )) MB"
URL="http://127.0.0.1:$PORT/hooks/default/bench/hook"
"$LOADGEN" --url "$URL" --concurrency 64 --seconds "$SECONDS_PER_RUN" | tee "$WORK/max.txt"
MAX=$(awk '/^acknowledged/ {gsub(/[(\/s)]/, "", $3); print $3}' "$WORK/max.txt")
echo "RSS under load (peak): $(( $(hwm_kb "$PID") / 1024 )) MB"
HALF=$(( MAX / 2 ))
echo "-- at half of that rate: $HALF/s"
"$LOADGEN" --url "$URL" --rate "$HALF" --concurrency 64 --seconds "$SECONDS_PER_RUN"
echo "RSS after: $(( $(rss_kb "$PID") / 1024 )) MB"
stop "$PID"

echo "== loading 1,000 flow files"
mkdir -p "$WORK/many"
for i in $(seq 1 1000); do
  sed "s/^id: bench/id: bench-$i/" examples/bench/webhook-flow.yaml >"$WORK/many/flow-$i.yaml"
done
T0=$(now_ms); "$WEIR" validate "$WORK/many" 2>/dev/null; T1=$(now_ms)
echo "weir validate: $(( T1 - T0 )) ms"
T0=$(now_ms); PID=$(start "$WORK/many" "$WORK/data-many"); T1=$(now_ms)
echo "weir serve, start to serving: $(( T1 - T0 )) ms; RSS $(( $(rss_kb "$PID") / 1024 )) MB"
stop "$PID"

echo "== start with $UNFINISHED unfinished runs on disk"
mkdir -p "$WORK/sleepy"
cp examples/bench/sleepy-flow.yaml "$WORK/sleepy/"
PID=$(start "$WORK/sleepy" "$WORK/data-sleepy")
"$LOADGEN" --url "http://127.0.0.1:$PORT/hooks/default/sleepy/hook" --concurrency 64 --requests "$UNFINISHED" --seconds 600 | grep -E "acknowledged|statuses"
kill -9 "$PID"; gone "$PID"
T0=$(now_ms); PID=$(start "$WORK/sleepy" "$WORK/data-sleepy"); T1=$(now_ms)
echo "start to serving: $(( T1 - T0 )) ms"
for s in 1 5 15; do
  sleep $(( s == 1 ? 1 : s == 5 ? 4 : 10 ))
  echo "after ${s}s: $(curl -s "http://127.0.0.1:$PORT/readyz"), RSS $(( $(rss_kb "$PID") / 1024 )) MB"
done
stop "$PID"
