"""POST /api/v1/tasks: acceptance, field validation, body limits and the task representation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

TASKS = "/api/v1/tasks"
TASK_FIELDS = {
    "id",
    "task",
    "args",
    "kwargs",
    "queue",
    "priority",
    "status",
    "attempts",
    "max_retries",
    "run_at",
    "created_at",
    "started_at",
    "finished_at",
    "result",
    "error",
    "owner",
    "workflow_id",
    "schedule_id",
    "replay_of",
    "tags",
}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_submit_is_202_with_location_and_the_stored_task(api, submitter):
    response = api.post(
        TASKS,
        json={
            "task": "demo.echo",
            "args": [1, "two", None],
            "kwargs": {"nested": {"list": [1.5, True]}},
            "queue": "low",
            "priority": 7,
            "tags": ["billing", "nightly"],
            "retry": {"max_retries": 2, "backoff": 0.5, "backoff_max": 10, "jitter": False},
            "timeout": 30,
        },
        headers=submitter,
    )
    assert response.status_code == 202, response.json
    task = response.json
    assert response.headers["Location"] == f"/api/v1/tasks/{task['id']}"
    assert "Idempotent-Replayed" not in response.headers
    assert set(task) >= TASK_FIELDS
    assert task["task"] == "demo.echo"
    assert task["args"] == [1, "two", None]
    assert task["kwargs"] == {"nested": {"list": [1.5, True]}}
    assert (task["queue"], task["priority"], task["status"]) == ("low", 7, "queued")
    assert task["attempts"] == 0
    assert task["max_retries"] == 2
    assert task["tags"] == ["billing", "nightly"]
    assert task["result"] is None and task["error"] is None
    assert task["started_at"] is None and task["finished_at"] is None

    fetched = api.get(response.headers["Location"], headers=submitter)
    assert fetched.status_code == 200
    assert fetched.json == task


@pytest.mark.parametrize(
    "args",
    [
        [2**70, -(2**64), 1.5e10],  # beyond 64-bit ints: the fast encoders step aside
        ["é ü 漢字 \u2028 \U0001f600", {"κλειδί": '\\ " /'}],
        [0.1, -0.0, 1e-300, True, None, [], {}],
    ],
)
def test_json_values_come_back_exactly_as_submitted(api, submitter, args):
    response = api.post(TASKS, json={"task": "demo.echo", "args": args}, headers=submitter)
    assert response.status_code == 202, response.json
    assert response.json["args"] == args
    assert api.get(response.headers["Location"], headers=submitter).json["args"] == args
    batch = api.post(
        f"{TASKS}/batch", json={"tasks": [{"task": "demo.echo", "args": args}]}, headers=submitter
    )
    assert batch.status_code == 202, batch.json
    assert batch.json["items"][0]["args"] == args


def test_submit_defaults_queue_priority_args_and_tags(api, submitter):
    response = api.post(TASKS, json={"task": "demo.echo", "delay": 3600}, headers=submitter)
    assert response.status_code == 202
    task = response.json
    assert (task["queue"], task["priority"]) == ("default", 5)
    assert (task["args"], task["kwargs"], task["tags"]) == ([], {}, [])


def test_delay_makes_the_task_scheduled_for_later(api, submitter):
    before = datetime.now(UTC)
    task = api.post(TASKS, json={"task": "demo.echo", "delay": 3600}, headers=submitter).json
    assert task["status"] == "scheduled"
    run_at = at(task["run_at"])
    assert before + timedelta(seconds=3590) < run_at < before + timedelta(seconds=3700)


def test_run_at_in_the_future_makes_the_task_scheduled_at_that_instant(api, submitter):
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    task = api.post(
        TASKS, json={"task": "demo.echo", "run_at": when.isoformat()}, headers=submitter
    ).json
    assert task["status"] == "scheduled"
    assert at(task["run_at"]) == when


def test_run_at_with_an_offset_postgres_cannot_store_is_kept_as_the_same_instant(api, submitter):
    # Regression: "-21:36" parsed in Python but PostgreSQL refused it, and the API answered 500.
    response = api.post(
        TASKS,
        json={"task": "demo.echo", "run_at": "2086-03-13T12:37:35-21:36"},
        headers=submitter,
    )
    assert response.status_code == 202, response.json
    assert at(response.json["run_at"]) == datetime(2086, 3, 14, 10, 13, 35, tzinfo=UTC)


def test_run_at_without_an_offset_is_taken_as_utc(api, submitter):
    response = api.post(
        TASKS, json={"task": "demo.echo", "run_at": "2090-01-01T00:00:00"}, headers=submitter
    )
    assert response.status_code == 202
    assert at(response.json["run_at"]) == datetime(2090, 1, 1, tzinfo=UTC)


def test_http_request_task_with_a_valid_url_is_accepted(api, submitter):
    response = api.post(
        TASKS,
        json={"task": "http.request", "kwargs": {"url": "https://example.com/hook"}, "delay": 60},
        headers=submitter,
    )
    assert response.status_code == 202, response.json


def test_notify_with_webhook_and_email_is_accepted_and_kept(api, submitter):
    response = api.post(
        TASKS,
        json={
            "task": "demo.echo",
            "queue": "low",
            "notify": {
                "webhook": "http://receiver.local:8080/hook",
                "email": "ops@example.com",
                "on": ["failed"],
            },
        },
        headers=submitter,
    )
    assert response.status_code == 202, response.json


FAR = (datetime.now(UTC) + timedelta(days=1)).isoformat()
PAST = (datetime.now(UTC) - timedelta(days=1)).isoformat()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"task": "demo.nope"}, "task", id="unknown-task-type"),
        pytest.param({"task": ""}, "task", id="empty-task-type"),
        pytest.param({"task": 5}, "task", id="task-not-a-string"),
        pytest.param({"priority": -1}, "priority", id="priority-minus-1"),
        pytest.param({"priority": 10}, "priority", id="priority-10"),
        pytest.param({"priority": "5"}, "priority", id="priority-string"),
        pytest.param({"priority": 5.5}, "priority", id="priority-float"),
        pytest.param({"priority": True}, "priority", id="priority-bool"),
        pytest.param({"priority": None}, "priority", id="priority-null"),
        pytest.param({"delay": 10, "run_at": FAR}, "delay", id="delay-and-run-at"),
        pytest.param({"delay": -1}, "delay", id="negative-delay"),
        pytest.param({"delay": "soon"}, "delay", id="delay-not-a-number"),
        pytest.param({"delay": 400 * 86400}, "delay", id="delay-beyond-a-year"),
        pytest.param({"run_at": "tomorrow"}, "run_at", id="run-at-not-a-date"),
        pytest.param({"queue": "nope"}, "queue", id="unknown-queue"),
        pytest.param({"queue": ""}, "queue", id="empty-queue"),
        pytest.param({"timeout": 0}, "timeout", id="zero-timeout"),
        pytest.param({"args": {"a": 1}}, "args", id="args-not-a-list"),
        pytest.param({"kwargs": [1]}, "kwargs", id="kwargs-not-an-object"),
        pytest.param({"kwargs": {"ctx": 1}}, "kwargs.ctx", id="reserved-ctx-kwarg"),
        pytest.param(
            {"notify": {"webhook": "not a url"}}, "notify.webhook", id="webhook-not-a-url"
        ),
        pytest.param(
            {"notify": {"webhook": "ftp://example.com/x"}}, "notify.webhook", id="webhook-ftp"
        ),
        pytest.param({"notify": {"email": "nobody"}}, "notify.email", id="bad-email"),
        pytest.param({"notify": {}}, "notify.webhook", id="notify-without-target"),
        pytest.param(
            {"notify": {"email": "a@example.com", "on": ["exploded"]}},
            "notify.on.0",
            id="notify-unknown-event",
        ),
        pytest.param({"notify": "yes"}, "notify", id="notify-not-an-object"),
        pytest.param({"bogus": 1}, "bogus", id="unknown-field"),
        pytest.param({"retry": {"max_retries": -1}}, "retry.max_retries", id="retries-negative"),
        pytest.param({"retry": {"max_retries": 101}}, "retry.max_retries", id="retries-101"),
        pytest.param({"retry": {"max_retries": "3"}}, "retry.max_retries", id="retries-string"),
        pytest.param({"retry": {"backoff": -1}}, "retry.backoff", id="backoff-negative"),
        pytest.param({"retry": {"jitter": "maybe"}}, "retry.jitter", id="jitter-not-a-bool"),
        pytest.param({"retry": {"tries": 3}}, "retry.tries", id="retry-unknown-field"),
        pytest.param({"retry": 3}, "retry", id="retry-not-an-object"),
        pytest.param({"tags": [f"t{i}" for i in range(21)]}, "tags", id="too-many-tags"),
        pytest.param({"tags": [""]}, "tags.0", id="empty-tag"),
        pytest.param({"tags": ["x" * 101]}, "tags.0", id="tag-too-long"),
        pytest.param({"tags": "one"}, "tags", id="tags-not-a-list"),
        pytest.param({"task": "demo.echo\u0000"}, "task", id="nul-in-task"),
        pytest.param({"tags": ["a\u0000b"]}, "tags.0", id="nul-in-tag"),
        pytest.param({"args": ["a\u0000b"]}, "args", id="nul-in-args"),
        pytest.param({"args": [{"deep": ["\u0000"]}]}, "args", id="nul-deep-in-args"),
        pytest.param({"kwargs": {"k": "\u0000"}}, "kwargs", id="nul-in-kwargs-value"),
        pytest.param({"kwargs": {"k\u0000": 1}}, "kwargs", id="nul-in-kwargs-key"),
        pytest.param({"idempotency_key": ""}, "idempotency_key", id="empty-idempotency-key"),
        pytest.param(
            {"idempotency_key": "k" * 256}, "idempotency_key", id="idempotency-key-too-long"
        ),
        pytest.param(
            {"task": "http.request", "kwargs": {"url": "not a url"}},
            "kwargs.url",
            id="http-request-bad-url",
        ),
        pytest.param(
            {"task": "http.request", "kwargs": {"url": "https://x.test", "method": "BREW"}},
            "kwargs.method",
            id="http-request-bad-method",
        ),
    ],
)
def test_invalid_field_is_422_naming_the_field(api, submitter, assert_problem, changes, field):
    body = {"task": "demo.echo", "queue": "low", **changes}
    response = api.post(TASKS, json=body, headers=submitter)
    problem = assert_problem(response, 422, field)
    assert problem["title"] == "Validation failed"
    assert all(isinstance(messages, list) for messages in problem["errors"].values())


def test_missing_task_field_is_422_naming_task(api, submitter, assert_problem):
    assert_problem(api.post(TASKS, json={"args": []}, headers=submitter), 422, "task")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"task": "demo.echo", "args": [NaN]}', "args"),
        ('{"task": "demo.echo", "kwargs": {"x": Infinity}}', "kwargs"),
        ('{"task": "demo.echo", "kwargs": {"x": [-Infinity]}}', "kwargs"),
        ('{"task": "demo.echo", "delay": NaN}', "delay"),
        ('{"task": "demo.echo", "priority": NaN}', "priority"),
        ('{"task": "demo.echo", "retry": {"backoff": Infinity}}', "retry.backoff"),
    ],
)
def test_nan_or_infinity_in_json_is_422_naming_the_field(
    api, submitter, assert_problem, raw, field
):
    response = api.post(TASKS, data=raw, content_type="application/json", headers=submitter)
    assert_problem(response, 422, field)


def test_invalid_submission_inserts_nothing(api, make_client, assert_problem):
    headers = make_client("submitter")
    assert_problem(api.post(TASKS, json={"task": "demo.nope"}, headers=headers), 422, "task")
    assert api.get(TASKS, headers=headers).json["items"] == []


@pytest.mark.parametrize(
    "raw",
    ['{"task": "demo.echo"', "{'task': 'demo.echo'}", "task=demo.echo", '{"task": "\\ud800"}x'],
)
def test_malformed_json_is_400(api, submitter, assert_problem, raw):
    response = api.post(TASKS, data=raw, content_type="application/json", headers=submitter)
    body = assert_problem(response, 400)
    assert body["detail"] == "the request body is not valid JSON"


@pytest.mark.parametrize("body", ["[]", '"demo.echo"', "null", "42"])
def test_json_that_is_not_an_object_is_422(api, submitter, assert_problem, body):
    response = api.post(TASKS, data=body, content_type="application/json", headers=submitter)
    assert_problem(response, 422)


def test_body_over_one_mebibyte_is_413(api, submitter, assert_problem, settings):
    big = {"task": "demo.echo", "args": ["x" * settings.max_body_bytes]}
    body = assert_problem(api.post(TASKS, json=big, headers=submitter), 413)
    assert str(settings.max_body_bytes) in body["detail"]


def test_body_just_under_the_limit_is_accepted(api, submitter, settings):
    # The negative control of the 413: a large body within the limit goes through.
    payload = "x" * (settings.max_body_bytes - 200)
    response = api.post(
        TASKS, json={"task": "demo.echo", "queue": "low", "args": [payload]}, headers=submitter
    )
    assert response.status_code == 202, response.json


def test_deeply_nested_args_are_refused_not_crashing(api, submitter):
    raw = '{"task": "demo.echo", "args": ' + "[" * 5000 + "]" * 5000 + "}"
    response = api.post(TASKS, data=raw, content_type="application/json", headers=submitter)
    assert response.status_code in (400, 422)
    assert response.mimetype == "application/problem+json"


def test_null_is_a_valid_json_value_in_args_and_kwargs(api, submitter):
    # Regression: null inside args or kwargs was refused with "Field may not be null".
    response = api.post(
        TASKS,
        json={"task": "demo.echo", "queue": "low", "args": [None], "kwargs": {"k": None}},
        headers=submitter,
    )
    assert response.status_code == 202, response.json
    assert (response.json["args"], response.json["kwargs"]) == ([None], {"k": None})


def test_rules_the_document_cannot_state_are_settled_instead_of_refused(api, submitter):
    """An expires_at already past is accepted (the task fails "Expired" at once, as a task not
    started by its expires_at does), and a backoff_max below backoff is raised to backoff:
    OpenAPI cannot say "later than now" or "not below another field", and the API takes every
    request its document allows."""
    expired = api.post(TASKS, json={"task": "demo.echo", "expires_at": PAST}, headers=submitter)
    assert expired.status_code == 202, expired.json
    assert at(expired.json["expires_at"]) == at(PAST)
    capped = api.post(
        TASKS,
        json={"task": "demo.echo", "retry": {"backoff": 10, "backoff_max": 5}},
        headers=submitter,
    )
    assert capped.status_code == 202, capped.json
    assert capped.json["retry"]["backoff_max"] == 10
    # Valid ISO 8601 before year 1 in UTC: the earliest instant, so due now.
    early = api.post(
        TASKS, json={"task": "demo.echo", "run_at": "0001-01-01T00:00:00+01:00"}, headers=submitter
    )
    assert early.status_code == 202, early.json
    assert early.json["run_at"].startswith("0001-01-01T00:00:00")
