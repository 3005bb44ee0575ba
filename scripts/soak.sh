#!/usr/bin/env bash
# Soak and load runs of the collector with simulated agents (vigil-loadgen),
# the figures of docs/reliability.md ("Soak and load"). Release binaries, loopback only.
#
#   scripts/soak.sh outage   # 50 agents; the collector stopped for 10 minutes, then restarted:
#                            # nothing lost (every series checked), time to drain
#   scripts/soak.sh load     # 200 agents x 1,000 series every 10 s for 30 minutes with
#                            # dashboard queries running: collector RSS and CPU over time,
#                            # ack latency, query latency, nothing lost
#
# Knobs (environment): SOAK_AGENTS, SOAK_SERIES, SOAK_INTERVAL (10s), SOAK_DURATION (load: 30m),
# SOAK_WARMUP (outage: 2m), SOAK_OUTAGE (outage: 10m), SOAK_AFTER (outage: 1m after the drain),
# SOAK_QUERY_EVERY (load: 30, seconds), SOAK_OUT (default target/soak/<mode>-<time>),
# SOAK_NO_BUILD=1 to use the binaries as built.
# Output in SOAK_OUT: result.txt (the figures), resources.csv (every 10 s: collector RSS and CPU,
# loadgen totals), queries.csv (every dashboard query: status, seconds), summary.json (loadgen's),
# collector*.log, loadgen.log. Exit status 0 when nothing was lost.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
case "$mode" in
  outage)
    agents="${SOAK_AGENTS:-50}"; series="${SOAK_SERIES:-100}" ;;
  load)
    agents="${SOAK_AGENTS:-200}"; series="${SOAK_SERIES:-1000}" ;;
  *) echo "usage: $0 outage|load   (see the header for the knobs)" >&2; exit 2 ;;
esac
interval="${SOAK_INTERVAL:-10s}"
out="${SOAK_OUT:-target/soak/$mode-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if [ "${SOAK_NO_BUILD:-0}" != 1 ]; then
  cargo build --release -p vigil-collector -p vigil-loadgen
fi
collector_bin="$PWD/target/release/vigil-collector"
loadgen_bin="$PWD/target/release/vigil-loadgen"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_port=$(free_port); grpc_port=$(free_port)
http="http://127.0.0.1:$http_port"
data="$out/data"; mkdir -p "$data"
head -c 24 /dev/urandom | base64 > "$out/token"
hz=$(getconf CLK_TCK)

collector_pid=""
start_collector() {
  "$collector_bin" --http-listen "127.0.0.1:$http_port" --grpc-listen "127.0.0.1:$grpc_port" \
    --data-dir "$data" --token-file "$out/token" >>"$out/collector.log" 2>&1 &
  collector_pid=$!
  for _ in $(seq 1 600); do
    if curl -fsS "$http/-/ready" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "collector did not become ready; see $out/collector.log" >&2; return 1
}
stop_collector() {
  kill -TERM "$collector_pid" 2>/dev/null || true
  wait "$collector_pid" 2>/dev/null || true
}
loadgen_pid=""; sampler_pid=""; queries_pid=""
cleanup() {
  for p in $queries_pid $sampler_pid $loadgen_pid; do kill "$p" 2>/dev/null || true; done
  [ -n "$collector_pid" ] && kill -TERM "$collector_pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

# every 10 s: collector RSS and CPU (ticks since the last line), loadgen totals
sampler() {
  echo "time_s,collector_rss_mib,collector_cpu_pct,collector_threads,unacked_batches,oldest_unacked_s,batches_acked,samples_acked,reconnects" >"$out/resources.csv"
  local t0 prev_ticks="" prev_t="" pid
  t0=$(date +%s.%N)
  while :; do
    pid=$(cat "$out/collector.pid" 2>/dev/null || true)
    local now rss="" ticks="" thr="" cpu=""
    now=$(date +%s.%N)
    if [ -n "$pid" ] && [ -r "/proc/$pid/stat" ]; then
      rss=$(awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$pid/status" 2>/dev/null || true)
      thr=$(awk '/^Threads/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
      ticks=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12+$13}')
      if [ -n "$prev_ticks" ] && [ "$ticks" -ge "$prev_ticks" ]; then
        cpu=$(python3 -c "print(round(100*($ticks-$prev_ticks)/$hz/($now-$prev_t),1))")
      fi
      prev_ticks=$ticks; prev_t=$now
    else
      prev_ticks=""
    fi
    local st=",,,,"
    if [ -r "$out/status.json" ]; then
      st=$(python3 -c "import json; s=json.load(open('$out/status.json')); print(f\"{s['unacked_batches']},{s['oldest_unacked_age_ms']/1000:.1f},{s['batches_acked']},{s['samples_acked']},{s['reconnects']}\")" 2>/dev/null || echo ",,,,")
    fi
    echo "$(python3 -c "print(round($now-$t0))"),$rss,$cpu,$thr,$st" >>"$out/resources.csv"
    sleep 10
  done
}

# what a dashboard asks every refresh (Grafana's default 30 s): the whole fleet's rate over
# the last 15 minutes, per agent for 11 agents over the last hour, a top-k of one agent, a count
query_loop() {
  echo "time_s,query,status,seconds" >"$out/queries.csv"
  local every="${SOAK_QUERY_EVERY:-30}" t0 i=0
  t0=$(date +%s)
  while :; do
    local now start
    now=$(date +%s); start=$((now - 900))
    for spec in \
      "range|fleet_rate_15m|sum(rate(vigil_loadgen_counter_total[1m]))|$((now - 900))" \
      "range|per_agent_rate_1h|sum by (node) (rate(vigil_loadgen_counter_total{node=~\"loadgen-1.?\"}[1m]))|$((now - 3600))" \
      "instant|topk_one_agent|topk(5, rate(vigil_loadgen_counter_total{node=\"loadgen-7\"}[5m]))|" \
      "instant|series_count|count(vigil_loadgen_counter_total)|" ; do
      IFS='|' read -r kind name q qstart <<<"$spec"
      local res
      if [ "$kind" = range ]; then
        res=$(curl -s -o /dev/null -w '%{http_code},%{time_total}' --max-time 120 "$http/api/v1/query_range" \
          --data-urlencode "query=$q" --data-urlencode "start=$qstart" --data-urlencode "end=$now" \
          --data-urlencode "step=15" || echo "000,0")
      else
        res=$(curl -s -o /dev/null -w '%{http_code},%{time_total}' --max-time 120 "$http/api/v1/query" \
          --data-urlencode "query=$q" || echo "000,0")
      fi
      echo "$(( $(date +%s) - t0 )),$name,$res" >>"$out/queries.csv"
    done
    i=$((i + 1))
    sleep "$every"
  done
}

start_collector
echo "$collector_pid" >"$out/collector.pid"
sampler & sampler_pid=$!

loadgen_args=(--collector "http://127.0.0.1:$grpc_port" --agents "$agents" --series "$series"
  --interval "$interval" --token-file "$out/token" --status-file "$out/status.json"
  --summary "$out/summary.json" --verify-url "$http" --drain-timeout 20m)
started=$(date +%s)

if [ "$mode" = outage ]; then
  warmup="${SOAK_WARMUP:-2m}"; outage="${SOAK_OUTAGE:-10m}"; after="${SOAK_AFTER:-1m}"
  to_s() { python3 -c "import re,sys; v=sys.argv[1]; m=re.fullmatch(r'(\d+)(ms|s|m|h)',v); print(int(m[1])*{'ms':0.001,'s':1,'m':60,'h':3600}[m[2]])" "$1"; }
  "$loadgen_bin" "${loadgen_args[@]}" >"$out/loadgen.out" 2>"$out/loadgen.log" & loadgen_pid=$!
  sleep "$(to_s "$warmup")"
  echo "stopping the collector for $outage"
  t_stop=$(date +%s.%N)
  stop_collector
  rm -f "$out/collector.pid"
  sleep "$(to_s "$outage")"
  backlog=$(python3 -c "import json; s=json.load(open('$out/status.json')); print(s['unacked_batches'], round(s['oldest_unacked_age_ms']/1000))")
  echo "restarting the collector (backlog: batches, oldest age in s: $backlog)"
  t_restart=$(date +%s.%N)
  start_collector
  t_ready=$(date +%s.%N)
  echo "$collector_pid" >"$out/collector.pid"
  # drained: no batch older than two intervals is waiting for its ack
  limit_ms=$(( $(to_s "$interval") * 2000 ))
  while :; do
    if python3 -c "import json,sys; s=json.load(open('$out/status.json')); sys.exit(0 if s['oldest_unacked_age_ms'] < $limit_ms and s['time_ms']/1000 > $t_ready else 1)" 2>/dev/null; then break; fi
    sleep 0.5
  done
  t_drained=$(date +%s.%N)
  sleep "$(to_s "$after")"
  kill -INT "$loadgen_pid"
  set +e; wait "$loadgen_pid"; lg_rc=$?; set -e; loadgen_pid=""
  python3 - "$out" "$t_stop" "$t_restart" "$t_ready" "$t_drained" "$backlog" "$lg_rc" <<'EOF' | tee "$out/result.txt"
import json, sys
out, t_stop, t_restart, t_ready, t_drained, backlog, rc = sys.argv[1:]
s = json.load(open(f"{out}/summary.json"))
v = s.get("verify") or {}
st = s["status"]
print(f"mode: outage; agents {st['agents']} x {st['series_per_agent']} series every {s['interval_s']:g} s")
print(f"collector down: {float(t_restart)-float(t_stop):.0f} s; backlog at restart: {backlog.split()[0]} batches, oldest {backlog.split()[1]} s")
print(f"collector restart to ready: {float(t_ready)-float(t_restart):.1f} s")
print(f"time to drain (restart -> no batch older than 2 intervals unacked): {float(t_drained)-float(t_restart):.1f} s")
print(f"batches generated {st['batches_generated']}, sent {st['batches_sent']}, acked {st['batches_acked']}; samples acked {st['samples_acked']}")
print(f"reconnects {st['reconnects']}, connect failures {st['connect_failures']}, duplicates reported by the collector {st['duplicates_reported']}")
lat = s["ack_latency"]
print(f"ack latency over the run: p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.0f} ms")
print(f"check: {v.get('series_ok')}/{v.get('series_expected')} series complete, samples expected {v.get('samples_expected')}, found {v.get('samples_found')}, missing {v.get('samples_missing')}, extra {v.get('samples_extra')}")
print(f"result: {'NOTHING LOST' if s['ok'] else 'FAILED'} (loadgen exit {rc})")
EOF
  [ "$lg_rc" = 0 ]
else
  duration="${SOAK_DURATION:-30m}"
  "$loadgen_bin" "${loadgen_args[@]}" --duration "$duration" >"$out/loadgen.out" 2>"$out/loadgen.log" & loadgen_pid=$!
  sleep 60
  query_loop & queries_pid=$!
  set +e; wait "$loadgen_pid"; lg_rc=$?; set -e; loadgen_pid=""
  kill "$queries_pid" 2>/dev/null || true; queries_pid=""
  sleep 1
  python3 - "$out" "$lg_rc" <<'EOF' | tee "$out/result.txt"
import csv, json, sys
out, rc = sys.argv[1:]
s = json.load(open(f"{out}/summary.json"))
v = s.get("verify") or {}
st = s["status"]
rows = [r for r in csv.DictReader(open(f"{out}/resources.csv")) if r["collector_rss_mib"]]
rss = [float(r["collector_rss_mib"]) for r in rows]
cpu = [float(r["collector_cpu_pct"]) for r in rows if r["collector_cpu_pct"]]
print(f"mode: load; agents {st['agents']} x {st['series_per_agent']} series every {s['interval_s']:g} s for {s['generated_for_s']/60:.1f} min "
      f"({st['agents']*st['series_per_agent']/s['interval_s']:.0f} samples/s)")
def at(frac):
    r = rows[min(len(rows)-1, int(frac*(len(rows)-1)))]
    return f"{float(r['collector_rss_mib']):.0f} MiB at {r['time_s']} s"
print("collector RSS: " + ", ".join(at(f) for f in (0, 0.25, 0.5, 0.75, 1)) + f"; peak {max(rss):.0f} MiB")
def mean(x): return sum(x)/len(x) if x else float('nan')
q = len(cpu)//4 or 1
print(f"collector CPU (% of one core, 10 s samples): mean {mean(cpu):.1f}, by quarter " +
      ", ".join(f"{mean(cpu[i*q:(i+1)*q]):.1f}" for i in range(4)) + f"; peak {max(cpu) if cpu else float('nan'):.1f}")
lat = s["ack_latency"]
print(f"ack latency: p50 {lat['p50_ms']:.1f} ms, p90 {lat['p90_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.0f} ms ({lat['count']} batches)")
qs = list(csv.DictReader(open(f"{out}/queries.csv")))
by = {}
for r in qs:
    by.setdefault(r["query"], []).append(r)
for name, rs in by.items():
    t = sorted(float(r["seconds"]) for r in rs)
    bad = sum(1 for r in rs if r["status"] != "200")
    print(f"query {name}: {len(rs)} runs, {bad} not 200, median {t[len(t)//2]:.2f} s, max {t[-1]:.2f} s")
print(f"batches generated {st['batches_generated']}, acked {st['batches_acked']}; samples acked {st['samples_acked']}; reconnects {st['reconnects']}")
print(f"check: {v.get('series_ok')}/{v.get('series_expected')} series complete, samples expected {v.get('samples_expected')}, found {v.get('samples_found')}, missing {v.get('samples_missing')}, extra {v.get('samples_extra')}")
print(f"result: {'NOTHING LOST' if s['ok'] else 'FAILED'} (loadgen exit {rc})")
EOF
  [ "$lg_rc" = 0 ]
fi
