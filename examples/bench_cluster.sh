#!/usr/bin/env bash
# Scale-out overhead on one machine (docs/BENCHMARKS.md, "More than one
# process"): webhook → map → if → deliver (AMQP), end to end, with
# `--role all` (one process) and then one `--role ingest` and two
# `--role worker` processes, in the same run. Needs RabbitMQ on
# 127.0.0.1:5672 (guest/guest). On two cores every process, the broker, the
# load generator and the consumer share the same CPUs: this measures what
# the extra hop costs, not how far it scales.
#
#   bash examples/bench_cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${SECONDS_PER_RUN:-15}
AMQP=${AMQP:-amqp://guest:guest@127.0.0.1:5672/%2f}
BASE_PORT=${BASE_PORT:-18380}
if [ -z "${WEIR:-}" ]; then
  cargo build --release -q -p weir-runtime --bin weir --example loadgen --example consumer
fi
WEIR=${WEIR:-$PWD/target/release/weir}
EXAMPLES=${EXAMPLES:-$PWD/target/release/examples}
LOADGEN=$EXAMPLES/loadgen
CONSUMER=$EXAMPLES/consumer
WORK=$(mktemp -d)
PREFIX="weir-bench-$$"
PIDS=()
NAMES=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # The deployment's queues (the broker keeps quorum queues otherwise).
  if command -v rabbitmqctl >/dev/null 2>&1; then
    rabbitmqctl -q list_queues name 2>/dev/null | grep "^$PREFIX\." | while read -r q; do
      rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true
    done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# One weir process in $WORK/$1 on port $2, with more flags after.
start() {
  local name=$1 port=$2
  shift 2
  mkdir -p "$WORK/$name/flows"
  cp examples/bench/deliver-flow.yaml "$WORK/$name/flows/"
  WEIR_LOG=warn "$WEIR" serve --flows "$WORK/$name/flows" --data "$WORK/$name/data" \
    --listen "127.0.0.1:$port" --amqp "$AMQP" "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  NAMES+=("$name")
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do sleep 0.05; done
}

consume() {
  exec "$CONSUMER" --url "$AMQP" --exchange weir.bench --binding '#' --queue "weir.bench.$1" \
    --latency sent_us --idle-exit 5 --quiet --delete 2>&1
}

# Full load, then half of what full load reached; $1 names the round, $2
# is the port to send to.
measure() {
  local round=$1 port=$2
  local url="http://127.0.0.1:$port/hooks/default/deliver/hook"
  echo "== $round: full load, 64 connections, $SECONDS_PER_RUN s"
  consume "$round-full" >"$WORK/$round-full.txt" &
  local c=$!
  sleep 1
  echo "CPU-seconds before:$(cpus)"
  "$LOADGEN" --url "$url" --concurrency 64 --seconds "$SECONDS_PER_RUN" --stamp | tee "$WORK/$round-max.txt"
  wait "$c" || true
  echo "CPU-seconds after: $(cpus) (the consumer drained for 5 s more)"
  cat "$WORK/$round-full.txt"
  local max
  max=$(awk '/^acknowledged/ {gsub(/[(\/s)]/, "", $3); print $3}' "$WORK/$round-max.txt")
  local half=$(( max / 2 ))
  echo "== $round: half load, $half/s open loop, $SECONDS_PER_RUN s"
  consume "$round-half" >"$WORK/$round-half.txt" &
  c=$!
  sleep 1
  "$LOADGEN" --url "$url" --rate "$half" --concurrency 64 --seconds "$SECONDS_PER_RUN" --stamp
  wait "$c" || true
  cat "$WORK/$round-half.txt"
}

# CPU-seconds (user + system) a process has used so far.
cpu_s() { awk -v tck="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / tck}' "/proc/$1/stat" 2>/dev/null || echo 0; }
BROKER=$(pgrep -f beam.smp | head -n 1 || true)
# "name=cpu ..." of every weir process and the broker.
cpus() {
  local out="" i=0
  for p in "${PIDS[@]}"; do out="$out ${NAMES[$i]}=$(cpu_s "$p")"; i=$((i + 1)); done
  [ -n "$BROKER" ] && out="$out rabbitmq=$(cpu_s "$BROKER")"
  echo "$out"
}

rss_mb() { echo $(( $(awk '/^VmHWM/ {print $2}' "/proc/$1/status") / 1024 )); }

start all "$BASE_PORT"
measure all "$BASE_PORT"
echo "RSS (peak): all $(rss_mb "${PIDS[0]}") MB"
kill -TERM "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true
PIDS=()
NAMES=()

CLUSTER=(--queue-prefix "$PREFIX")
start worker-1 $((BASE_PORT + 2)) --role worker "${CLUSTER[@]}"
start worker-2 $((BASE_PORT + 3)) --role worker "${CLUSTER[@]}"
start ingest $((BASE_PORT + 1)) --role ingest "${CLUSTER[@]}"
measure cluster $((BASE_PORT + 1))
echo "RSS (peak): ingest $(rss_mb "${PIDS[2]}") MB, workers $(rss_mb "${PIDS[0]}") and $(rss_mb "${PIDS[1]}") MB"
for p in 2 3; do
  echo "worker on port $((BASE_PORT + p)): $(curl -s "http://127.0.0.1:$((BASE_PORT + p))/metrics" | awk '/^weir_cluster_events_acked_total/ {print $2}') events acked"
done
