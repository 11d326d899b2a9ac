"""Local servers and switches for the outbound policy tests (http.request, webhooks).

Negative controls, each an environment variable read here (never by the product):
- ``OUTBOUND_POLICY_NEGATIVE_CONTROL=1`` turns the policy off (every target allowed) in the test
  process, and makes the e2e tests run their worker in the permissive ``test`` profile: every
  refusal test must then fail.
- ``OUTBOUND_REBIND_NEGATIVE_CONTROL=1`` makes the client connect by name after its check (a
  second lookup, as a check-then-connect client does): the rebinding test must then fail.
- ``OUTBOUND_BANNER_NEGATIVE_CONTROL=1`` makes errors echo the library's exception (the peer's
  bytes included), in the test process and in e2e workers (``tests.outbound_leaky_worker``):
  the no-banner tests must then fail.
- ``TIME_LIMIT_NEGATIVE_CONTROL=1`` lifts the time limits the time-limit tests rely on: they
  must then fail (time out waiting).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

POLICY_CONTROL = bool(os.environ.get("OUTBOUND_POLICY_NEGATIVE_CONTROL"))
REBIND_CONTROL = bool(os.environ.get("OUTBOUND_REBIND_NEGATIVE_CONTROL"))
BANNER_CONTROL = bool(os.environ.get("OUTBOUND_BANNER_NEGATIVE_CONTROL"))
TIME_LIMIT_CONTROL = bool(os.environ.get("TIME_LIMIT_NEGATIVE_CONTROL"))

SECRETS = {"secret_key": "k" * 40, "jwt_secret": "j" * 40}
# Words of the banner of BannerServer, and of what Redis and PostgreSQL might answer.
BANNER_WORDS = ("SSH-", "OpenSSH", "redis_version", "ERR", "FATAL", "unsupported frontend", "b'")


def production_settings(**overrides):
    """Settings of the production profile (no environment read)."""
    from scheduler_app.config import load_settings

    return load_settings({"profile": "production", "log_json": False, **SECRETS, **overrides}, {})


@pytest.fixture(autouse=True)
def outbound_controls(monkeypatch):
    """Apply the negative controls that were asked for (see the module docstring)."""
    from scheduler_app.services.outbound import client, policy

    if POLICY_CONTROL:
        monkeypatch.setattr(policy.OutboundPolicy, "refusal", lambda self, ip, host=None: None)
        monkeypatch.setattr(policy.OutboundPolicy, "check_host", lambda self, host: None)
    if REBIND_CONTROL:
        checked_connect = client._CheckedConnection._new_conn
        from urllib3.connection import HTTPConnection

        def check_then_connect_by_name(self):
            checked_connect(self).close()
            return HTTPConnection._new_conn(self)

        monkeypatch.setattr(client._CheckedConnection, "_new_conn", check_then_connect_by_name)
    if BANNER_CONTROL:
        monkeypatch.setattr(client, "describe", repr)


class Recorder:
    """A local HTTP server in a thread whose answers are scripted per path; counts hits."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.hits: dict[str, int] = defaultdict(int)
        self.requests: list[dict] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self._answer()

            def do_POST(self):
                self._answer()

            def _answer(self):
                recorder.hits[self.path] += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorder.requests.append({"path": self.path, "headers": dict(self.headers)})
                status, headers, payload = recorder.answer(self.path, body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.host, self.port = self.server.server_address[:2]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if path == "/redirect":
            return 302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b""
        if path == "/big":
            return 200, {"Content-Type": "text/plain"}, b"x" * 100_000
        if path == "/gone":
            return 404, {}, b"gone"
        return 200, {"Content-Type": "text/plain; charset=utf-8"}, b"echo:" + body

    @property
    def hit_count(self) -> int:
        return sum(self.hits.values())

    def url(self, path: str = "/ok", host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class SilentSocket:
    """A socket that accepts connections (the kernel's backlog) and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> SilentSocket:
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()


class BannerServer:
    """A local service that speaks first, as SSH, SMTP or MySQL do: it sends its banner to
    whoever connects, then closes (a stand-in for a third party's service)."""

    BANNER = b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13 redis_version:7.2.4 FATAL\r\n"

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with conn:
                conn.sendall(self.BANNER)
                conn.settimeout(1)
                with contextlib.suppress(OSError):
                    conn.recv(65536)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> BannerServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()


@pytest.fixture
def banner_server() -> Iterator[BannerServer]:
    with BannerServer() as server:
        yield server


@pytest.fixture
def silent_socket() -> Iterator[SilentSocket]:
    with SilentSocket() as silent:
        yield silent


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with Recorder() as server:
        yield server


@pytest.fixture
def resolver(monkeypatch) -> Callable[..., None]:
    """Teach the resolver names: ``resolver(name, [ip, ...], [ip, ...])`` answers the first
    lookup of ``name`` with the first list, the next with the next (the last one once they are
    used up); an empty list answers "no such name". Patching getaddrinfo mocks DNS, which we do
    not own."""
    answers: dict[str, list[list[str]]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in answers:
            return real(host, port, family, type, proto, flags)
        lookups = answers[name]
        ips = lookups.pop(0) if len(lookups) > 1 else lookups[0]
        if not ips:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            info
            for ip in ips
            for info in real(ip, port, family, type, proto, socket.AI_NUMERICHOST)
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    def teach(name: str, *lookups: list[str]) -> None:
        answers[name] = [list(ips) for ips in lookups]

    return teach
