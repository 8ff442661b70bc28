#!/usr/bin/env bash
# A crash loop: the release im-server killed with kill -9 at a random moment
# under load, N times (default 200), on one data dir; after each restart
# every message acked so far is checked (same msg_id and seq, each
# conversation's seqs 1..N without gap or duplicate, no msg_id given twice,
# its row's last seq and unread count agreeing with the history). CI runs 3
# iterations of each as part of the test command (server/tests/durability.rs).
#
#   bash scripts/soak.sh [N] [--store sqlite|mariadb]
#
# --store mariadb: on a private MariaDB the test starts, whose own process is
# killed with kill -9 in two iterations out of three (mid-load, then the
# server; or restarted under the running server, then the server).
set -euo pipefail
cd "$(dirname "$0")/.."
n=200; test=a_crash_loop_keeps_every_acked_message
while [ $# -gt 0 ]; do
  case $1 in
    --store)
      case $2 in
        sqlite) test=a_crash_loop_keeps_every_acked_message ;;
        mariadb) test=a_crash_loop_on_mariadb_with_the_database_killed_too_keeps_every_acked_message ;;
        *) echo "--store sqlite or mariadb" >&2; exit 2 ;;
      esac
      shift 2 ;;
    *) n=$1; shift ;;
  esac
done
IM_SOAK_ITERATIONS=$n exec cargo test --release -p im-server --test durability \
  "$test" -- --exact --nocapture
