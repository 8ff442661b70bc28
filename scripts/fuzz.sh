#!/usr/bin/env bash
# The fuzz targets (fuzz/): the client frame decoder, the link decoder,
# WebSocket frames and opening handshakes, and every request body through the logic tier's
# validation, each for a bounded time under libFuzzer with AddressSanitizer;
# then the saved regression inputs replayed as a test.
#
#   bash scripts/fuzz.sh [--secs N] [TARGET...]
#
# N defaults to 30 (CI); run for hours with --secs 3600. cargo-fuzz's flags
# need a nightly compiler; RUSTC_BOOTSTRAP=1 lets this machine's stable one
# take them. A crash stops the run with its input in fuzz/artifacts/<target>/:
# fix it, then copy the input to fuzz/regressions/<target>/ so the test
# keeps it fixed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=30
targets=()
while [ $# -gt 0 ]; do
  case $1 in
    --secs) secs=$2; shift 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(decode link websocket websocket_handshake requests)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
export RUSTC_BOOTSTRAP=1
for target in "${targets[@]}"; do
  echo "== fuzz $target for ${secs}s"
  # Non-zero on a crash (or a build failure), which ends the script.
  cargo fuzz run "$target" -- -max_total_time="$secs"
done
cargo test -q
