"""Health endpoints, and 503 when a dependency is really down (nothing listening, no database)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from scheduler_app.app import create_app
from tests.support import free_port


def test_healthz_is_200_without_a_token(api):
    response = api.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_is_200_when_postgres_and_redis_answer(api):
    response = api.get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"] == {"postgres": "ok", "redis": "ok"}


def test_metrics_is_prometheus_text_counting_requests(api):
    api.get("/healthz")
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert "scheduler_api_http_request_duration_seconds_count" in text
    assert 'url_rule="/healthz"' in text


def test_swagger_ui_is_served_without_a_token(api):
    response = api.get("/api/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"


def _app_with(settings, **changes):
    app = create_app(dataclasses.replace(settings, **changes))
    return app


@pytest.fixture
def app_without_redis(settings) -> Iterator:
    app = _app_with(settings, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    yield app
    app.extensions["scheduler"].engine.dispose()


@pytest.fixture
def app_without_database(settings, database) -> Iterator:
    url = database.url.rsplit("/", 1)[0] + "/sched_test_no_such_database"
    app = _app_with(settings, database_url=url)
    yield app
    app.extensions["scheduler"].engine.dispose()


def test_readyz_is_503_problem_when_redis_is_down(app_without_redis, assert_problem):
    response = app_without_redis.test_client().get("/readyz")
    body = assert_problem(response, 503)
    assert body["errors"]["postgres"] == "ok"
    assert body["errors"]["redis"].startswith("down")


def test_readyz_is_503_problem_when_postgres_is_down(app_without_database, assert_problem):
    response = app_without_database.test_client().get("/readyz")
    body = assert_problem(response, 503)
    assert body["errors"]["postgres"].startswith("down")
    assert body["errors"]["redis"] == "ok"


def test_api_is_503_with_retry_after_when_postgres_is_down(
    app_without_database, submitter, assert_problem
):
    client = app_without_database.test_client()
    body = assert_problem(client.get("/api/v1/tasks", headers=submitter), 503)
    assert "database" in body["detail"]
    token = client.post("/api/v1/auth/token", json={"client_id": "x", "client_secret": "y"})
    assert_problem(token, 503)
    assert token.headers["Retry-After"] == "5"
    # Liveness does not depend on the database.
    assert client.get("/healthz").status_code == 200
