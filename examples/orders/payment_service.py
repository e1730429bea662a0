#!/usr/bin/env python3
"""A small payment service for the orders example, its demo and its tests.

    PAY_API_KEY=sk_test_... python3 payment_service.py [--port PORT]

Listens on 127.0.0.1 (port 0: any free port) and prints one line,
`payment service listening on http://127.0.0.1:PORT`, once it accepts connections.

POST /charges with `Authorization: Bearer $PAY_API_KEY` and a JSON body
{order_id, card, amount_cents, idempotency_key, gateway_failures}:

- 401 when the key is wrong;
- 503 for the first `gateway_failures` requests with an idempotency key (a flaky gateway);
- 402 for the card 4000-0000-0000-0002 (declined);
- otherwise 201 {charge_id, amount_cents, order_id}; the same idempotency key always gets
  the same charge (200 on a repeat), so a retried activity never charges twice.

GET /charges lists the charges made, for the demo to show.
"""
import argparse
import hashlib
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DECLINED_CARD = "4000-0000-0000-0002"
API_KEY = os.environ.get("PAY_API_KEY", "")
LOCK = threading.Lock()
ATTEMPTS = {}
CHARGES = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path != "/charges":
            return self.reply(404, {"error": f"no route {self.path}"})
        with LOCK:
            return self.reply(200, list(CHARGES.values()))

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path != "/charges":
            return self.reply(404, {"error": f"no route {self.path}"})
        if not API_KEY or self.headers.get("Authorization") != f"Bearer {API_KEY}":
            return self.reply(401, {"error": "missing or wrong API key"})
        try:
            req = json.loads(raw)
            key = req["idempotency_key"]
            amount = int(req["amount_cents"])
        except (ValueError, KeyError, TypeError) as e:
            return self.reply(400, {"error": f"bad charge request: {e}"})
        with LOCK:
            if key in CHARGES:
                return self.reply(200, CHARGES[key])
            ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
            if ATTEMPTS[key] <= int(req.get("gateway_failures", 0)):
                return self.reply(503, {"error": "gateway unavailable, try again"})
            if req.get("card") == DECLINED_CARD:
                return self.reply(402, {"error": "card declined"})
            charge = {
                "charge_id": "ch_" + hashlib.sha256(key.encode()).hexdigest()[:12],
                "amount_cents": amount,
                "order_id": req.get("order_id"),
            }
            CHARGES[key] = charge
            print(f"charged {amount} cents for order {charge['order_id']}: {charge['charge_id']}",
                  file=sys.stderr, flush=True)
            return self.reply(201, charge)

    def log_message(self, fmt, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if not API_KEY:
        sys.exit("payment_service.py: set PAY_API_KEY")
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"payment service listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
