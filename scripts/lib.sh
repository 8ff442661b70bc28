# Shared by the scripts that run servers (smoke.sh, bench.sh, bench-split.sh):
# start an im-server (or a split im-logic + im-gateways) on a fresh data dir,
# wait for its ports, stop it. Source it; do not run it.

# write_config DIR PORT [EXTRA_TOML]: DIR/im.toml for a benchmark server:
# loopback, the rate limits out of the way. The admin port is off unless
# ADMIN_LISTEN gives its address, the API unless API_LISTEN gives its (its keys: IM_API_KEYS); uid 4000000000 is its
# system account.
write_config() {
  local dir=$1 port=$2 extra=${3:-}
  # No WebSocket listener unless EXTRA_TOML configures one.
  local ws='[gateway.websocket]
listen = ""'
  if grep -q '^\[gateway.websocket\]' <<< "$extra"; then ws=; fi
  cat > "$dir/im.toml" <<TOML
[gateway]
listen = "127.0.0.1:$port"
inbound_frames_per_sec = 1000000
inbound_burst = 1000000
[admin]
listen = "${ADMIN_LISTEN:-}"
[api]
listen = "${API_LISTEN:-}"
system_uid = 4000000000
requests_per_sec = 1000000
burst = 1000000

$ws
[logic]
messages_per_sec = 1000000
message_burst = 1000000
$extra
TOML
}

# wait_port PID PORT NAME LOG: until PORT accepts, or fail if PID exits.
wait_port() {
  local pid=$1 port=$2 name=$3 log=$4
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited at start:" >&2; cat "$log" >&2; return 1
    fi
    sleep 0.1
  done
  echo "$name did not open port $port" >&2
  return 1
}

# start_server BIN PORT DATA_DIR [EXTRA_TOML]: sets SERVER_PID.
start_server() {
  local bin=$1 port=$2 dir=$3 extra=${4:-}
  rm -rf "$dir" && mkdir -p "$dir"
  write_config "$dir" "$port" "$extra"
  RUST_LOG=${RUST_LOG:-warn} "$bin" --config "$dir/im.toml" --data-dir "$dir" > "$dir/server.log" 2>&1 &
  SERVER_PID=$!
  wait_port "$SERVER_PID" "$port" im-server "$dir/server.log"
}

# start_split BINDIR LINK_PORT DATA_DIR GATEWAY_PORT...: one im-logic serve
# and a gateway per port, linked; sets SERVER_PID (the logic node) and
# GATEWAY_PIDS. Needs IM_LINK_SECRET.
start_split() {
  local bin=$1 link=$2 dir=$3; shift 3
  rm -rf "$dir" && mkdir -p "$dir"
  write_config "$dir" "$1" "[link]
listen = \"127.0.0.1:$link\"
logic = [\"127.0.0.1:$link\"]"
  RUST_LOG=${RUST_LOG:-warn} "$bin/im-logic" serve --config "$dir/im.toml" --data-dir "$dir" > "$dir/logic.log" 2>&1 &
  SERVER_PID=$!
  wait_port "$SERVER_PID" "$link" im-logic "$dir/logic.log"
  GATEWAY_PIDS=()
  for port in "$@"; do
    RUST_LOG=${RUST_LOG:-warn} "$bin/im-gateway" --config "$dir/im.toml" --listen "127.0.0.1:$port" > "$dir/gateway-$port.log" 2>&1 &
    GATEWAY_PIDS+=($!)
    wait_port "$!" "$port" im-gateway "$dir/gateway-$port.log"
  done
  # The client ports open before the links are up: give them their handshake.
  sleep 0.5
}

stop_server() {
  for pid in ${GATEWAY_PIDS[@]+"${GATEWAY_PIDS[@]}"} ${SERVER_PID:-}; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  SERVER_PID=
  GATEWAY_PIDS=()
}

# free_port: a loopback port nothing listens on now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# rss_kib PID: the resident set of a process, KiB.
rss_kib() {
  awk '/^VmRSS:/ {print $2}' "/proc/$1/status"
}

# json_field LINE KEY: a number from im-loadtest's JSON line.
json_field() {
  python3 -c 'import json,sys; v=json.loads(sys.argv[1])[sys.argv[2]]; print(v if not isinstance(v,float) else round(v,3))' "$1" "$2"
}
