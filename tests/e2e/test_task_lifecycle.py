"""A client submits through the API; a real worker process runs it; the ledger tells the story."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


def test_echo_task_succeeds_with_its_result(api, submitter, worker, wait_status):
    response = api.post(
        "/api/v1/tasks",
        json={"task": "demo.echo", "args": [1, "x"], "kwargs": {"a": {"b": 2}}},
        headers=submitter,
    )
    assert response.status_code == 202
    assert response.headers["Location"] == f"/api/v1/tasks/{response.json['id']}"
    task = wait_status(response.json["id"], submitter)
    assert task["status"] == "succeeded"
    assert task["result"] == {"args": [1, "x"], "kwargs": {"a": {"b": 2}}}
    assert task["attempts"] == 1
    assert task["started_at"] and task["finished_at"]


def test_flaky_task_succeeds_on_third_attempt_and_timeline_shows_each(
    api, submitter, worker, wait_status
):
    response = api.post(
        "/api/v1/tasks",
        json={
            "task": "demo.flaky",
            "kwargs": {"failures": 2},
            "retry": {"max_retries": 3, "backoff": 0.1, "jitter": False},
        },
        headers=submitter,
    )
    task = wait_status(response.json["id"], submitter)
    assert task["status"] == "succeeded"
    assert task["result"] == 3
    assert task["attempts"] == 3
    events = api.get(f"/api/v1/tasks/{task['id']}/events", headers=submitter).json
    assert [(e["status"], e["attempt"]) for e in events] == [
        ("queued", 0),
        ("running", 1),
        ("retrying", 1),
        ("running", 2),
        ("retrying", 2),
        ("running", 3),
        ("succeeded", 3),
    ]
    assert all(e["worker"] for e in events if e["status"] == "running")


def test_failing_task_ends_failed_after_its_retries(api, submitter, worker, wait_status):
    response = api.post(
        "/api/v1/tasks",
        json={
            "task": "demo.fail",
            "kwargs": {"message": "boom"},
            "retry": {"max_retries": 1, "backoff": 0.05, "jitter": False},
        },
        headers=submitter,
    )
    task = wait_status(response.json["id"], submitter)
    assert task["status"] == "failed"
    assert task["attempts"] == 2
    assert task["error"] == {"type": "DemoFailure", "message": "boom"}


def test_short_delay_is_scheduled_until_due_then_runs(
    api, submitter, worker, scheduler, wait_status
):
    """A delay within the look-ahead rides a broker ETA, and the task says ``scheduled`` until
    it is due (in GET and in ``?status=scheduled``); it showed ``queued`` before the fix."""
    response = api.post("/api/v1/tasks", json={"task": "demo.echo", "delay": 2}, headers=submitter)
    assert response.status_code == 202, response.json
    task = response.json
    assert task["status"] == "scheduled"
    assert api.get(f"/api/v1/tasks/{task['id']}", headers=submitter).json["status"] == "scheduled"
    listed = api.get("/api/v1/tasks?status=scheduled&limit=1000", headers=submitter).json
    assert task["id"] in [t["id"] for t in listed["items"]]
    queued = api.get("/api/v1/tasks?status=queued&limit=1000", headers=submitter).json
    assert task["id"] not in [t["id"] for t in queued["items"]]
    done = wait_status(task["id"], submitter)
    assert done["status"] == "succeeded"
    assert done["started_at"] >= done["run_at"]
    events = api.get(f"/api/v1/tasks/{task['id']}/events", headers=submitter).json
    statuses = [e["status"] for e in events]
    assert statuses[0] == "scheduled" and statuses[-2:] == ["running", "succeeded"]
