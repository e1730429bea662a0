#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the wasm target, builds the example
# guests, checks formatting and lints, then runs every test (unit, integration, doc).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip1 >/dev/null 2>&1 || rustup target add wasm32-wasip1
# Guests build into their own target dir so tests never wait on this cargo's lock.
cargo build --release --target wasm32-wasip1 --manifest-path examples/Cargo.toml --target-dir target/wasm-guests
cargo fmt --all -- --check
cargo fmt --manifest-path examples/Cargo.toml --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --manifest-path examples/Cargo.toml --target wasm32-wasip1 --target-dir target/wasm-guests -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
cargo test --workspace --doc
