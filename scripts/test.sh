#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the wasm target, builds the example
# guests, installs schemathesis (for the API fuzz test) into target/fuzz-venv, checks
# formatting and lints, then runs every test (unit, integration, doc).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip1 >/dev/null 2>&1 || rustup target add wasm32-wasip1
# Python 3 runs the fuzz test's schemathesis and the orders example's payment service.
if ! command -v python3 >/dev/null || ! python3 -m venv --help >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq python3 python3-venv
fi
# openssl makes the self-signed certificates of the TLS tests (tests/integration/api_tls.rs).
if ! command -v openssl >/dev/null; then
  apt-get update -qq && apt-get install -y -qq openssl
fi
# Headless Chromium and chromedriver drive the web console's tests (tests/integration/console.rs).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  apt-get update -qq && apt-get install -y -qq chromium chromium-driver
fi
# Guests build into their own target dir so tests never wait on this cargo's lock.
cargo build --release --target wasm32-wasip1 --manifest-path examples/Cargo.toml --target-dir target/wasm-guests
# The API fuzz test (tests/integration/api_fuzz.rs) runs schemathesis from this venv, with
# the versions pinned in tests/fuzz/requirements.txt; installed again only when they change.
fuzz_venv=target/fuzz-venv
if ! cmp -s tests/fuzz/requirements.txt "$fuzz_venv/requirements.txt" ||
   ! "$fuzz_venv/bin/schemathesis" --version >/dev/null 2>&1; then
  rm -rf "$fuzz_venv"
  python3 -m venv "$fuzz_venv"
  "$fuzz_venv/bin/pip" install --quiet --disable-pip-version-check -r tests/fuzz/requirements.txt
  cp tests/fuzz/requirements.txt "$fuzz_venv/requirements.txt"
fi
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
