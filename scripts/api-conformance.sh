#!/usr/bin/env bash
# The business API against its own OpenAPI document: Schemathesis (PyPI)
# generates requests from the document served at /v1/openapi.json, valid
# ones and invalid ones, sends them to a live im-server, and checks every
# answer: no 5xx, and status, content type, headers and body as documented.
#
#   bash scripts/api-conformance.sh [--max-examples N] [--bin DIR]
#
# Installs schemathesis with pip when it is missing (CI does so before the
# tests). Bounded: N examples per operation (default 25).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

examples=25
bin=target/debug
while [ $# -gt 0 ]; do
  case $1 in
    --max-examples) examples=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

# The version this was written against; newer majors may change the CLI.
SCHEMATHESIS_VERSION=4.32.5
if ! command -v st >/dev/null 2>&1; then
  echo "installing schemathesis $SCHEMATHESIS_VERSION"
  python3 -m pip install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi
[ -x "$bin/im-server" ] || cargo build -q -p im-server

dir=$(mktemp -d /tmp/im-api-conformance.XXXXXX)
port=$(free_port)
api=$(free_port)
key=conformance-key-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
trap 'stop_server; rm -rf "$dir"' EXIT
export IM_API_KEYS="conformance:$key"
API_LISTEN=127.0.0.1:$api start_server "$bin/im-server" "$port" "$dir"
mkdir -p "$dir/report"

# Every check but positive_data_acceptance, which wants every request the
# document allows answered 2xx: the document cannot say the business rules
# (a sender is not its own recipient; a batch of 1,000 may exceed the key's
# burst), and those answers are documented 400s and 429s. That the server
# refuses what the document refuses (negative_data_rejection) is checked.
st run "http://127.0.0.1:$api/v1/openapi.json" \
  --header "Authorization: Bearer $key" \
  --checks all \
  --exclude-checks positive_data_acceptance \
  --max-examples "$examples" \
  --workers 2 \
  --request-timeout 20 \
  --report junit --report-dir "$dir/report" \
  --no-color
echo "schemathesis: every operation conforms ($examples examples each)"
