"""Every error is application/problem+json carrying the request id; a 500 tells nothing inside."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import select

from scheduler_app.app import create_app
from scheduler_app.models import Task

HEX_ID = re.compile(r"^[0-9a-f]{32}$")


def _too_big(settings) -> dict:
    return {"task": "demo.echo", "args": ["x" * settings.max_body_bytes]}


# (method, path, body, role or None, expected status)
ERRORS = [
    pytest.param("post", "/api/v1/tasks", "{not json", "submitter", 400, id="400-malformed"),
    pytest.param("get", "/api/v1/tasks", None, None, 401, id="401-no-token"),
    pytest.param(
        "post", "/api/v1/clients", {"name": "x", "role": "admin"}, "submitter", 403, id="403-role"
    ),
    pytest.param("get", f"/api/v1/tasks/{uuid.uuid4()}", None, "submitter", 404, id="404-task"),
    pytest.param("get", "/api/v1/nothing-here", None, None, 404, id="404-route"),
    pytest.param("delete", "/healthz", None, None, 405, id="405-method"),
    pytest.param("post", "/api/v1/tasks", "too-big", "submitter", 413, id="413-body"),
    pytest.param("post", "/api/v1/tasks", {"task": "demo.nope"}, "submitter", 422, id="422-field"),
]


def _send(api, make_client, settings, method, path, body, role, headers=None):
    headers = dict(headers or {})
    if role:
        headers.update(make_client(role))
    kwargs = {"headers": headers}
    if body == "too-big":
        kwargs["json"] = _too_big(settings)
    elif isinstance(body, str):
        kwargs.update(data=body, content_type="application/json")
    elif body is not None:
        kwargs["json"] = body
    return getattr(api, method)(path, **kwargs)


@pytest.mark.parametrize(("method", "path", "body", "role", "status"), ERRORS)
def test_error_is_problem_json_echoing_the_given_request_id(
    api, make_client, settings, assert_problem, method, path, body, role, status
):
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    response = _send(
        api, make_client, settings, method, path, body, role, {"X-Request-ID": request_id}
    )
    problem = assert_problem(response, status)
    assert response.headers["X-Request-ID"] == request_id
    assert problem["request_id"] == request_id


@pytest.mark.parametrize(("method", "path", "body", "role", "status"), ERRORS)
def test_error_without_a_request_id_gets_a_generated_one(
    api, make_client, settings, assert_problem, method, path, body, role, status
):
    response = _send(api, make_client, settings, method, path, body, role)
    problem = assert_problem(response, status)
    assert HEX_ID.match(response.headers["X-Request-ID"])
    assert problem["request_id"] == response.headers["X-Request-ID"]


def test_method_not_allowed_names_the_allowed_methods(api, assert_problem):
    response = api.delete("/healthz")
    assert_problem(response, 405)
    assert "GET" in response.headers["Allow"]


def test_success_echoes_the_given_request_id(api, submitter):
    response = api.get("/api/v1/tasks", headers={**submitter, "X-Request-ID": "abc.DEF_1:2-3"})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "abc.DEF_1:2-3"


def test_success_without_a_request_id_gets_a_new_one_each_time(api):
    first = api.get("/healthz").headers["X-Request-ID"]
    second = api.get("/healthz").headers["X-Request-ID"]
    assert HEX_ID.match(first) and HEX_ID.match(second)
    assert first != second


@pytest.mark.parametrize("given", ["has space", "x" * 101, "semi;colon", "<script>", ""])
def test_unsafe_request_id_is_replaced_not_echoed(api, given):
    response = api.get("/healthz", headers={"X-Request-ID": given})
    assert response.headers["X-Request-ID"] != given
    assert HEX_ID.match(response.headers["X-Request-ID"])


def test_submitted_task_records_the_request_id(api, app, submitter):
    response = api.post(
        "/api/v1/tasks",
        json={"task": "demo.echo", "queue": "low"},
        headers={**submitter, "X-Request-ID": "trace-42"},
    )
    assert response.status_code == 202
    with app.extensions["scheduler"].engine.connect() as conn:
        stored = conn.scalar(select(Task.request_id).where(Task.id == response.json["id"]))
    assert stored == "trace-42"


@pytest.fixture
def failing_app(settings):
    """The real app plus one route that fails, to see how an unexpected error leaves the API."""
    app = create_app(settings)

    def explode():
        raise RuntimeError("password=hunter2 at /srv/secret/module.py line 42")

    app.add_url_rule("/api/v1/explode", "explode", explode)
    yield app
    app.extensions["scheduler"].engine.dispose()


def test_unexpected_error_is_500_problem_without_a_traceback(failing_app, assert_problem):
    response = failing_app.test_client().get("/api/v1/explode", headers={"X-Request-ID": "boom-1"})
    problem = assert_problem(response, 500)
    assert problem["request_id"] == "boom-1"
    text = response.get_data(as_text=True)
    for leak in ("Traceback", "RuntimeError", "hunter2", "/srv/secret", "line 42", ".py"):
        assert leak not in text
    assert set(problem) == {"type", "title", "status", "detail", "request_id"}


# Found by fuzzing: offsets Python parses (up to ±23:59) but PostgreSQL refuses (beyond ±15:59)
# reached the database and came back as 500s.
@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/api/v1/tasks", "created_after"),
        ("/api/v1/tasks", "created_before"),
        ("/api/v1/dlq", "since"),
        ("/api/v1/dlq", "before"),
    ],
)
def test_timestamp_filter_with_a_far_utc_offset_is_not_a_server_error(api, operator, path, param):
    response = api.get(
        path, query_string={param: "1715-08-10T10:12:48.505000-22:17"}, headers=operator
    )
    assert response.status_code == 200, response.get_data()[:300]


@pytest.mark.parametrize("param", ["created_after", "since"])
def test_timestamp_filter_outside_the_utc_calendar_is_the_calendars_edge(api, operator, param):
    """Valid ISO 8601 before year 1 in UTC (the document's date-time allows it): the earliest
    instant, so everything is after it (a 422 before the OpenAPI document said what it takes)."""
    path = "/api/v1/tasks" if param == "created_after" else "/api/v1/dlq"
    response = api.get(path, query_string={param: "0001-01-01T00:00:00+05:00"}, headers=operator)
    assert response.status_code == 200, response.get_data()[:300]
