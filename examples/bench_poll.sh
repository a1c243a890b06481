#!/usr/bin/env bash
# Poll trigger admissions (docs/BENCHMARKS.md): how long after start the
# daemon has admitted a run for each of 10,000 records its first poll finds
# (`baseline: false`). The records are a static JSON file served by
# python3's http.server on this machine.
#
#   bash examples/bench_poll.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS=${RECORDS:-10000}
PORT=${PORT:-18484}
SERVE_PORT=${SERVE_PORT:-18485}
cargo build --release -q -p weir-runtime --bin weir
WEIR=$PWD/target/release/weir
WORK=$(mktemp -d)
trap 'pkill -f "weir serve --flows $WORK" 2>/dev/null || true; kill "$HTTP" 2>/dev/null || true; rm -rf "$WORK"' EXIT

mkdir -p "$WORK/www" "$WORK/flows"
python3 -c "import json,sys; json.dump([{'id': i, 'v': 1, 'name': 'record %d' % i} for i in range($RECORDS)], sys.stdout)" >"$WORK/www/items.json"
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$WORK/www" >/dev/null 2>&1 &
HTTP=$!
cat >"$WORK/flows/poll.yaml" <<YAML
id: items-sync
triggers:
  - id: changes
    type: poll
    every: 1h
    baseline: false
    request: {url: "http://127.0.0.1:$PORT/items.json"}
    items: response.body
    key: item.id
    version: item.v
nodes:
  - {id: note, type: map, mapping: {kind: event.type}}
YAML
until curl -sf "http://127.0.0.1:$PORT/items.json" >/dev/null; do sleep 0.05; done

START=$(date +%s%3N)
WEIR_LOG=warn "$WEIR" serve --flows "$WORK/flows" --data "$WORK/data" --listen "127.0.0.1:$SERVE_PORT" >"$WORK/serve.log" 2>&1 &
admitted() { curl -s "http://127.0.0.1:$SERVE_PORT/metrics" | awk '/^weir_events_received_total/ {print $2}'; }
until [ "$(admitted)" = "$RECORDS" ]; do sleep 0.02; done
END=$(date +%s%3N)
echo "$RECORDS poll changes admitted $((END - START)) ms after start"
