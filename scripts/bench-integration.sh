#!/usr/bin/env bash
# The business integrations' figures (docs/benchmarks.md), on a release
# im-server with its embedded store, back to back:
#
#   1. the outbox's cost on durable sends: API batch sends (100 offline
#      recipients each, scripts/api-load.py) for SECS seconds with no webhook
#      ("off"), with the webhook configured and its receiver down (every
#      notice recorded, none delivered: "recorded"), and with the receiver
#      up (recorded and delivered, the receiver on the same cores:
#      "delivered"), alternated RUNS times;
#   2. outbox deliveries per second: a backlog built with the receiver down,
#      then the receiver (scripts/webhook-sink.py) started and the backlog
#      drained; every delivery's signature checked, every msg_id counted;
#   3. queue ingest: MESSAGES send requests published to a private
#      nats-server (scripts/queue-publish.py) before the server starts, then
#      the time from its start to the last one stored.
#
#   bash scripts/bench-integration.sh [--bin DIR] [--secs N] [--runs N] [--messages N]
#
# Needs python3 (and installs nats-py with pip when missing) and nats-server.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

bin=target/release; secs=10; runs=2; messages=100000
while [ $# -gt 0 ]; do
  case $1 in
    --bin) bin=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --messages) messages=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$bin" != target/release ] || cargo build -q --release -p im-server
python3 -c 'import nats' 2>/dev/null || python3 -m pip install -q nats-py
nats=$(command -v nats-server || echo /usr/sbin/nats-server)

dir=$(mktemp -d /tmp/im-bench-integration.XXXXXX)
port=$(free_port); api=$(free_port); admin=$(free_port); hook=$(free_port); nport=$(free_port)
key=bench-key-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
export IM_API_KEYS="bench:$key" IM_WEBHOOK_SECRET=bench-hook-$key
sink_pid=; nats_pid=
stop_sink() { [ -z "$sink_pid" ] || { kill "$sink_pid" 2>/dev/null || true; wait "$sink_pid" 2>/dev/null || true; sink_pid=; }; }
cleanup() { stop_server; stop_sink; [ -z "$nats_pid" ] || kill "$nats_pid" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
start_sink() {
  python3 scripts/webhook-sink.py --port "$hook" & sink_pid=$!
  wait_port "$sink_pid" "$hook" webhook-sink /dev/null
}
metric() { curl -s "http://127.0.0.1:$admin/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
webhook="[logic.webhook]
url = \"http://127.0.0.1:$hook/hook\"
retry_first_ms = 100
retry_max_ms = 500"
export API_LISTEN=127.0.0.1:$api ADMIN_LISTEN=127.0.0.1:$admin

echo "== 1. durable API sends, batches of 100 to offline recipients, ${secs} s each"
for run in $(seq "$runs"); do
  for mode in off recorded delivered; do
    extra=; [ "$mode" = off ] || extra=$webhook
    [ "$mode" != delivered ] || start_sink
    start_server "$bin/im-server" "$port" "$dir/server" "$extra"
    line=$(python3 scripts/api-load.py --port "$api" --key "$key" --conns 16 --secs "$secs" --batch 100)
    echo "webhook $mode: $line"
    stop_server; stop_sink
  done
done

echo "== 2. outbox deliveries per second"
start_server "$bin/im-server" "$port" "$dir/server" "$webhook"
python3 scripts/api-load.py --port "$api" --key "$key" --conns 16 --secs 3 --batch 100 > /dev/null
# The gauge counts what storage holds, once a second: let it settle.
sleep 2.2; backlog=$(metric im_logic_webhook_backlog)
start_sink
t0=$(date +%s.%N)
while [ "$(metric im_logic_webhook_backlog)" != 0 ]; do sleep 0.05; done
t1=$(date +%s.%N)
sleep 1.1
stats=$(curl -s "http://127.0.0.1:$hook/stats")
python3 - "$backlog" "$t0" "$t1" "$stats" <<'PY'
import json, sys
backlog, t0, t1, stats = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4])
print(json.dumps({"backlog": backlog, "drained_secs": round(t1 - t0, 2),
                  "deliveries_per_sec": round(stats["unique"] / (t1 - t0)), **stats}))
if stats["bad_signatures"] or stats["unique"] < backlog:
    sys.exit(f"FAIL: {stats}")
PY
stop_server; stop_sink

echo "== 3. queue ingest: $messages requests published, then consumed"
mkdir -p "$dir/nats"
"$nats" -a 127.0.0.1 -p "$nport" -js -sd "$dir/nats" > "$dir/nats.log" 2>&1 & nats_pid=$!
wait_port "$nats_pid" "$nport" nats-server "$dir/nats.log"
python3 scripts/queue-publish.py --url "nats://127.0.0.1:$nport" --messages "$messages"
t0=$(date +%s.%N)
start_server "$bin/im-server" "$port" "$dir/server" "[queue]
url = \"nats://127.0.0.1:$nport\"
max_in_flight = 1024"
while [ "$(metric im_queue_stored_total)" != "$messages" ]; do sleep 0.05; done
t1=$(date +%s.%N)
python3 -c "import json,sys; t=float(sys.argv[2])-float(sys.argv[1]); print(json.dumps({'stored': int(sys.argv[3]), 'secs': round(t,2), 'ingest_per_sec': round(int(sys.argv[3])/t)}))" "$t0" "$t1" "$messages"
