#!/usr/bin/env bash
# End-to-end benchmark (docs/BENCHMARKS.md): webhook → map → if → deliver
# (AMQP), everything durable, with a consumer acknowledging each message.
# Needs the RabbitMQ broker on 127.0.0.1:5672 (guest/guest). Reports runs/s
# at full load and, at half of that rate, the latency from sending the
# webhook to consuming its message.
#
#   bash examples/bench_deliver.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${SECONDS_PER_RUN:-15}
PORT=${PORT:-18282}
AMQP=${AMQP:-amqp://guest:guest@127.0.0.1:5672/%2f}
cargo build --release -q -p weir-runtime --bin weir --example loadgen --example consumer
# WEIR=path/to/weir compares another build with the same load generator.
WEIR=${WEIR:-$PWD/target/release/weir}
LOADGEN=$PWD/target/release/examples/loadgen
CONSUMER=$PWD/target/release/examples/consumer
WORK=$(mktemp -d)
trap 'pkill -f "weir serve --listen 127.0.0.1:$PORT" 2>/dev/null || true; pkill -f "consumer --exchange weir.bench" 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/flows"
cp examples/bench/deliver-flow.yaml "$WORK/flows/"
URL="http://127.0.0.1:$PORT/hooks/default/deliver/hook"

WEIR_LOG=warn "$WEIR" serve --flows "$WORK/flows" --data "$WORK/data" --listen "127.0.0.1:$PORT" --amqp "$AMQP" >"$WORK/serve.log" 2>&1 &
PID=$!
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do sleep 0.05; done

consume() {
  exec "$CONSUMER" --url "$AMQP" --exchange weir.bench --binding '#' --queue "weir.bench.$1" \
    --latency sent_us --idle-exit 5 --quiet --delete 2>&1
}

# CPU-seconds (user + system) a process has used so far.
cpu_s() { awk -v tck="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / tck}' "/proc/$1/stat" 2>/dev/null || echo 0; }
BROKER=$(pgrep -f beam.smp | head -n 1 || true)

echo "== full load: 64 connections, $SECONDS_PER_RUN s"
consume full >"$WORK/full.txt" &
C=$!
sleep 1
CPU0="$(cpu_s "$PID") $( [ -n "$BROKER" ] && cpu_s "$BROKER" || echo 0) $(cpu_s "$C")"
/usr/bin/time -f "%U %S" -o "$WORK/loadgen.cpu" \
  "$LOADGEN" --url "$URL" --concurrency 64 --seconds "$SECONDS_PER_RUN" --stamp | tee "$WORK/max.txt"
CPU1="$(cpu_s "$PID") $( [ -n "$BROKER" ] && cpu_s "$BROKER" || echo 0) $(cpu_s "$C")"
wait "$C" || true
cat "$WORK/full.txt"
echo "$CPU0 $CPU1 $(cat "$WORK/loadgen.cpu")" | awk '{ printf "CPU-seconds during the load: weir %.1f, RabbitMQ %.1f, consumer %.1f, loadgen %.1f\n", $4 - $1, $5 - $2, $6 - $3, $7 + $8 }'
echo "RSS (peak): $(( $(awk '/^VmHWM/ {print $2}' /proc/$PID/status) / 1024 )) MB"
curl -s "http://127.0.0.1:$PORT/api/v1/outbox"; echo
MAX=$(awk '/^acknowledged/ {gsub(/[(\/s)]/, "", $3); print $3}' "$WORK/max.txt")
HALF=$(( MAX / 2 ))

echo "== half load: $HALF/s open loop, $SECONDS_PER_RUN s"
consume half >"$WORK/half.txt" &
C=$!
sleep 1
"$LOADGEN" --url "$URL" --rate "$HALF" --concurrency 64 --seconds "$SECONDS_PER_RUN" --stamp
wait "$C" || true
cat "$WORK/half.txt"
echo "RSS: $(( $(awk '/^VmRSS/ {print $2}' /proc/$PID/status) / 1024 )) MB"
kill -TERM "$PID"
