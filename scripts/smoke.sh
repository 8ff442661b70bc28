#!/usr/bin/env bash
# A few seconds of each load-test mode against the real binaries, over TCP,
# TLS and WebSocket, so that im-loadtest and im-server cannot rot apart. CI runs it.
#   scripts/smoke.sh [target-dir-profile]   (default: debug)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
profile=${1:-debug}
bin=target/$profile
if [ "$profile" = release ]; then cargo build --release -q -p im-server -p im-loadtest; else cargo build -q -p im-server -p im-loadtest; fi
export IM_AUTH_SECRET=smoke-secret
dir=$(mktemp -d)
trap 'stop_server; rm -rf "$dir"' EXIT
# Below 32768: the ephemeral range (32768-60999) is where the load tester's own
# connections take their ports, and a server cannot listen on one in use.
port=$((20000 + RANDOM % 12000))
# A TLS listener beside the plain one (the server makes a self-signed pair).
start_server "$bin/im-server" "$port" "$dir/data" "$(printf '[gateway.tls]\nlisten = "127.0.0.1:%s"\n[gateway.websocket]\nlisten = "127.0.0.1:%s"\n' $((port + 1)) $((port + 2)))"
tls=(--addr "127.0.0.1:$((port + 1))" --tls "$dir/data/tls/self-signed.crt")
ws=(--addr "127.0.0.1:$((port + 2))" --ws /im)

"$bin/im-loadtest" pairs --addr "127.0.0.1:$port" --pairs 5 --devices 2 --bidir --messages 2000 --json | tail -1
"$bin/im-loadtest" pairs --addr "127.0.0.1:$port" --pairs 5 --rate 500 --duration 2 --uid-base 1000 --json | tail -1
"$bin/im-loadtest" idle --addr "127.0.0.1:$port" --connections 500 --per-process 200 --duration 1 --uid-base 2000 --server-pid "$SERVER_PID" --json | tail -1
"$bin/im-loadtest" storm --addr "127.0.0.1:$port" --clients 100 --messages 2 --uid-base 3000 --json | tail -1
# Over TLS: pairs (across TLS and the checker), idle (child processes), storm.
"$bin/im-loadtest" "${tls[@]}" pairs --pairs 5 --devices 2 --bidir --messages 2000 --uid-base 4000 --json | tail -1
"$bin/im-loadtest" "${tls[@]}" idle --connections 300 --per-process 150 --duration 1 --uid-base 5000 --json | tail -1
"$bin/im-loadtest" "${tls[@]}" storm --clients 100 --messages 2 --uid-base 6000 --json | tail -1
# Over WebSocket.
"$bin/im-loadtest" "${ws[@]}" pairs --pairs 5 --devices 2 --bidir --messages 2000 --uid-base 7000 --json | tail -1
"$bin/im-loadtest" "${ws[@]}" idle --connections 300 --per-process 150 --duration 1 --uid-base 8000 --json | tail -1
echo "smoke: every mode ran clean"
