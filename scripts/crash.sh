#!/usr/bin/env bash
# The crash test, larger: many workflows with activities and timers, the server killed with
# SIGKILL again and again at pseudo-random moments and restarted; then every workflow must
# complete with the right result, every history replay clean, and no activity result be
# recorded twice. The suite runs the same test with 100 workflows and 5 kills.
#
#   scripts/crash.sh [WORKFLOWS] [KILLS]      (default 1000 and 20)
set -euo pipefail
cd "$(dirname "$0")/.."
workflows="${1:-1000}"
kills="${2:-20}"
rustup target add wasm32-wasip1 >/dev/null
cargo build --release --target wasm32-wasip1 \
  --manifest-path examples/Cargo.toml --target-dir target/wasm-guests
PINION_CRASH_WORKFLOWS="$workflows" PINION_CRASH_KILLS="$kills" \
  cargo nextest run -p pinion-runtime --test integration --no-capture \
  -E 'test(/killed_again_and_again/)'
