#!/usr/bin/env bash
# What an idle SDK client costs: a server on the embedded store, one SDK
# device (a process of the SDK test binary, IM_SDK_ROLE=device, nothing to
# send) logged in and idle for SECONDS (default 120); prints its engine
# thread's context switches (wake-ups) per minute and the process's RSS.
#
#   bash scripts/sdk-idle.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-120}
cargo build -q -p im-server --bins
bin=$(cargo test -q -p im-server --test sdk --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*sdk-[^"]*\)".*/\1/p' | tail -1)
dir=$(mktemp -d)
port=17555
trap 'kill $dev $srv 2>/dev/null || true; rm -rf "$dir"' EXIT
IM_AUTH_SECRET=contract-test-secret target/debug/im-server --data-dir "$dir/server" \
  --listen 127.0.0.1:$port --admin "" --api "" 2>"$dir/server.log" &
srv=$!
sleep 2
IM_SDK_ROLE=device IM_SDK_UID=1 IM_SDK_PEER=2 IM_SDK_SENDS=0 IM_SDK_ADDR=127.0.0.1:$port \
  IM_SDK_DEVICE=idle IM_SDK_STORE="$dir/idle.db" IM_SDK_PROGRESS="$dir/progress" "$bin" \
  >/dev/null 2>"$dir/device.log" &
dev=$!
sleep 5
task=$(dirname "$(grep -l im-sdk /proc/$dev/task/*/comm | head -1)")
switches() { awk '/ctxt_switches/ {s += $2} END {print s}' "$task/status"; }
before=$(switches); sleep "$seconds"; after=$(switches)
echo "engine thread: $((after - before)) wake-ups in ${seconds} s ($(( (after - before) * 60 / seconds )) per minute)"
grep -E "VmRSS|Threads" /proc/$dev/status
