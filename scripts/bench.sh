#!/usr/bin/env bash
# The standard benchmark set, release build, server and load on this host:
# idle memory, durable throughput, latency at a fixed rate, reconnect storm.
# Prints a markdown table of results (and writes it to --out FILE).
#
#   scripts/bench.sh [--quick] [--out FILE] [--mysql] [--redis] [--tls] [--ws] [--bin DIR]
#
# --tls: every client over TLS (a TLS listener with the self-signed
# certificate the server makes; the load tester trusts it). --ws: every
# client over WebSocket (with --tls: wss).
# --bin DIR: run the im-server and im-loadtest in DIR instead of building
# them (to compare a previous build back to back with this one).
# --quick: smaller numbers, for a try-out. --mysql: storage.backend = "mysql"
# on the local MariaDB (127.0.0.1:3306, root), a fresh database per benchmark.
# --redis: Redis at 127.0.0.1:6379 beside the store, a key prefix per benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

args="$*"
quick=0 out= backend_toml= redis=0 bin= tls=0 ws=0
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --out) out=$2; shift ;;
    # MariaDB/MySQL on 127.0.0.1:3306 (a database per benchmark, created by the server).
    --mysql) backend_toml=mysql ;;
    --redis) redis=1 ;;
    --bin) bin=$2; shift ;;
    --tls) tls=1 ;;
    --ws) ws=1 ;;
    *) echo "usage: $0 [--quick] [--out FILE] [--mysql] [--redis] [--tls] [--ws] [--bin DIR]" >&2; exit 2 ;;
  esac
  shift
done
if [ $quick = 1 ]; then idle=2000 secs=3 storm=1000; else idle=15000 secs=10 storm=10000; fi

if [ -z "$bin" ]; then
  cargo build --release -q -p im-server -p im-loadtest
  bin=target/release
fi
export IM_AUTH_SECRET=bench-secret
dir=$(mktemp -d)
cleanup() {
  stop_server
  rm -rf "$dir"
  if [ "$backend_toml" = mysql ]; then
    for name in idle tput cpu lat storm; do mysql -uroot -e "DROP DATABASE IF EXISTS im_bench_$name" 2>/dev/null || true; done
  fi
}
trap cleanup EXIT
# Below 32768: the ephemeral range (32768-60999) is where the load tester's own
# connections take their ports, and a server cannot listen on one in use.
port=$((20000 + RANDOM % 12000))
# The benchmark now running (its data dir holds the self-signed certificate).
current=
lt() {
  local how=(--addr "127.0.0.1:$port")
  if [ $ws = 1 ]; then
    how=(--addr "127.0.0.1:$((port + 2))" --ws /im)
  elif [ $tls = 1 ]; then
    how=(--addr "127.0.0.1:$((port + 1))")
  fi
  if [ $tls = 1 ]; then how+=(--tls "$dir/$current/tls/self-signed.crt"); fi
  "$bin/im-loadtest" "${how[@]}" "$@" --json | tail -1
}
# storage_toml NAME: the [storage] section for one benchmark's server.
storage_toml() {
  if [ $tls = 1 ]; then
    printf '[gateway.tls]\nlisten = "127.0.0.1:%s"\n' $((port + 1))
  fi
  if [ $ws = 1 ]; then
    printf '[gateway.websocket]\nlisten = "127.0.0.1:%s"\ntls = %s\n' $((port + 2)) "$([ $tls = 1 ] && echo true || echo false)"
  fi
  if [ "$backend_toml" = mysql ]; then
    mysql -uroot -e "DROP DATABASE IF EXISTS im_bench_$1" 2>/dev/null || true
    printf '[storage]\nbackend = "mysql"\nmysql_urls = ["mysql://root@127.0.0.1:3306/im_bench_%s"]\n' "$1"
  fi
  if [ $redis = 1 ]; then
    printf '[redis]\nurl = "redis://127.0.0.1:6379"\nkey_prefix = "im-bench-%s:"\n' "$1"
  fi
}
rows=()
row() { rows+=("| $1 | $2 | \`$3\` |"); }

# Each benchmark on a fresh server and data dir, so none inherits another's data.
current=idle; start_server "$bin/im-server" "$port" "$dir/idle" "$(storage_toml idle)"
r=$(lt idle --connections $idle --duration 3 --server-pid "$SERVER_PID")
row "idle memory" "$(json_field "$r" connections) sessions, $(json_field "$r" server_rss_bytes_per_conn) B server RSS each" "im-loadtest idle --connections $idle --server-pid PID"
stop_server

current=tput; start_server "$bin/im-server" "$port" "$dir/tput" "$(storage_toml tput)"
r=$(lt pairs --pairs 10 --window 64 --duration $secs --server-pid "$SERVER_PID")
row "durable throughput" "$(json_field "$r" delivered_per_sec) delivered/s, lost $(json_field "$r" lost), ack p99 $(json_field "$r" ack_p99_ms) ms, server CPU $(json_field "$r" server_cpu_us_per_msg) µs/msg" "im-loadtest pairs --pairs 10 --window 64 --duration $secs --server-pid PID"
stop_server

# The hardening issue's CPU workload: many pairs, a small window, 64-byte messages.
current=cpu; start_server "$bin/im-server" "$port" "$dir/cpu" "$(storage_toml cpu)"
r=$(lt pairs --pairs 500 --window 16 --size 64 --duration $secs --server-pid "$SERVER_PID")
row "CPU per message" "server $(json_field "$r" server_cpu_us_per_msg) µs, load tester $(json_field "$r" loadtest_cpu_us_per_msg) µs per delivered message at $(json_field "$r" delivered_per_sec) delivered/s, lost $(json_field "$r" lost)" "im-loadtest pairs --pairs 500 --window 16 --size 64 --duration $secs --server-pid PID"
stop_server

current=lat; start_server "$bin/im-server" "$port" "$dir/lat" "$(storage_toml lat)"
r=$(lt pairs --pairs 50 --rate 20000 --duration $secs)
row "latency at 20,000 msg/s" "deliver p50 $(json_field "$r" deliver_p50_ms) / p99 $(json_field "$r" deliver_p99_ms) / p99.9 $(json_field "$r" deliver_p999_ms) ms (sends late: p99 $(json_field "$r" late_p99_ms) ms)" "im-loadtest pairs --pairs 50 --rate 20000 --duration $secs"
stop_server

current=storm; start_server "$bin/im-server" "$port" "$dir/storm" "$(storage_toml storm)"
r=$(lt storm --clients $storm --messages 2)
row "reconnect storm" "$(json_field "$r" clients) clients back in sync in $(json_field "$r" resync_secs) s, failed $(json_field "$r" failed)" "im-loadtest storm --clients $storm --messages 2"
stop_server

{
  echo "Results of scripts/bench.sh $args on $(hostname), $(nproc) cores, $(date -u +%F):"
  echo
  echo "| benchmark | result | command |"
  echo "|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee ${out:+"$out"}
