#!/usr/bin/env bash
# API sends per second, durable, and their latency: scripts/api-load.py
# drives POST /v1/messages (or /v1/messages/batch) of a release im-server on
# its embedded store, closed loop; every answer is a 200 only once the
# message is durable.
#
#   bash scripts/bench-api.sh [--bin DIR] [--secs N] [--conns N] [--batch N]
#
# Prints the client's JSON line, then the server's own view: the p99 of
# its im_api_request_duration_seconds histogram (bucket bound) and the
# messages it stored (at least those answered 200).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

bin=target/release; secs=10; conns=32; batch=1
while [ $# -gt 0 ]; do
  case $1 in
    --bin) bin=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$bin" != target/release ] || cargo build -q --release -p im-server

dir=$(mktemp -d /tmp/im-bench-api.XXXXXX)
port=$(free_port); api=$(free_port); admin=$(free_port)
key=bench-key-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
export IM_API_KEYS="bench:$key"
trap 'stop_server; rm -rf "$dir"' EXIT
API_LISTEN=127.0.0.1:$api ADMIN_LISTEN=127.0.0.1:$admin start_server "$bin/im-server" "$port" "$dir"

line=$(python3 scripts/api-load.py --port "$api" --key "$key" --conns "$conns" --secs "$secs" --batch "$batch")
echo "$line"
page=$(curl -s "http://127.0.0.1:$admin/metrics")
python3 - "$line" "$page" "$batch" <<'PY'
import json, sys
line, page, batch = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
route = "/v1/messages" if batch == 1 else "/v1/messages/batch"
buckets = [(l.split('le="')[1].split('"')[0], float(l.rsplit(" ", 1)[1]))
           for l in page.splitlines()
           if l.startswith(f'im_api_request_duration_seconds_bucket{{route="{route}"')]
total = buckets[-1][1]
p99 = next(le for le, count in buckets if count >= 0.99 * total)
stored = next(float(l.split()[1]) for l in page.splitlines() if l.startswith("im_logic_messages_stored_total "))
answered = line["requests"] * batch
print(json.dumps({"server_p99_le_s": p99, "stored": int(stored), "answered_200": answered}))
if stored < answered:
    sys.exit(f"FAIL: {answered} sends answered 200 but {int(stored)} stored")
PY
