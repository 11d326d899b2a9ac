"""Fixtures of the HTTP API tests: clients of each role, problem checks, a live server."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
from werkzeug.serving import WSGIRequestHandler, make_server

from tests.support import Stack, free_port

PROBLEM_FIELDS = {"type", "title", "status", "detail", "request_id"}


@pytest.fixture
def operator(make_client) -> dict[str, str]:
    return make_client("operator")


@pytest.fixture
def admin(make_client) -> dict[str, str]:
    return make_client("admin")


@pytest.fixture
def other_submitter(make_client) -> dict[str, str]:
    return make_client("submitter")


@pytest.fixture(scope="session")
def credentials(app) -> Callable[[str], tuple[str, str]]:
    """Create a client of a role; return its (client_id, client_secret)."""

    def make(role: str = "submitter") -> tuple[str, str]:
        client, secret = app.extensions["scheduler"].clients.create(
            f"test-{role}-{uuid.uuid4().hex[:6]}", role
        )
        return client.client_id, secret

    return make


@pytest.fixture(scope="session")
def assert_problem() -> Callable:
    """Check that a response is an application/problem+json of ``status``; return its body."""

    def check(response, status: int, *fields: str) -> dict:
        assert response.status_code == status, (response.status_code, response.get_data()[:500])
        assert response.mimetype == "application/problem+json"
        body = response.get_json(force=True)
        assert set(body) >= PROBLEM_FIELDS, body
        assert body["status"] == status
        assert body["type"].startswith("https://")
        assert body["title"] and body["detail"]
        assert body["request_id"] == response.headers["X-Request-ID"]
        for name in fields:
            assert name in body.get("errors", {}), (name, body)
        return body

    return check


@pytest.fixture
def submit(api) -> Callable:
    """POST /api/v1/tasks; by default a task that stays queued (queue "low" has no worker)."""

    def post(headers: dict[str, str], **body) -> dict:
        body.setdefault("task", "demo.echo")
        body.setdefault("queue", "low")
        response = api.post("/api/v1/tasks", json=body, headers=headers)
        assert response.status_code == 202, response.json
        return response.json

    return post


class _QuietHandler(WSGIRequestHandler):
    """No access log: a fuzzing run makes thousands of requests."""

    def log_request(self, *args, **kwargs) -> None:
        pass


class LiveServer:
    """The app served over real HTTP by werkzeug in a background thread."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = make_server(
            "127.0.0.1", self.port, app, threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> LiveServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(10)


@pytest.fixture(scope="session")
def live_server(app) -> Iterator[LiveServer]:
    server = LiveServer(app).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory, logdir) -> Iterator[Stack]:
    """A platform of the fuzz test's own: the fuzzer pauses, resumes and scales whatever queues
    and workers it finds, and must never reach those of the session's other tests."""
    platform = Stack(tmp_path_factory.mktemp("fuzz"), logdir)
    yield platform
    platform.close()


@pytest.fixture(scope="module")
def fuzz_server(fuzz_stack) -> Iterator[LiveServer]:
    server = LiveServer(fuzz_stack.app).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fuzz_credentials(fuzz_stack) -> Callable[[str], tuple[str, str]]:
    """Create a client of a role on the fuzz platform; return its (client_id, client_secret)."""

    def make(role: str = "submitter") -> tuple[str, str]:
        client, secret = fuzz_stack.ext.clients.create(f"fuzz-{role}-{uuid.uuid4().hex[:6]}", role)
        return client.client_id, secret

    return make
