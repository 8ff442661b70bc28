#!/usr/bin/env bash
# Server instructions per delivered durable message, counted by valgrind's
# callgrind (instructions, not seconds: the count barely moves with what else
# the machine is doing, so two builds can be compared on a busy VM).
#
#   bash scripts/instructions.sh [--bin DIR] [--messages N]
#
# Two runs of the release im-server under callgrind, one delivering N
# messages (default 2,000) and one 3 N, each a fresh data dir with the same
# pairs workload (20 pairs, window 8, 64 bytes); the difference of their
# totals over the difference of messages is the cost of a message, with
# start, logins and stop cancelled out. Batching depends on timing under
# valgrind, so repeated runs agree to a few percent, not exactly.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

bin=target/release; messages=2000
while [ $# -gt 0 ]; do
  case $1 in
    --bin) bin=$2; shift 2 ;;
    --messages) messages=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null 2>&1 || { echo "valgrind is needed (Debian: apt-get install valgrind)" >&2; exit 1; }
[ "$bin" != target/release ] || cargo build -q --release -p im-server -p im-loadtest
export IM_AUTH_SECRET=instructions-secret
dir=$(mktemp -d /tmp/im-instructions.XXXXXX)
trap 'stop_server; rm -rf "$dir"' EXIT

# run N: prints "<delivered> <instructions>" for a run delivering N messages.
run() {
  local n=$1 port=$((20000 + RANDOM % 12000)) data="$dir/run-$1"
  rm -rf "$data" && mkdir -p "$data"
  write_config "$data" "$port"
  valgrind --tool=callgrind --callgrind-out-file="$data/callgrind.out" \
    "$bin/im-server" --config "$data/im.toml" --data-dir "$data" > "$data/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$data/server.log" >&2; exit 1; }
    sleep 0.1
  done
  local r
  r=$("$bin/im-loadtest" --addr "127.0.0.1:$port" pairs --pairs 20 --window 8 --size 64 \
        --messages "$n" --drain 30 --json | tail -1)
  [ "$(json_field "$r" lost)" = 0 ] || { echo "messages lost: $r" >&2; exit 1; }
  kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=
  local total
  total=$(awk '/^summary:/ {print $2}' "$data/callgrind.out")
  echo "$(json_field "$r" delivered) $total"
}

read -r d1 i1 < <(run "$messages")
read -r d2 i2 < <(run $((3 * messages)))
python3 - "$d1" "$i1" "$d2" "$i2" <<'PY'
import json, sys
d1, i1, d2, i2 = map(int, sys.argv[1:])
print(json.dumps({"delivered": [d1, d2], "instructions": [i1, i2],
                  "instructions_per_message": round((i2 - i1) / (d2 - d1))}))
PY
