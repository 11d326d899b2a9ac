"""Fixtures on real services: a database and a redis-server of this test session's own."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    Process,
    RedisServer,
    Stack,
    TestDatabase,
    app_for,
    scheduler_argv,
    settings_for,
    wait_until,
    worker_argv,
)

# The files that take longest (a full run's --durations=0, summed per file), longest first: the
# parallel runners (pytest-xdist, --dist loadfile) start them first, instead of ending the run
# with one runner busy on one of them while the other has finished.
SLOW_FIRST = (
    "test_failures.py",
    "test_api_fuzz_schedules.py",
    "test_bench_smoke.py",
    "test_api_fuzz_workflows.py",
    "test_api_fuzz_tasks.py",
    "test_schedules.py",
    "test_operations.py",
    "test_retries.py",
    "test_hung_database.py",
    "test_workflows.py",
    "test_notifications.py",
    "test_worker_edges.py",
    "test_api_openapi.py",
    "test_postman.py",
    "test_standalone.py",
    "test_outcome_seam.py",
    "test_ledger_scale.py",
    "test_delivery.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the slow files first (a stable sort: the order within a file is kept)."""
    rank = {name: index for index, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def database() -> Iterator[TestDatabase]:
    db = TestDatabase()
    db.create()
    yield db
    db.drop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def settings(database, redis_server):
    return settings_for(database.url, redis_server.url)


@pytest.fixture(scope="session")
def process_env(database, redis_server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
    env.update(
        SCHEDULER_PROFILE="test",
        SCHEDULER_DATABASE_URL=database.url,
        SCHEDULER_BROKER_URL=redis_server.url,
        PYTHONUNBUFFERED="1",
        REMAP_SIGTERM="SIGQUIT",
    )
    return env


@pytest.fixture(scope="session")
def logdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def app(settings):
    return app_for(settings)


@pytest.fixture
def api(app):
    return app.test_client()


@pytest.fixture(scope="session")
def make_client(app):
    """Create an API client of a role and return the Authorization headers of its token."""

    def make(role: str = "submitter") -> dict[str, str]:
        ext = app.extensions["scheduler"]
        client, secret = ext.clients.create(f"test-{role}-{uuid.uuid4().hex[:6]}", role)
        response = app.test_client().post(
            "/api/v1/auth/token", json={"client_id": client.client_id, "client_secret": secret}
        )
        assert response.status_code == 200, response.json
        return {"Authorization": f"Bearer {response.json['access_token']}"}

    return make


@pytest.fixture
def submitter(make_client) -> dict[str, str]:
    return make_client("submitter")


@pytest.fixture(scope="session")
def worker(process_env, logdir) -> Iterator[Process]:
    """One real Celery worker (prefork, 2 processes) on the default and high queues."""
    proc = Process("worker", worker_argv("default,high", 2), process_env, logdir).start()
    proc.wait_for_log("ready.", 60)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def scheduler(process_env, logdir) -> Iterator[Process]:
    proc = Process("scheduler", scheduler_argv(), process_env, logdir).start()
    proc.wait_for_log("scheduler started", 30)
    yield proc
    proc.stop()


@pytest.fixture
def wait_status(api):
    """Poll GET /api/v1/tasks/{id} until its status is one of ``statuses``; return the task."""

    def wait(
        task_id: str,
        headers: dict,
        statuses=("succeeded", "failed", "cancelled"),
        timeout: float = 30,
    ) -> dict:
        def current():
            response = api.get(f"/api/v1/tasks/{task_id}", headers=headers)
            assert response.status_code == 200, response.json
            return response.json if response.json["status"] in statuses else None

        return wait_until(current, timeout, 0.05, message=f"task {task_id} to reach {statuses}")

    return wait


@pytest.fixture
def stack(tmp_path, logdir) -> Iterator[Stack]:
    """An isolated platform (own database and redis-server) for tests that break things."""
    platform = Stack(tmp_path, logdir)
    yield platform
    platform.close()
