"""Hostile and careless input: every answer is a clear 4xx problem+json, never a 500.

Negative control: ``HARDENING_NEGATIVE_CONTROL=1`` removes each protection these tests cover (the
``unprotected`` fixture), and the tests then fail (500s, or the wrong answer).
"""

from __future__ import annotations

import base64
import json
import os
import uuid

import pytest

from scheduler_app import limits
from scheduler_app.api import fields as api_fields
from scheduler_app.api import jsonio
from scheduler_app.services.tasks import service as task_service

TASKS = "/api/v1/tasks"
NEGATIVE_CONTROL = bool(os.environ.get("HARDENING_NEGATIVE_CONTROL"))


@pytest.fixture
def unprotected(monkeypatch):
    """Under the negative control, undo a protection: ``unprotected(obj, name, value)``."""

    def undo(target, name, value):
        if NEGATIVE_CONTROL:
            monkeypatch.setattr(target, name, value)

    return undo


def _post_raw(api, headers, text: str, path: str = TASKS, **extra):
    return api.post(
        path, data=text, headers={**headers, "Content-Type": "application/json", **extra}
    )


def _problem(response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/problem+json"
    return response.json


LONE = "\ud800"  # a lone surrogate: valid JSON (json.dumps writes it as an escape), not Unicode


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task": "demo.echo", "args": [LONE]}, "args"),
        ({"task": "demo.echo", "kwargs": {LONE: 1}}, "kwargs"),
        ({"task": "demo.echo", "kwargs": {"a": {"b": ["x" + LONE]}}}, "kwargs"),
        ({"task": "demo.echo", "tags": [LONE]}, "tags.0"),
        ({"task": "demo.echo", "idempotency_key": "k" + LONE}, "idempotency_key"),
        ({"task": "demo.echo", "queue": LONE}, "queue"),
        ({"task": "demo." + LONE}, "task"),
    ],
)
def test_lone_surrogates_are_a_422_naming_the_field(api, submitter, unprotected, body, field):
    unprotected(api_fields, "encodable", lambda text: True)
    problem = _problem(_post_raw(api, submitter, json.dumps(body)), 422)
    assert field in problem["errors"], problem
    assert "surrogate" in " ".join(problem["errors"][field])


def test_lone_surrogate_in_a_batch_names_the_task(api, submitter, unprotected):
    unprotected(api_fields, "encodable", lambda text: True)
    text = json.dumps({"tasks": [{"task": "demo.echo"}, {"task": "demo.echo", "args": [LONE]}]})
    problem = _problem(_post_raw(api, submitter, text, TASKS + "/batch"), 422)
    assert "tasks.1.args" in problem["errors"], problem


def test_an_integer_past_the_digit_limit_is_a_422_stating_the_limit(api, submitter, unprotected):
    unprotected(jsonio, "_bounded_int", int)
    text = '{"task": "demo.echo", "args": [' + "9" * 5000 + "]}"
    problem = _problem(_post_raw(api, submitter, text), 422)
    assert str(limits.INT_DIGITS_MAX) in " ".join(problem["errors"]["args"])


def test_an_integer_at_the_digit_limit_is_accepted(api, submitter):
    text = '{"task": "demo.echo", "args": [' + "9" * limits.INT_DIGITS_MAX + "]}"
    response = _post_raw(api, submitter, text)
    assert response.status_code == 202, response.json
    assert response.json["args"] == [int("9" * limits.INT_DIGITS_MAX)]


def _old_cursor(at: str) -> str:
    """A cursor of the earlier format (base64 of "time|id"), which carried any UTC offset."""
    raw = f"{at}|{uuid.UUID(int=0xBAB4D4B5)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("path", [TASKS, "/api/v1/dlq"])
@pytest.mark.parametrize(
    "cursor",
    [
        _old_cursor(
            "2026-01-01T00:00:00+23:30"
        ),  # PostgreSQL refuses offsets past ±15:59: was a 500
        _old_cursor("2026-01-01T00:00:00"),
        "not a cursor",
        "1_" + "0" * 31,
        "1_" + "0" * 31 + "G",
    ],
)
def test_a_cursor_that_is_not_ours_is_a_422(api, make_client, path, cursor):
    response = api.get(path, query_string={"cursor": cursor}, headers=make_client("operator"))
    assert "cursor" in _problem(response, 422)["errors"]


@pytest.mark.parametrize("path", [TASKS, "/api/v1/dlq"])
@pytest.mark.parametrize(
    "cursor",
    [
        "0_" + "0" * 32,
        "9" * 17 + "_" + "f" * 32,
        "1764614400000000_510e4e07af0b4b178553b34fac10b5c0",
    ],
)
def test_every_cursor_of_the_documented_pattern_is_a_position(api, make_client, path, cursor):
    """The document says which cursors the API takes; each of them names a position."""
    response = api.get(path, query_string={"cursor": cursor}, headers=make_client("operator"))
    assert response.status_code == 200, response.json


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("text/plain", '{"task": "demo.echo"}'),
        ("application/x-www-form-urlencoded", "task=demo.echo"),
        (
            "multipart/form-data; boundary=xyz",
            '--xyz\r\nContent-Disposition: form-data; name="task"\r\n\r\ndemo.echo\r\n--xyz--\r\n',
        ),
    ],
)
def test_a_body_that_is_not_json_is_a_415(api, submitter, content_type, data):
    response = api.post(TASKS, data=data, headers={**submitter, "Content-Type": content_type})
    problem = _problem(response, 415)
    assert "application/json" in problem["detail"]


def test_a_bodiless_post_needs_no_content_type(api, submitter):
    task = api.post(TASKS, json={"task": "demo.echo", "queue": "low"}, headers=submitter).json
    response = api.post(f"{TASKS}/{task['id']}/cancel", headers=submitter)
    assert response.status_code == 200, response.json


def test_batch_with_an_idempotency_key_is_idempotent_as_a_whole(api, submitter):
    key = f"batch-{uuid.uuid4().hex}"
    batch = {"tasks": [{"task": "demo.echo", "queue": "low", "args": [n]} for n in range(3)]}
    first = api.post(TASKS + "/batch", json=batch, headers={**submitter, "Idempotency-Key": key})
    assert first.status_code == 202, first.json
    again = api.post(TASKS + "/batch", json=batch, headers={**submitter, "Idempotency-Key": key})
    assert again.status_code == 200, again.json
    assert again.headers["Idempotent-Replayed"] == "true"
    assert [t["id"] for t in again.json["items"]] == [t["id"] for t in first.json["items"]]
    listed = api.get(TASKS, query_string={"limit": 1000}, headers=submitter).json["items"]
    assert sum(t["id"] in {i["id"] for i in first.json["items"]} for t in listed) == 3

    other = {"tasks": batch["tasks"][:2]}
    conflict = api.post(TASKS + "/batch", json=other, headers={**submitter, "Idempotency-Key": key})
    _problem(conflict, 409)
    both = {"tasks": [{"task": "demo.echo", "idempotency_key": "mine"}]}
    refused = api.post(TASKS + "/batch", json=both, headers={**submitter, "Idempotency-Key": "k2"})
    assert "Idempotency-Key" in _problem(refused, 422)["errors"]


def test_cancel_losing_a_race_names_the_status_the_task_really_has(
    api, submitter, app, monkeypatch, unprotected
):
    """The task succeeds between the cancel's read and its transition: the 409 must say
    ``succeeded``, not the ``queued`` the cancel had read."""
    from sqlalchemy.orm import Session

    from scheduler_app.models import Task
    from scheduler_app.services.ledger.transitions import transition
    from scheduler_app.services.ledger.unit import unit_of_work
    from scheduler_app.states import TaskStatus

    sessions = app.extensions["scheduler"].tasks.sessions
    task = api.post(TASKS, json={"task": "demo.echo", "queue": "low"}, headers=submitter).json
    seen = task_service.TaskService._visible

    def visible_then_finished(self, session, principal, task_id):
        found = seen(self, session, principal, task_id)
        with unit_of_work(sessions) as other:  # a worker's claim and success, meanwhile
            transition(other, task_id, TaskStatus.RUNNING, values={"attempts": 1})
            transition(other, task_id, TaskStatus.SUCCEEDED)
        return found

    monkeypatch.setattr(task_service.TaskService, "_visible", visible_then_finished)
    unprotected(Session, "refresh", lambda self, obj: None)
    response = api.post(f"{TASKS}/{task['id']}/cancel", headers=submitter)
    assert "succeeded" in _problem(response, 409)["detail"]
    with sessions() as session:
        assert session.get(Task, uuid.UUID(task["id"])).status == "succeeded"


def test_a_page_stops_before_its_items_pass_the_byte_limit(app, make_client):
    """1000 tasks of 1 MiB would be one 1 GB response: a page is bounded in bytes too."""
    from scheduler_app.app import create_app

    settings = app.extensions["scheduler"].settings
    small = create_app(settings.__class__(**{**settings.as_dict(), "max_page_bytes": 5000}))
    client = small.test_client()
    headers = make_client("submitter")
    ids = [
        client.post(
            TASKS, json={"task": "demo.echo", "queue": "low", "args": ["x" * 2000]}, headers=headers
        ).json["id"]
        for _ in range(5)
    ]
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = client.get(TASKS, query_string=query, headers=headers).json
        assert 1 <= len(page["items"]) <= 2
        assert len(json.dumps(page["items"])) < 5000 + 2500
        seen += [t["id"] for t in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(ids) and pages >= 3
    small.extensions["scheduler"].engine.dispose()


def test_batches_are_held_to_max_batch(app, make_client):
    from scheduler_app.app import create_app

    settings = app.extensions["scheduler"].settings
    small = create_app(settings.__class__(**{**settings.as_dict(), "max_batch": 2}))
    batch = {"tasks": [{"task": "demo.echo", "queue": "low"}] * 3}
    response = small.test_client().post(TASKS + "/batch", json=batch, headers=make_client())
    assert "at most 2" in " ".join(_problem(response, 422)["errors"]["tasks"])
    small.extensions["scheduler"].engine.dispose()
