"""http.request through a real worker: 2xx succeeds, 503 retries, other 4xx fail at once; the
outbound policy and the time limits hold.

Negative controls (tests/outbound_support.py): OUTBOUND_POLICY_NEGATIVE_CONTROL=1 runs the
"production" worker in the test profile (the refusal test fails), OUTBOUND_BANNER_NEGATIVE_CONTROL=1
runs tests.outbound_leaky_worker (the no-banner test fails), TIME_LIMIT_NEGATIVE_CONTROL=1 lifts
http_timeout_max and default_task_timeout (the time-limit tests time out).
"""

from __future__ import annotations

import dataclasses
import threading
import types
from collections import defaultdict
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scheduler_app.app import create_app
from tests import outbound_support as support
from tests.e2e.test_failures import Client
from tests.outbound_support import (
    BANNER_CONTROL,
    BANNER_WORDS,
    POLICY_CONTROL,
    SECRETS,
    TIME_LIMIT_CONTROL,
)
from tests.support import Process, Stack, worker_argv

pytestmark = pytest.mark.e2e
silent_socket, banner_server = support.silent_socket, support.banner_server


@pytest.fixture
def endpoint():
    """A local server whose answers are scripted per path: /ok, /flaky (503 twice), /gone."""
    hits: dict[str, int] = defaultdict(int)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self._answer()

        def do_GET(self):
            self._answer()

        def _answer(self):
            hits[self.path] += 1
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status = {"/ok": 200, "/gone": 404}.get(self.path, 200)
            if self.path == "/flaky":
                status = 503 if hits[self.path] <= 2 else 200
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"echo:" + body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()


def _submit(api, headers, url, **kwargs):
    response = api.post(
        "/api/v1/tasks",
        json={
            "task": "http.request",
            "kwargs": {"url": url, **kwargs},
            "retry": {"max_retries": 3, "backoff": 0.1, "jitter": False},
        },
        headers=headers,
    )
    assert response.status_code == 202, response.json
    return response.json["id"]


def test_http_request_succeeds_on_200_with_the_response(
    api, submitter, worker, endpoint, wait_status
):
    base, hits = endpoint
    task = wait_status(_submit(api, submitter, f"{base}/ok", json={"x": 1}), submitter)
    assert task["status"] == "succeeded"
    assert task["result"]["status"] == 200
    assert task["result"]["body"] == 'echo:{"x": 1}'
    assert hits["/ok"] == 1


def test_http_request_retries_on_503_until_it_succeeds(
    api, submitter, worker, endpoint, wait_status
):
    base, hits = endpoint
    task = wait_status(_submit(api, submitter, f"{base}/flaky", method="GET"), submitter)
    assert task["status"] == "succeeded"
    assert task["attempts"] == 3
    assert hits["/flaky"] == 3


def test_http_request_fails_without_retry_on_404(api, submitter, worker, endpoint, wait_status):
    base, hits = endpoint
    task = wait_status(_submit(api, submitter, f"{base}/gone"), submitter)
    assert task["status"] == "failed"
    assert task["attempts"] == 1
    assert task["error"]["type"] == "PermanentError"
    assert hits["/gone"] == 1


# --- outbound policy and time limits, on a platform of their own ---------------------------

PRODUCTION_WORKER = {
    "SCHEDULER_PROFILE": "production",
    "SCHEDULER_SECRET_KEY": SECRETS["secret_key"],
    "SCHEDULER_JWT_SECRET": SECRETS["jwt_secret"],
    "SCHEDULER_LOG_JSON": "false",
}
HTTP_TIMEOUT_MAX = 100000 if TIME_LIMIT_CONTROL else 1
ONCE = {"max_retries": 0}


@pytest.fixture(scope="module")
def platform(tmp_path_factory, logdir):
    stack = Stack(tmp_path_factory.mktemp("outbound"), logdir)
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def client(platform) -> Client:
    return Client(platform)


@pytest.fixture(scope="module")
def local_worker(platform) -> Process:
    """A test-profile worker (local targets allowed) on "default", two slots, HTTP calls
    bounded to HTTP_TIMEOUT_MAX seconds."""
    argv = worker_argv("default", 2)
    if BANNER_CONTROL:
        argv[argv.index("tasks.worker")] = "tests.outbound_leaky_worker"
    env = {**platform.env, "SCHEDULER_HTTP_TIMEOUT_MAX": str(HTTP_TIMEOUT_MAX)}
    proc = Process("worker", argv, env, platform.logdir).start()
    platform.processes.append(proc)
    proc.wait_for_log("ready.", 60)
    return proc


def _seconds(task: dict) -> float:
    return (
        datetime.fromisoformat(task["finished_at"]) - datetime.fromisoformat(task["started_at"])
    ).total_seconds()


def _dead_letter(client: Client, task_id: str) -> dict:
    items = client.http.get("/api/v1/dlq?task=http.request&limit=1000", headers=client.headers)
    [letter] = [d for d in items.json["items"] if d["task_id"] == task_id]
    return letter


def test_production_worker_refuses_a_loopback_http_request_at_once_without_a_banner(
    platform, client
):
    """The API (test profile) accepts the URLs; the production worker refuses them when it is
    about to connect, as a permanent failure that names the policy and nothing of the peer."""
    worker = platform.worker("high", 1, **({} if POLICY_CONTROL else PRODUCTION_WORKER))
    try:
        port = platform.redis.port
        urls = [f"http://localhost:{port}/", f"http://127.0.0.1:{port}/", "http://[::1]:5432/"]
        retry = {"max_retries": 3, "backoff": 0.1, "jitter": False}
        submitted = [
            client.submit(task="http.request", kwargs={"url": url}, queue="high", retry=retry)
            for url in urls
        ]
        for task in submitted:
            done = client.wait(task["id"])
            assert done["status"] == "failed"
            assert done["attempts"] == 1  # permanent: not retried
            assert done["error"] == {
                "type": "OutboundRefusedError",
                "message": "refused by the outbound policy: loopback address",
            }
            letter = _dead_letter(client, task["id"])
            assert not [w for w in BANNER_WORDS if w in letter["traceback"]], letter["traceback"]
    finally:
        worker.stop()


def test_connection_errors_reach_the_ledger_without_the_peers_banner(
    client, local_worker, banner_server
):
    """A service that speaks first (its banner is read as the status line): the task's error
    and its dead letter name the failure, nothing the peer sent."""
    url = banner_server.url()
    task = client.submit(task="http.request", kwargs={"url": url}, retry=ONCE)
    done = client.wait(task["id"])
    assert done["status"] == "failed"
    assert done["error"] == {
        "type": "OutboundConnectionError",
        "message": f"GET {url}: the peer did not answer with HTTP",
    }
    letter = _dead_letter(client, task["id"])
    assert not [w for w in BANNER_WORDS if w in letter["traceback"]], letter["traceback"]


def test_http_requests_to_a_silent_socket_end_within_the_bound_and_free_the_slots(
    client, local_worker, silent_socket
):
    """Two calls to a socket that accepts and never answers, asking for a 300 s timeout,
    held both slots forever before; the worker's http_timeout_max (1 s) ends them."""
    kwargs = {"url": silent_socket.url(), "timeout": 300}
    hung = [client.submit(task="http.request", kwargs=kwargs, retry=ONCE) for _ in range(2)]
    for task in hung:
        done = client.wait(task["id"], timeout=20)
        assert done["status"] == "failed"
        assert done["error"]["type"] == "OutboundConnectionError"
        assert done["error"]["message"].endswith(": timed out waiting for the response")
        assert _seconds(done) < 15
    # The attempt's own time limit ends a call sooner than the HTTP bound.
    limited = client.submit(task="http.request", kwargs=kwargs, timeout=0.5, retry=ONCE)
    done = client.wait(limited["id"], timeout=20)
    assert (done["status"], done["error"]["type"]) == ("failed", "AttemptTimeout")
    echo = client.submit(task="demo.echo", args=["free"])
    assert client.wait(echo["id"], timeout=15)["status"] == "succeeded"


def test_a_task_without_a_timeout_is_stopped_at_the_default_time_limit(platform, local_worker):
    """default_task_timeout applies to a task that names no timeout (and GET shows it): two
    30-second sleeps are stopped after a second and the slots serve the next task."""
    limit = 86400.0 if TIME_LIMIT_CONTROL else 1.0
    app = create_app(dataclasses.replace(platform.settings, default_task_timeout=limit))
    try:
        short = Client(types.SimpleNamespace(app=app, ext=app.extensions["scheduler"]))
        sleeps = [
            short.submit(task="demo.sleep", kwargs={"seconds": 30}, retry=ONCE) for _ in range(2)
        ]
        assert [s["timeout"] for s in sleeps] == [limit, limit]
        for task in sleeps:
            done = short.wait(task["id"], timeout=15)
            assert (done["status"], done["error"]["type"]) == ("failed", "AttemptTimeout")
            assert short.get(task["id"])["timeout"] == limit
        echo = short.submit(task="demo.echo", args=["free"])
        assert short.wait(echo["id"], timeout=15)["status"] == "succeeded"
    finally:
        app.extensions["scheduler"].engine.dispose()
