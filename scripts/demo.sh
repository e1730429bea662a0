#!/usr/bin/env bash
# Sets up everything on a fresh machine and runs the demo: an order-processing workflow on
# an embedded SQLite file (target/demo/pinion.db), then prints its history.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip1 >/dev/null 2>&1 || rustup target add wasm32-wasip1
echo "==> building pinion and the example workflows (the first build takes a few minutes)"
cargo build -p pinion-runtime --bin pinion
cargo build --release --target wasm32-wasip1 --manifest-path examples/Cargo.toml --target-dir target/wasm-guests
PINION=target/debug/pinion
GUESTS=target/wasm-guests/wasm32-wasip1/release
mkdir -p target/demo
export PINION_DB=target/demo/pinion.db
rm -rf "$PINION_DB" "$PINION_DB"-wal "$PINION_DB"-shm "$PINION_DB".cache

ID="order-$(date +%s)"
INPUT='{"order_id":"'"$ID"'","customer":"ada@example.com","items":[{"sku":"gear-12","qty":2,"price_cents":1250},{"sku":"spring-3","qty":1,"price_cents":499}],"card":"4242-4242-4242-4242","payment_deadline_ms":30000,"gateway_failures":1}'
echo "==> pinion run orders.wasm ProcessOrder (deploy by hash, start, run to completion)"
"$PINION" run "$GUESTS/orders.wasm" ProcessOrder --input "$INPUT" --id "$ID"
echo
echo "==> pinion history $ID"
"$PINION" history "$ID"
echo
echo "==> pinion modules"
"$PINION" modules
echo
echo "The database is $PINION_DB; try: PINION_DB=$PINION_DB $PINION list"
