#!/usr/bin/env bash
# Generates the SDK's Kotlin, Swift and Python sources from the shared
# library (UniFFI, sdk-ffi/), into target/bindings/{kotlin,swift,python},
# with the library beside the Python module:
#
#   bash scripts/bindings.sh [--debug]
#
# Android: add the Kotlin file and the library built for each ABI (cargo
# ndk). iOS: the Swift file, the C header and module map, and the library
# built for the Apple targets. Neither toolchain is needed to generate.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
[ "${1:-}" = "--debug" ] && profile=debug
flag=(); [ "$profile" = release ] && flag=(--release)
cargo build "${flag[@]}" -p im-sdk-ffi
library="target/$profile/libim_sdk_ffi.so"
[ "$(uname)" = Darwin ] && library="target/$profile/libim_sdk_ffi.dylib"
for language in kotlin swift python; do
  "target/$profile/uniffi-bindgen" generate --no-format --language "$language" \
    --library "$library" --out-dir "target/bindings/$language"
done
cp "$library" target/bindings/python/
echo "generated in target/bindings: kotlin, swift, python (import im_sdk from target/bindings/python)"
