"""The API served by real gunicorn with its production settings (scheduler_app/gunicorn_conf.py),
and raw-socket helpers for talking to it the way hostile clients do.

Negative controls: ``SCHEDULER_TEST_CONTROL`` removes one protection from every server these
tests start, so that the tests guarding it fail (each test's docstring names its control):

- ``threads``: gunicorn's threaded worker (``--worker-class gthread --threads 4``) instead of
  the gevent one, as the API ran before;
- ``html-errors``: the production settings without the hook that renders gunicorn's own errors
  as problem+json;
- ``no-body-limit``: the app without its body-limit middleware;
- ``unbounded-db-waits``: psycopg2 cooperative under gevent but with no bound on any wait;
- ``metrics-single-process``: no Prometheus multiprocess directory, so each scrape sees only
  the gunicorn process that answered it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import requests

from tests.support import Process, free_port, wait_until

CONFIG = "python:scheduler_app.gunicorn_conf"
CONTROL = os.environ.get("SCHEDULER_TEST_CONTROL", "")


class ApiServer:
    """gunicorn serving the API on a free loopback port, as the launchers run it."""

    def __init__(self, env: dict[str, str], logdir: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config, app, extra = CONFIG, "scheduler_app.wsgi:app", []
        if CONTROL == "threads":
            extra = ["--worker-class", "gthread", "--threads", "4"]
        elif CONTROL in ("html-errors", "metrics-single-process"):
            config = "python:tests.server_controls"
        elif CONTROL == "no-body-limit":
            app = "tests.server_controls:without_body_limit()"
        elif CONTROL == "unbounded-db-waits":
            app = "tests.server_controls:with_unbounded_db_waits()"
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            config,
            *("--bind", f"127.0.0.1:{self.port}", "--workers", str(workers)),
            # Stalled test connections must not hold a stop for the production 30 s.
            *("--graceful-timeout", "2", "--no-control-socket", *extra, app),
        ]
        self.process = Process("api", argv, env, logdir)

    def start(self) -> ApiServer:
        self.process.start()

        def answers() -> bool:
            if self.process.process.poll() is not None:
                raise AssertionError(f"gunicorn exited:\n{self.process.log()[-3000:]}")
            try:
                return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(answers, 60, 0.2, message="gunicorn to answer /healthz")
        return self

    def stop(self) -> None:
        self.process.stop(timeout=10)


def connect(port: int, timeout: float = 10) -> socket.socket:
    """A loopback TCP connection to ``port``."""
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response with a Content-Length: (status, headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body[:length]


def problem_of(status: int, headers: dict[str, str], body: bytes, expected: int) -> dict:
    """Check a raw response is a problem+json of ``expected``; return its body."""
    assert status == expected, (status, headers, body[:300])
    assert headers["content-type"].startswith("application/problem+json"), (headers, body[:300])
    problem = json.loads(body)
    assert problem["status"] == expected
    assert problem["type"].startswith("https://") and problem["title"] and problem["detail"]
    assert problem["request_id"] == headers["x-request-id"]
    return problem
