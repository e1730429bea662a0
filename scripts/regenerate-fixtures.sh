#!/usr/bin/env bash
# Records the golden histories under tests/fixtures/ by running the v1 example modules, so
# the replay tests can check v1 (compatible) and v2 (each divergence) against them.
# Run it when a v1 example or the history format changes; commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -p pinion-runtime --bin pinion
cargo build --release --target wasm32-wasip1 --manifest-path examples/Cargo.toml --target-dir target/wasm-guests
PINION=target/debug/pinion
GUESTS=target/wasm-guests/wasm32-wasip1/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PINION_DB="$work/fixtures.db"

for wf in TypeChanged Removed Swapped TimerToActivity TimerDuration InputChanged PastEnd NeverCompletes ResultChanged Unchanged VersionRemoved VersionOutOfRange SignatureChanged; do
  "$PINION" run "$GUESTS/replay_v1.wasm" "$wf" --id "$wf" >/dev/null
done
# SignalChanged needs a signal: start it, signal it, and let a server run it to the end.
v1=$("$PINION" deploy "$GUESTS/replay_v1.wasm" 2>/dev/null)
"$PINION" start SignalChanged --module "$v1" --id SignalChanged >/dev/null
"$PINION" signal SignalChanged approve --input '"alice"' >/dev/null
"$PINION" server --listen 127.0.0.1:0 --no-auth & server=$!
until "$PINION" result SignalChanged >/dev/null 2>&1; do sleep 0.1; done
kill "$server"; wait "$server" || true
rm -rf tests/fixtures/replay && mkdir -p tests/fixtures/replay
"$PINION" history export --all --out tests/fixtures/replay

# Seed 002 (FooBar v1, completed) and seed 004 (Hello v1, still waiting on its timer).
export PINION_DB="$work/seeds.db"
"$PINION" run "$GUESTS/foobar_v1.wasm" FooBar --id foobar-v1-completed >/dev/null
hello=$("$PINION" deploy "$GUESTS/hello_v1.wasm" 2>/dev/null)
"$PINION" start Hello --module "$hello" --input '{"wait_ms": 3600000}' --id hello-v1-waiting >/dev/null
"$PINION" server --listen 127.0.0.1:0 --no-auth & server=$!
until "$PINION" history hello-v1-waiting | grep -q TimerStarted; do sleep 0.1; done
kill "$server"; wait "$server" || true
rm -rf tests/fixtures/seeds && mkdir -p tests/fixtures/seeds
"$PINION" history export --all --out tests/fixtures/seeds
ls tests/fixtures/replay tests/fixtures/seeds
