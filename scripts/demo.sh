#!/usr/bin/env bash
# Sets up everything on a fresh machine and runs the demo: an order-processing workflow on
# an embedded SQLite file (target/demo/pinion.db) that charges a card over HTTP against a
# small payment service on loopback, with an API key it reads from a secret, and writes a
# receipt into a directory the operator granted; then prints its history.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip1 >/dev/null 2>&1 || rustup target add wasm32-wasip1
command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3; }
echo "==> building pinion and the example workflows (the first build takes a few minutes)"
cargo build -p pinion-runtime --bin pinion
cargo build --release --target wasm32-wasip1 --manifest-path examples/Cargo.toml --target-dir target/wasm-guests
PINION=target/debug/pinion
GUESTS=target/wasm-guests/wasm32-wasip1/release
DEMO=target/demo
mkdir -p "$DEMO/receipts"
export PINION_DB=$DEMO/pinion.db
rm -rf "$PINION_DB" "$PINION_DB"-wal "$PINION_DB"-shm "$PINION_DB".cache "$DEMO"/receipts/*

echo "==> starting the payment service on loopback (examples/orders/payment_service.py)"
PAY_API_KEY="sk_demo_$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
PAY_API_KEY=$PAY_API_KEY python3 examples/orders/payment_service.py --port 0 >"$DEMO/payments.out" 2>"$DEMO/payments.log" &
payments=$!
trap 'kill $payments 2>/dev/null || true' EXIT
until grep -q listening "$DEMO/payments.out" 2>/dev/null; do sleep 0.05; done
PAYMENT_URL=$(sed -n 's/.*listening on //p' "$DEMO/payments.out")
export PAYMENT_URL
echo "    $PAYMENT_URL"

echo "==> granting the orders module what it needs ($DEMO/pinion.toml); nothing else is reachable"
(umask 077 && printf 'PAY_API_KEY = "%s"\n' "$PAY_API_KEY" >"$DEMO/secrets.toml")
cat >"$DEMO/pinion.toml" <<TOML
secrets_file = "secrets.toml"

[[grant]]
modules = ["label:orders-v1"]
activities = ["charge_payment"]
http = ["$PAYMENT_URL"]
env = ["PAYMENT_URL"]
secrets = ["PAY_API_KEY"]

[[grant]]
modules = ["label:orders-v1"]
activities = ["write_receipt"]
dirs = [{ host = "receipts", guest = "/receipts", mode = "rw" }]
TOML
cat "$DEMO/pinion.toml"

ID="order-$(date +%s)"
INPUT='{"order_id":"'"$ID"'","customer":"ada@example.com","items":[{"sku":"gear-12","qty":2,"price_cents":1250},{"sku":"spring-3","qty":1,"price_cents":499}],"card":"4242-4242-4242-4242","payment_deadline_ms":30000,"gateway_failures":1}'
echo "==> pinion run orders.wasm ProcessOrder (deploy by hash, start, run to completion)"
"$PINION" --config "$DEMO/pinion.toml" run "$GUESTS/orders.wasm" ProcessOrder --input "$INPUT" --id "$ID"
echo
echo "==> the receipt the workflow wrote: $DEMO/receipts/$ID.json"
cat "$DEMO/receipts/$ID.json"
echo
echo "==> what the payment service saw"
cat "$DEMO/payments.log"
echo
echo "==> pinion history $ID"
"$PINION" history "$ID"
echo
echo "==> pinion modules"
"$PINION" modules
echo
echo "The database is $PINION_DB; try: PINION_DB=$PINION_DB $PINION list"
