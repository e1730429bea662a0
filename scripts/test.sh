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
# A real PostgreSQL for the PostgreSQL store's tests (tests/integration/pg.rs): PostgreSQL 15's
# binaries (Debian's `postgresql` package when missing), a fresh cluster in target/pg-test
# owned by the `postgres` user (initdb refuses root), listening on a free loopback port,
# stopped when this script exits. When it cannot start, the
# suite fails: the PostgreSQL tests never skip.
pg_bin=/usr/lib/postgresql/15/bin
if [ ! -x "$pg_bin/initdb" ] || [ ! -x "$pg_bin/pg_ctl" ]; then
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    pg_bin=$(dirname "$(command -v initdb)")
  else
    apt-get update -qq && apt-get install -y -qq postgresql
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
fi
pg_user=postgres
if [ "$(id -u)" -ne 0 ]; then
  pg_user=$(id -un) # not root: run the server as ourselves
elif ! id postgres >/dev/null 2>&1; then
  useradd --system --create-home postgres
fi
as_pg() {
  if [ "$(id -un)" = "$pg_user" ]; then "$@"; else runuser -u "$pg_user" -- "$@"; fi
}
pg_dir=$PWD/target/pg-test
pg_data=$pg_dir/data
if [ -f "$pg_data/postmaster.pid" ]; then
  as_pg "$pg_bin/pg_ctl" -D "$pg_data" -m immediate stop >/dev/null 2>&1 || true
fi
rm -rf "$pg_dir"
mkdir -p "$pg_dir"
chown "$pg_user" "$pg_dir"
# The server's user must reach target/; when a parent directory is closed to it (a checkout
# under /root), the cluster goes to a directory of its own under /tmp instead.
if ! as_pg test -w "$pg_dir"; then
  pg_dir=$(mktemp -d /tmp/pinion-pg.XXXXXX)
  pg_data=$pg_dir/data
  chown "$pg_user" "$pg_dir"
  echo "note: $PWD/target is not reachable by $pg_user; the test PostgreSQL runs in $pg_dir" >&2
fi
# Its socket goes to a short path of its own (a socket path is limited to ~100 bytes); the
# tests connect over loopback TCP.
pg_sock=$(mktemp -d /tmp/pinion-pg-sock.XXXXXX)
chown "$pg_user" "$pg_sock"
as_pg "$pg_bin/initdb" -D "$pg_data" -A trust -U postgres --no-sync >"$pg_dir/initdb.log" 2>&1 ||
  { cat "$pg_dir/initdb.log"; echo "error: initdb failed" >&2; exit 1; }
pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
stop_pg() {
  as_pg "$pg_bin/pg_ctl" -D "$pg_data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$pg_sock"
}
trap stop_pg EXIT
as_pg "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_dir/server.log" -w -t 60 \
  -o "-p $pg_port -k $pg_sock -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off" start >/dev/null ||
  { cat "$pg_dir/server.log"; echo "error: PostgreSQL did not start" >&2; exit 1; }
export PINION_TEST_PG="postgres://postgres@127.0.0.1:$pg_port/postgres"
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
