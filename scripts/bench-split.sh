#!/usr/bin/env bash
# The split deployment against the all-in-one node, back to back, release
# build, on this host: durable throughput, latency at a fixed rate, and
# (with --scale) memory per idle session across many gateway processes.
#
#   scripts/bench-split.sh [--quick] [--runs N] [--scale CONNECTIONS] [--gateways N]
#
# Each run: im-server, then im-logic serve + 2 im-gateways, the same
# im-loadtest workloads against each. --scale: CONNECTIONS idle sessions over
# --gateways gateway processes (default 6; each holds at most 20,000 file
# descriptors here) and one logic process, RSS per session of each.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

quick=0 runs=2 scale=0 gateways=6
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --runs) runs=$2; shift ;;
    --scale) scale=$2; shift ;;
    --gateways) gateways=$2; shift ;;
    *) echo "usage: $0 [--quick] [--runs N] [--scale CONNECTIONS] [--gateways N]" >&2; exit 2 ;;
  esac
  shift
done
if [ $quick = 1 ]; then secs=3; else secs=10; fi

cargo build --release -q -p im-server -p im-loadtest
bin=target/release
export IM_AUTH_SECRET=bench-secret IM_LINK_SECRET=bench-link-secret
dir=$(mktemp -d)
trap 'stop_server; [ -n "${KEEP:-}" ] && echo "logs kept in $dir" || rm -rf "$dir"' EXIT
# Below 32768: the load tester's own connections take the ephemeral ports.
base=$((20000 + RANDOM % 10000))
lt() { "$bin/im-loadtest" --addr "$1" "${@:2}" --json | tail -1; }
f() { json_field "$1" "$2"; }

echo "| run | topology | pairs --pairs 500 --window 16: delivered/s (lost) | at 20,000 msg/s: p50 / p99 / p99.9 ms |"
echo "|---|---|---|---|"
# start TOPOLOGY: a fresh server of that topology; sets addrs.
start() {
  if [ "$1" = all-in-one ]; then
    start_server "$bin/im-server" "$base" "$dir/one"; addrs="127.0.0.1:$base"
  else
    start_split "$bin" $((base + 1)) "$dir/split" $((base + 2)) $((base + 3))
    addrs="127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"
  fi
}
for run in $(seq 1 "$runs"); do
  for topology in all-in-one split; do
    # Each workload on a fresh server: none inherits another's backlog.
    start $topology
    t=$(lt "$addrs" pairs --pairs 500 --window 16 --duration $secs)
    stop_server
    start $topology
    l=$(lt "$addrs" pairs --pairs 50 --rate 20000 --duration $secs)
    stop_server
    echo "| $run | $topology | $(f "$t" delivered_per_sec) ($(f "$t" lost)) | $(f "$l" deliver_p50_ms) / $(f "$l" deliver_p99_ms) / $(f "$l" deliver_p999_ms) |"
  done
done

if [ "$scale" -gt 0 ]; then
  ports=(); for i in $(seq 1 "$gateways"); do ports+=($((base + 10 + i))); done
  start_split "$bin" $((base + 10)) "$dir/scale" "${ports[@]}"
  before_logic=$(rss_kib "$SERVER_PID")
  declare -A before
  for pid in "${GATEWAY_PIDS[@]}"; do before[$pid]=$(rss_kib "$pid"); done
  addrs=$(printf '127.0.0.1:%s,' "${ports[@]}"); addrs=${addrs%,}
  per=$(( (scale + 5) / 6 )); [ "$per" -gt 18000 ] && per=18000
  "$bin/im-loadtest" --addr "$addrs" idle --connections "$scale" --per-process "$per" --duration 20 --json > "$dir/idle.json" &
  idle=$!
  # Measure while they are all connected (the children report READY first).
  for _ in $(seq 1 600); do
    sessions=0
    for port in "${ports[@]}"; do
      n=$(ss -Htn state established "( sport = :$port )" | wc -l); sessions=$((sessions + n))
    done
    [ "$sessions" -ge "$scale" ] && break
    sleep 0.5
  done
  sleep 2
  gw_delta=0
  for pid in "${GATEWAY_PIDS[@]}"; do gw_delta=$((gw_delta + $(rss_kib "$pid") - before[$pid])); done
  logic_delta=$(( $(rss_kib "$SERVER_PID") - before_logic ))
  wait $idle || true
  echo
  echo "scale: $sessions sessions over ${#ports[@]} gateways; gateway RSS $(( gw_delta * 1024 / sessions )) B/session (all gateways); logic RSS $(( logic_delta * 1024 / sessions )) B/session"
  tail -1 "$dir/idle.json"
  stop_server
fi
