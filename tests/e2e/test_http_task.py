"""http.request against a local HTTP server: 2xx succeeds, 503 retries, other 4xx fail at once."""

from __future__ import annotations

import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytestmark = pytest.mark.e2e


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
