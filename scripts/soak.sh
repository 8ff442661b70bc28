#!/usr/bin/env bash
# A crash loop: the release im-server killed with kill -9 at a random moment
# under load, N times (default 200), on one data dir; after each restart
# every message acked so far is checked (same msg_id and seq, each
# conversation's seqs 1..N without gap or duplicate, its row's last seq and
# unread count agreeing with the history). CI runs 3 iterations as part of
# the test command (server/tests/durability.rs).
#
#   bash scripts/soak.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
IM_SOAK_ITERATIONS=${1:-200} exec cargo test --release -p im-server --test durability \
  a_crash_loop_keeps_every_acked_message -- --nocapture
