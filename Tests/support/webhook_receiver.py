"""A webhook receiver for the tests: verifies each request with the standardwebhooks package
and appends it to a JSON-lines log. What it answers comes from a mode file the test rewrites:
`ok` (204), `fail` (500), `hang` (answers nothing for a minute) or `dribble` (sends its head at
once, then its body a byte every 200 ms for a minute).

usage: webhook_receiver.py PORT SECRET LOG MODE_FILE
"""
import json
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

# The test process may have blocked signals its children inherit: take SIGTERM again.
signal.pthread_sigmask(signal.SIG_SETMASK, [])

port, secret, log_path, mode_path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
webhook = Webhook(secret)


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            webhook.verify(body, headers)
            verified = True
        except Exception:
            verified = False
        try:
            with open(mode_path) as file:
                mode = file.read().strip()
        except OSError:
            mode = "ok"
        if mode == "hang":
            time.sleep(60)
            return
        if mode == "dribble":
            self.send_response(200)
            self.send_header("content-length", "300")
            self.end_headers()
            try:
                for _ in range(300):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
            return
        status = 204 if mode == "ok" and verified else (400 if not verified else 500)
        record = {
            "status": status, "verified": verified, "id": headers.get("webhook-id"),
            "timestamp": headers.get("webhook-timestamp"), "signature": headers.get("webhook-signature"),
            "body": body,
        }
        with open(log_path, "a") as file:
            file.write(json.dumps(record) + "\n")
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
server.daemon_threads = True
print("listening", flush=True)
server.serve_forever()
