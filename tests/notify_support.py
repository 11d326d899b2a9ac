"""A scripted webhook receiver and an SMTP server for the notification tests (both real)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support import free_port, wait_until


class Call:
    """One request the receiver got."""

    def __init__(self, path: str, headers: dict[str, str], body: str, at: float) -> None:
        self.path, self.headers, self.body, self.at = path, headers, body, at

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def verified_with(self, key: str) -> bool:
        """Whether the standardwebhooks library accepts the call with ``key``."""
        try:
            Webhook(key).verify(self.body, self.headers)
            return True
        except WebhookVerificationError:
            return False


class Receiver:
    """Answers each path with its script (a list of statuses, or (status, headers) pairs; the
    last one repeats; 200 by default); ``/hold`` waits until ``release()``."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.scripts: dict[str, list[Any]] = {}
        self.hits: dict[str, int] = defaultdict(int)
        self.held = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                call = Call(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time()
                )
                with receiver.lock:
                    receiver.calls.append(call)
                    receiver.hits[self.path] += 1
                    script = receiver.scripts.get(self.path.split("?")[0], [200])
                    step = script[min(receiver.hits[self.path], len(script)) - 1]
                if self.path.startswith("/hold"):
                    receiver.held.wait(60)
                status, headers = step if isinstance(step, tuple) else (step, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def path(self) -> str:
        """A fresh path, so that tests sharing the receiver do not see each other's calls."""
        return f"/{uuid.uuid4().hex[:12]}"

    def script(self, path: str, *steps: Any) -> str:
        self.scripts[path] = list(steps)
        return path

    def calls_to(self, path: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.path.split("?")[0] == path]

    def wait_calls(self, path: str, count: int, timeout: float = 30) -> list[Call]:
        return wait_until(
            lambda: (calls := self.calls_to(path)) and len(calls) >= count and calls,
            timeout,
            0.05,
            message=f"{count} calls to {path}",
        )

    def close(self) -> None:
        self.held.set()
        self.server.shutdown()
        self.server.server_close()


class SmtpSink:
    """A real SMTP server (aiosmtpd) on a free port that keeps the messages it receives."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                sink.messages.append(message_from_bytes(envelope.content))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def wait_for(self, to: str, timeout: float = 30) -> Any:
        return wait_until(
            lambda: next((m for m in self.messages if m["To"] == to), None),
            timeout,
            0.05,
            message=f"a mail to {to}",
        )

    def close(self) -> None:
        self.controller.stop()
