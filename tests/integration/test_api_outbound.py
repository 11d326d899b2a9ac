"""Submission under the outbound URL policy and the time limits: 422s naming the field.

A production-profile app (same database and Redis as the session's) checks what production
refuses; the session's test-profile app what every profile refuses. Negative controls
(tests/outbound_support.py): OUTBOUND_POLICY_NEGATIVE_CONTROL=1 makes the refusal tests fail,
TIME_LIMIT_NEGATIVE_CONTROL=1 the time-limit tests.
"""

from __future__ import annotations

import pytest

from tests import outbound_support as support
from tests.outbound_support import TIME_LIMIT_CONTROL, production_settings

outbound_controls = support.outbound_controls  # the negative controls' switch

TASKS = "/api/v1/tasks"
LIMITS = (
    {"max_task_timeout": 86400, "default_task_timeout": 86400, "http_timeout_max": 1e9}
    if TIME_LIMIT_CONTROL
    else {"max_task_timeout": 60, "default_task_timeout": 30, "http_timeout_max": 10}
)


@pytest.fixture(scope="module")
def production(database, redis_server):
    """A production-profile app and the headers of a submitter's token on it."""
    from scheduler_app.app import create_app

    app = create_app(
        production_settings(
            database_url=database.url,
            broker_url=redis_server.url,
            outbound_allowlist=("10.1.2.3", "partner.internal"),
            **LIMITS,
        )
    )
    client, secret = app.extensions["scheduler"].clients.create("outbound", "submitter")
    token = (
        app.test_client()
        .post("/api/v1/auth/token", json={"client_id": client.client_id, "client_secret": secret})
        .json["access_token"]
    )
    yield app.test_client(), {"Authorization": f"Bearer {token}"}
    app.extensions["scheduler"].engine.dispose()


def _http(url: str, **kwargs) -> dict:
    return {"task": "http.request", "queue": "low", "kwargs": {"url": url, **kwargs}}


@pytest.mark.parametrize(
    "url",
    [
        "http://0x7f000001/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://127.1:6379/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::1]:5432/",
        "http://localhost:6379/",
        "http://0.0.0.0:8000/",
        "http://10.0.0.5/",
        "http://192.168.1.1/admin",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[fd00:ec2::254]/",
    ],
)
def test_production_refuses_a_private_http_request_url_with_422(production, assert_problem, url):
    api, headers = production
    body = assert_problem(api.post(TASKS, json=_http(url), headers=headers), 422, "kwargs.url")
    assert body["errors"]["kwargs.url"][0].startswith("refused by the outbound policy: ")


def test_production_accepts_allowlisted_and_public_urls(production):
    api, headers = production
    for url in ("http://10.1.2.3/hook", "http://partner.internal:8080/", "https://example.com/"):
        response = api.post(TASKS, json=_http(url), headers=headers)
        assert response.status_code == 202, (url, response.json)


def test_every_profile_refuses_metadata_but_test_allows_loopback(api, submitter, assert_problem):
    for url in ("http://169.254.169.254/latest/", "http://0xa9fea9fe/", "http://[fe80::1]/"):
        body = assert_problem(api.post(TASKS, json=_http(url), headers=submitter), 422)
        assert list(body["errors"]) == ["kwargs.url"]
    response = api.post(TASKS, json=_http("http://127.0.0.1:9/"), headers=submitter)
    assert response.status_code == 202, response.json


@pytest.mark.parametrize(
    "webhook", ["http://127.0.0.1/hook", "http://[::1]/", "http://0x0a000001/", "http://metadata/"]
)
def test_production_refuses_a_private_webhook_with_422(production, assert_problem, webhook):
    api, headers = production
    response = api.post(
        TASKS,
        json={"task": "demo.echo", "queue": "low", "notify": {"webhook": webhook}},
        headers=headers,
    )
    body = assert_problem(response, 422, "notify.webhook")
    assert body["errors"]["notify.webhook"][0].startswith("refused by the outbound policy: ")


def test_test_profile_refuses_a_metadata_webhook_and_allows_a_local_one(
    api, submitter, assert_problem
):
    def post(webhook):
        return api.post(
            TASKS,
            json={"task": "demo.echo", "queue": "low", "notify": {"webhook": webhook}},
            headers=submitter,
        )

    assert_problem(post("http://169.254.169.254/"), 422, "notify.webhook")
    assert post("http://127.0.0.1:8080/hook").status_code == 202


def test_batch_names_each_refused_url(production, assert_problem):
    """Schema errors (notify) come before the task-type checks (kwargs), as for any field."""
    api, headers = production
    echo = {"task": "demo.echo", "queue": "low"}
    bodies = [echo, _http("http://127.0.0.1/"), echo, _http("http://[::1]/")]
    response = api.post(f"{TASKS}/batch", json={"tasks": bodies}, headers=headers)
    body = assert_problem(response, 422, "tasks.1.kwargs.url", "tasks.3.kwargs.url")
    assert len(body["errors"]) == 2
    bodies = [echo, {**echo, "notify": {"webhook": "http://[::1]/"}}]
    response = api.post(f"{TASKS}/batch", json={"tasks": bodies}, headers=headers)
    body = assert_problem(response, 422, "tasks.1.notify.webhook")
    assert len(body["errors"]) == 1


def test_timeout_above_max_task_timeout_is_422_naming_timeout(production, assert_problem):
    api, headers = production
    body = {"task": "demo.echo", "queue": "low"}
    assert_problem(api.post(TASKS, json={**body, "timeout": 61}, headers=headers), 422, "timeout")
    accepted = api.post(TASKS, json={**body, "timeout": 60}, headers=headers)
    assert accepted.status_code == 202 and accepted.json["timeout"] == 60


def test_http_timeout_above_http_timeout_max_is_422(production, api, submitter, assert_problem):
    prod_api, headers = production
    response = prod_api.post(TASKS, json=_http("https://example.com/", timeout=11), headers=headers)
    assert_problem(response, 422, "kwargs.timeout")
    response = api.post(TASKS, json=_http("http://127.0.0.1:9/", timeout=1e9), headers=submitter)
    assert_problem(response, 422, "kwargs.timeout")


def test_every_task_gets_a_time_limit_that_get_shows(production, api, submitter):
    prod_api, headers = production
    cases = [
        # (app, headers, body, stored timeout)
        (api, submitter, {"task": "demo.echo"}, 3600),  # default_task_timeout
        (api, submitter, _http("http://127.0.0.1:9/"), 600),  # the type's own default
        (api, submitter, {"task": "demo.echo", "timeout": 5}, 5),
        (prod_api, headers, {"task": "demo.echo"}, 30),
        (prod_api, headers, _http("https://example.com/"), 60),  # capped at max_task_timeout
    ]
    for client, auth, body, expected in cases:
        created = client.post(TASKS, json={"queue": "low", **body}, headers=auth)
        assert created.status_code == 202, created.json
        fetched = client.get(created.headers["Location"], headers=auth).json
        assert fetched["timeout"] == expected, (body, fetched["timeout"])


def test_task_types_show_their_default_time_limit(api, submitter):
    types = {t["name"]: t for t in api.get("/api/v1/task-types", headers=submitter).json}
    assert types["http.request"]["timeout"] == 600
    assert types["demo.echo"]["timeout"] is None
