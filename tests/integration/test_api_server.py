"""The API under hostile clients, over real sockets against real gunicorn with its production
settings: bodies over the limit however they are sent, stalled (slow-loris) connections, and
requests gunicorn itself refuses.

Each test's negative control is ``SCHEDULER_TEST_CONTROL=<name>`` (tests/api_server.py), e.g.
``SCHEDULER_TEST_CONTROL=threads pytest tests/integration/test_api_server.py -k slow``.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from tests.api_server import ApiServer, connect, problem_of, read_response

TASK = b'{"task": "demo.echo", "queue": "low"}'
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def server(process_env, logdir) -> Iterator[ApiServer]:
    api = ApiServer(process_env, logdir, workers=1).start()
    yield api
    api.stop()


def _post_chunked(server: ApiServer, path: str, parts: Iterator[bytes], headers: dict) -> tuple:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", path, body=parts, headers=headers, encode_chunked=True)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _padded(json_body: bytes, total: int) -> Iterator[bytes]:
    """``json_body`` then spaces up to ``total`` bytes: valid JSON of any size, 64 KiB a chunk."""
    yield json_body
    left = total - len(json_body)
    while left > 0:
        yield b" " * min(65536, left)
        left -= 65536


# --- 1. the body limit, however the body arrives ----------------------------------------------


def test_chunked_body_over_the_limit_is_413(server, submitter, settings):
    """2 MiB of valid JSON sent chunked is refused like one with a Content-Length.

    Negative control: ``SCHEDULER_TEST_CONTROL=no-body-limit`` (Werkzeug cuts the body at the
    limit and the first mebibyte is a valid task: 202).
    """
    headers = {**submitter, "Content-Type": "application/json"}
    status, head, body = _post_chunked(server, "/api/v1/tasks", _padded(TASK, 2 * MIB), headers)
    problem = problem_of(status, head, body, 413)
    assert str(settings.max_body_bytes) in problem["detail"]


def test_chunked_body_within_the_limit_is_read_whole(server, submitter, settings):
    """The chunked path hands the app the whole body: a task padded to just under the limit."""
    headers = {**submitter, "Content-Type": "application/json"}
    parts = _padded(TASK, settings.max_body_bytes)
    status, _, body = _post_chunked(server, "/api/v1/tasks", parts, headers)
    assert status == 202, body[:300]
    assert json.loads(body)["task"] == "demo.echo"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/tasks"),
        ("POST", "/api/v1/auth/token"),
        ("GET", "/healthz"),
        ("POST", "/api/v1/no-such-endpoint"),
    ],
)
def test_declared_length_over_the_limit_is_413_before_the_body_is_sent(
    server, settings, method, path
):
    """Every endpoint answers 413 from the headers alone: no byte of the body is awaited.

    Negative control: ``SCHEDULER_TEST_CONTROL=no-body-limit`` (endpoints that do not read a
    body answer as usual; the others wait for the body, so the read times out).
    """
    with connect(server.port, timeout=5) as sock:
        sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {2 * MIB}\r\n\r\n".encode()
        )
        problem_of(*read_response(sock), 413)


@pytest.mark.parametrize("path", ["/api/v1/auth/token", "/healthz"])
def test_chunked_body_over_the_limit_is_413_on_every_endpoint(server, path):
    """Negative control: ``SCHEDULER_TEST_CONTROL=no-body-limit``."""
    headers = {"Content-Type": "application/json"}
    status, head, body = _post_chunked(server, path, _padded(b"{}", 2 * MIB), headers)
    problem_of(status, head, body, 413)


# --- 2. stalled connections ---------------------------------------------------------------------


class Trickler(threading.Thread):
    """A slow-loris client: sends ``request[:sent_at_once]``, then a byte every ``pause`` seconds,
    reconnecting when the server drops it, until ``stop`` is set. Loopback only."""

    def __init__(self, port: int, request: bytes, sent_at_once: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.request, self.sent_at_once, self.stop = port, request, sent_at_once, stop
        self.pause = 0.2

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with connect(self.port, timeout=2) as sock:
                    sock.sendall(self.request[: self.sent_at_once])
                    for byte in self.request[self.sent_at_once :]:
                        if self.stop.wait(self.pause):
                            return
                        sock.sendall(bytes([byte]))
            except OSError:
                pass  # dropped by the server: stall it again
            self.stop.wait(0.05)


def _slow_clients(port: int, stop: threading.Event) -> list[Trickler]:
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    slow_headers = head + b"X-Slow: " + b"a" * 2000 + b"\r\n\r\n"
    post = b"POST /api/v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    length = post + b"Content-Length: 2000\r\n\r\n"
    chunked = post + b"Transfer-Encoding: chunked\r\n\r\n"
    clients = [Trickler(port, slow_headers, len(head), stop) for _ in range(20)]
    clients += [Trickler(port, length + b" " * 2000, len(length), stop) for _ in range(15)]
    chunks = b"1\r\n \r\n" * 400
    clients += [Trickler(port, chunked + chunks, len(chunked), stop) for _ in range(15)]
    return clients


def test_healthz_answers_within_a_second_while_50_connections_stall(server, submitter):
    """50 connections trickling their headers or bodies (Content-Length and chunked) tie up no
    worker: /healthz answers within 1 s every time, and a submission still goes through.

    Negative control: ``SCHEDULER_TEST_CONTROL=threads`` (gunicorn's threaded worker: the stalled
    connections hold its 4 threads and /healthz times out).
    """
    stop = threading.Event()
    clients = _slow_clients(server.port, stop)
    assert len(clients) == 50
    for client in clients:
        client.start()
    slow = []
    try:
        time.sleep(1.0)  # every client connected and stalled
        for _ in range(10):
            started = time.monotonic()
            try:
                ok = requests.get(f"{server.url}/healthz", timeout=1).status_code == 200
            except requests.RequestException as exc:
                ok = repr(exc)
            elapsed = time.monotonic() - started
            if ok is not True or elapsed > 1.0:
                slow.append((ok, round(elapsed, 3)))
            time.sleep(0.5)
        submitted = requests.post(
            f"{server.url}/api/v1/tasks", json={"task": "demo.echo", "queue": "low"},
            headers=submitter, timeout=5,
        )  # fmt: skip
    finally:
        stop.set()
        for client in clients:
            client.join(5)
    assert not slow, f"/healthz was slow or failed under stalled connections: {slow}"
    assert submitted.status_code == 202, submitted.text


# --- 3. errors gunicorn itself answers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /api/v1/tasks?tag=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 120 + b"\r\n", 431),
        (b"NOT AN HTTP REQUEST\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n", 400),
    ],
    ids=["request-line-too-long", "header-too-large", "too-many-headers", "garbage", "bad-header"],
)
def test_requests_gunicorn_refuses_get_problem_json(server, raw, status):
    """Negative control: ``SCHEDULER_TEST_CONTROL=html-errors`` (gunicorn's text/html pages)."""
    with connect(server.port, timeout=5) as sock:
        sock.sendall(raw)
        problem = problem_of(*read_response(sock), status)
    assert problem["type"].startswith("https://scheduler.dev/problems/")


def test_longest_urls_the_api_accepts_fit_gunicorns_request_line(server, submitter):
    """A list with every filter at its longest bound stays under limit_request_line."""
    from scheduler_app import limits as L
    from scheduler_app.gunicorn_conf import limit_request_line

    query = "&".join(
        [
            "status=queued,scheduled,running,retrying,succeeded,failed,cancelled",
            "task=" + "t" * L.TASK_NAME_MAX,
            "queue=" + "q" * L.QUEUE_NAME_MAX,
            "tag=" + "g" * L.TAG_MAX,
            f"workflow_id={'0' * 8}-{'0' * 4}-{'0' * 4}-{'0' * 4}-{'0' * 12}",
            f"schedule_id={'0' * 8}-{'0' * 4}-{'0' * 4}-{'0' * 4}-{'0' * 12}",
            "created_after=2026-12-01T00:00:00.000000%2B00:00",
            "created_before=2026-12-01T00:00:00.000000%2B00:00",
            f"limit={L.PAGE_MAX}",
        ]
    )
    line = f"GET /api/v1/tasks?{query} HTTP/1.1"
    # A cursor is "<at most 17 digits>_<32 hex digits>" (services/pagination.py).
    assert len(line) + len("&cursor=") + 17 + 1 + 32 < limit_request_line / 2
    response = requests.get(f"{server.url}/api/v1/tasks?{query}", headers=submitter, timeout=5)
    assert response.status_code == 200, response.text


# --- Prometheus multiprocess mode under the config ----------------------------------------------


@pytest.fixture(scope="module")
def two_workers(process_env, logdir, tmp_path_factory) -> Iterator[ApiServer]:
    multiproc = tmp_path_factory.mktemp("prometheus-multiproc")
    env = {**process_env, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    api = ApiServer(env, logdir, workers=2).start()
    yield api
    api.stop()


def _healthz_count(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("scheduler_api_http_request_duration_seconds_count{") and (
            'url_rule="/healthz"' in line and 'status="200"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_add_up_every_worker_process(two_workers):
    """With PROMETHEUS_MULTIPROC_DIR, whichever process answers /metrics counts every
    process's requests (each request below comes on a connection of its own)."""
    before = _healthz_count(requests.get(f"{two_workers.url}/metrics", timeout=5).text)
    pids = set()
    for _ in range(40):
        with requests.Session() as fresh:
            assert fresh.get(f"{two_workers.url}/healthz", timeout=5).status_code == 200
    for line in two_workers.process.log().splitlines():
        if "Booting worker with pid" in line:
            pids.add(line.rsplit(" ", 1)[1])
    assert len(pids) == 2
    counts = {
        _healthz_count(requests.get(f"{two_workers.url}/metrics", timeout=5).text) for _ in range(6)
    }
    assert counts == {before + 40}, counts
