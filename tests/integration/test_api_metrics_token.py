"""/metrics behind the scrape token (``metrics_token``), and open when none is set.

Negative control: ``SCHEDULER_TEST_CONTROL=metrics-open`` builds the guarded app without its
token, and the tests that expect a 401 fail.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from scheduler_app.app import create_app

TOKEN = "scrape-token-0123456789abcdef0123456789"


@pytest.fixture(scope="module")
def guarded(settings):
    token = "" if os.environ.get("SCHEDULER_TEST_CONTROL") == "metrics-open" else TOKEN
    app = create_app(dataclasses.replace(settings, metrics_token=token))
    yield app.test_client()
    app.extensions["scheduler"].engine.dispose()


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"]
)
def test_metrics_without_the_scrape_token_is_401_problem(guarded, assert_problem, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = guarded.get("/metrics", headers=headers)
    body = assert_problem(response, 401)
    assert "scrape token" in body["detail"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "scheduler_api_http_request" not in response.get_data(as_text=True)


def test_metrics_with_the_scrape_token_is_prometheus_text(guarded):
    response = guarded.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    # The process's registry (shared by every app a test session builds) is what is served.
    assert "# TYPE scheduler_api_http_request_duration_seconds" in response.get_data(as_text=True)


def test_the_token_guards_only_metrics(guarded):
    assert guarded.get("/healthz").status_code == 200
    assert guarded.get("/api/openapi.json").status_code == 200


def test_metrics_is_open_when_no_token_is_set(api, settings):
    assert settings.metrics_token == ""
    response = api.get("/metrics")
    assert response.status_code == 200
    assert "scheduler_api_http_request_duration_seconds_count" in response.get_data(as_text=True)
