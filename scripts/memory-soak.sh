#!/usr/bin/env bash
# Memory and disk over a long run: a release im-server on its embedded store
# under `im-loadtest pairs --pairs 200 --rate RATE` for SECS seconds, its RSS
# and data dir size sampled every 10 s. Prints one line per sample (seconds,
# messages sent so far by the rate, RSS MiB, data dir MiB), then the load
# tester's JSON (sent, delivered, lost).
#
#   bash scripts/memory-soak.sh [--rate N] [--secs N] [--bin DIR]
#
# 600 s at 50,000/s is 30 M messages.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

bin=target/release; rate=50000; secs=600
while [ $# -gt 0 ]; do
  case $1 in
    --rate) rate=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$bin" != target/release ] || cargo build -q --release -p im-server -p im-loadtest
export IM_AUTH_SECRET=memory-soak-secret
dir=$(mktemp -d /tmp/im-memory-soak.XXXXXX)
port=$(free_port)
trap 'stop_server; rm -rf "$dir"' EXIT
start_server "$bin/im-server" "$port" "$dir/data"
"$bin/im-loadtest" --addr "127.0.0.1:$port" pairs --pairs 200 --rate "$rate" --duration "$secs" --json > "$dir/load.json" &
load=$!
start=$(date +%s)
printf '%8s %12s %10s %12s\n' secs messages rss_mib data_mib
while kill -0 "$load" 2>/dev/null; do
  now=$(( $(date +%s) - start ))
  rss=$(awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$SERVER_PID/status")
  data=$(du -sm "$dir/data" | cut -f1)
  printf '%8s %12s %10s %12s\n' "$now" "$(( now * rate ))" "$rss" "$data"
  sleep 10
done
wait "$load"
tail -1 "$dir/load.json"
