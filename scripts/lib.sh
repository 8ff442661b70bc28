# Shared by scripts/smoke.sh and scripts/bench.sh: start an im-server on a
# fresh data dir, wait for its port, stop it. Source it; do not run it.

# start_server BIN PORT DATA_DIR [EXTRA_TOML]: sets SERVER_PID.
start_server() {
  local bin=$1 port=$2 dir=$3 extra=${4:-}
  rm -rf "$dir" && mkdir -p "$dir"
  cat > "$dir/im.toml" <<TOML
[gateway]
listen = "127.0.0.1:$port"
inbound_frames_per_sec = 1000000
inbound_burst = 1000000
[admin]
listen = ""
[logic]
messages_per_sec = 1000000
message_burst = 1000000
$extra
TOML
  RUST_LOG=${RUST_LOG:-warn} "$bin" --config "$dir/im.toml" --data-dir "$dir" > "$dir/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "im-server exited at start:" >&2; cat "$dir/server.log" >&2; return 1
    fi
    sleep 0.1
  done
  echo "im-server did not open port $port" >&2
  return 1
}

stop_server() {
  if [ -n "${SERVER_PID:-}" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}

# json_field LINE KEY: a number from im-loadtest's JSON line.
json_field() {
  python3 -c 'import json,sys; v=json.loads(sys.argv[1])[sys.argv[2]]; print(v if not isinstance(v,float) else round(v,3))' "$1" "$2"
}
