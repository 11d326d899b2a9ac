"""A local webhook receiver for development (``manage.py webhook-receiver``).

It verifies Standard Webhooks signatures with the ``standardwebhooks`` library when given a
secret (401 to a bad or missing one), keeps the last calls in memory (bounded) and shows them
at ``/`` (HTML, newest first) and ``/api/received`` (JSON).
"""

from __future__ import annotations

import html
import json
import threading
from collections import deque
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

KEPT = 500  # calls remembered
BODY_MAX = 1_048_576  # bytes of a call's body read


class Received:
    """The calls received so far, newest first, at most ``KEPT``."""

    def __init__(self) -> None:
        self._calls: deque[dict[str, Any]] = deque(maxlen=KEPT)
        self._lock = threading.Lock()

    def add(self, call: dict[str, Any]) -> None:
        with self._lock:
            self._calls.appendleft(call)

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._calls)


def make_server(host: str, port: int, secret: str | None) -> ThreadingHTTPServer:
    """A receiver listening on (host, port); ``serve_forever`` runs it."""
    received = Received()
    verifier = Webhook(secret) if secret else None

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > BODY_MAX:
                self._answer(413, {"error": "body too large"})
                return
            raw = self.rfile.read(length) if length else b""
            body = raw.decode("utf-8", errors="replace")
            headers = {k.lower(): v for k, v in self.headers.items()}
            verified = False
            error = None
            if verifier is not None:
                try:
                    verifier.verify(body, headers)
                    verified = True
                except (WebhookVerificationError, ValueError) as exc:
                    error = str(exc) or type(exc).__name__
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = body
            received.add(
                {
                    "id": headers.get("webhook-id"),
                    "type": parsed.get("type") if isinstance(parsed, dict) else None,
                    "verified": verified,
                    "error": error,
                    "path": self.path,
                    "headers": headers,
                    "body": parsed,
                    "received_at": datetime.now(UTC).isoformat(),
                }
            )
            if verifier is not None and not verified:
                self._answer(401, {"error": f"signature not verified: {error}"})
            else:
                self._answer(200, {"ok": True})

        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/api/received":
                self._answer(200, received.all())
                return
            if self.path.split("?")[0] != "/":
                self._answer(404, {"error": "not found"})
                return
            rows = "".join(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>".format(
                    html.escape(c["received_at"]),
                    html.escape(str(c["id"])),
                    html.escape(str(c["type"])),
                    "yes" if c["verified"] else html.escape(f"no ({c['error'] or 'no secret'})"),
                    html.escape(json.dumps(c["body"], indent=2)[:4000]),
                )
                for c in received.all()
            )
            page = (
                "<!doctype html><meta charset=utf-8><title>webhook receiver</title>"
                "<h1>Received webhooks (newest first)</h1><table border=1 cellpadding=4>"
                "<tr><th>received</th><th>webhook-id</th><th>type</th><th>verified</th>"
                f"<th>body</th></tr>{rows}</table>"
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def _answer(self, status: int, value: Any) -> None:
            data = json.dumps(value, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    return ThreadingHTTPServer((host, port), Handler)
