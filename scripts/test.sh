#!/usr/bin/env bash
# The test command (README): every test in the workspace, then the web
# client's (clients/web: the SDK's unit tests, the page in Chromium).
#
#   bash scripts/test.sh [cargo test options]
#
# The tests need no server running: those that need MariaDB and Redis start
# private instances of their own on free loopback ports (testkit/), so only
# the server binaries (and promtool, nats-server) must be installed. When they are not,
# this installs them (Debian, as root) or says what to install. IM_TEST_MYSQL_URL and
# IM_TEST_REDIS_URL point the tests at existing servers instead.
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
missing=()
if [ -z "${IM_TEST_MYSQL_URL:-}" ] && ! have mariadbd && ! have mysqld; then missing+=(mariadb-server); fi
if [ -z "${IM_TEST_REDIS_URL:-}" ] && ! have redis-server; then missing+=(redis-server); fi
# promtool checks the live /metrics page (server/tests/api.rs); Chromium runs
# the web client's browser test (clients/web/e2e).
have promtool || missing+=(prometheus)
have chromium || missing+=(chromium)
# A private three-node Galera cluster (server/tests/failover.rs), whose
# joiners receive state by rsync.
[ -e /usr/lib/galera/libgalera_smm.so ] || missing+=(galera-4)
have rsync || missing+=(rsync)
# The queue tests start private JetStream brokers (server/tests/queue.rs).
have nats-server || missing+=(nats-server)
# im-chat's test drives two terminal clients in tmux (chat/tests/tmux.rs).
have tmux || missing+=(tmux)
# The SDK's Python binding is tested with python3 (sdk-ffi/tests/python.rs).
have python3 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} (the tests start private instances)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "the tests need ${missing[*]}: install them (Debian: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi
cargo test --workspace "$@"

# The web SDK's unit tests and the browser test (Node.js and npm; the npm
# packages installed once, with the network). The browser test runs the
# im-server that the cargo tests above built.
if ! command -v npm >/dev/null 2>&1; then
  echo "the web client's tests need Node.js 20 and npm (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
cd clients/web
[ -d node_modules ] || npm ci --no-audit --no-fund
npm test
npm run e2e
echo "browser test screenshots: clients/web/test-results/*.png"
