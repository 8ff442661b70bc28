#!/usr/bin/env bash
# The web chat page against the quickstart server (`cargo run --release -p
# im-server`, which listens for WebSocket clients on port 7001): installs the
# page's npm packages if needed, mints a token for uid 1 and uid 2 with the
# server's secret (./data), prints a link for each, and serves the page.
#
#   bash scripts/web.sh [DATA_DIR]
#
# Open the two links in two tabs: two users who can talk.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-data}
[ -f "$data/auth.secret" ] || { echo "start the server first: cargo run --release -p im-server" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "the page needs Node.js and npm" >&2; exit 1; }
[ -d clients/web/node_modules ] || (cd clients/web && npm ci --no-audit --no-fund)
bin=target/release/im-server
[ -x "$bin" ] || cargo build -q --release -p im-server
echo "Open these in two tabs (each logs in as its user):"
for uid in 1 2; do
  token=$("$bin" --data-dir "$data" token --uid "$uid")
  echo "  http://127.0.0.1:5173/?uid=$uid&token=$token"
done
cd clients/web && exec npm run dev -- --port 5173 --strictPort
