#!/usr/bin/env bash
# The main job in one command: builds vigil and runs the whole pipeline on
# this host — a collector and a local agent on loopback ports, data under
# ./.vigil/ — and prints where to look. Ctrl-C stops both gracefully.
#
# Environment overrides: VIGIL_HOME (data folder, default ./.vigil),
# HTTP_PORT (collector, 9490), GRPC_PORT (9491), AGENT_PORT (9492),
# INTERVAL (agent scrape interval, 5s), ALERTMANAGER (an Alertmanager URL
# to notify; the shipped rule pack alerts/*.yml is always evaluated),
# ACTIONS (an actions file: restart rules and autoscalers, see the README).
set -euo pipefail
cd "$(dirname "$0")/.."

home=${VIGIL_HOME:-$PWD/.vigil}
http_port=${HTTP_PORT:-9490}
grpc_port=${GRPC_PORT:-9491}
agent_port=${AGENT_PORT:-9492}
interval=${INTERVAL:-5s}

command -v cargo >/dev/null || { echo "cargo is needed (https://rustup.rs)"; exit 1; }
echo "building vigil (release)…"
cargo build --release --bins --quiet
bin=${CARGO_TARGET_DIR:-$PWD/target}/release
mkdir -p "$home/collector" "$home/agent" "$home/logs"

"$bin"/vigil-collector \
  --http-listen "127.0.0.1:$http_port" --grpc-listen "127.0.0.1:$grpc_port" \
  --data-dir "$home/collector" \
  --rules 'alerts/*.yml' --evaluation-interval 15s \
  ${ALERTMANAGER:+--alertmanager "$ALERTMANAGER"} \
  ${ACTIONS:+--actions "$ACTIONS"} \
  >"$home/logs/collector.log" 2>&1 &
collector=$!
"$bin"/vigil-agent \
  --collector "http://127.0.0.1:$grpc_port" --http-listen "127.0.0.1:$agent_port" \
  --state-dir "$home/agent" --interval "$interval" \
  >"$home/logs/agent.log" 2>&1 &
agent=$!

stop() {
  echo; echo "stopping…"
  kill -TERM "$agent" 2>/dev/null || true; wait "$agent" 2>/dev/null || true
  kill -TERM "$collector" 2>/dev/null || true; wait "$collector" 2>/dev/null || true
  exit 0
}
trap stop INT TERM

sleep 2
for p in $collector $agent; do
  kill -0 "$p" 2>/dev/null || { echo "a component failed to start; see $home/logs/"; tail -n 20 "$home"/logs/*.log; stop; }
done
cat <<MSG
vigil is running on this host (data in $home, logs in $home/logs/).
  web UI                http://127.0.0.1:$http_port/
  collector metrics     http://127.0.0.1:$http_port/metrics
  Prometheus API        http://127.0.0.1:$http_port/api/v1/query?query=node_load1
  (point Grafana's Prometheus data source at http://127.0.0.1:$http_port)
  alerts (rule pack)     http://127.0.0.1:$http_port/api/v1/alerts
  agent's own metrics   http://127.0.0.1:$agent_port/metrics
  agent → collector     gRPC on 127.0.0.1:$grpc_port
Press Ctrl-C to stop.
MSG
wait
