"""The retry policy's strategy and max_retry_duration at every door: POST /tasks, /tasks/batch,
workflow nodes, schedules (and the tasks they fire); 422 naming the field for bad values."""

from __future__ import annotations

import pytest

from tests.workflow_support import node

POLICY = {"strategy": "linear", "backoff": 2, "backoff_max": 30, "max_retry_duration": 600}
STORED = {"max_retries": 3, "backoff": 2.0, "backoff_max": 30.0, "jitter": True}


def test_submit_keeps_strategy_and_window_and_defaults_to_exponential(api, submitter):
    task = api.post(
        "/api/v1/tasks",
        json={"task": "demo.echo", "queue": "low", "retry": POLICY},
        headers=submitter,
    ).json
    assert task["retry"] == {**STORED, "strategy": "linear", "max_retry_duration": 600.0}
    assert api.get(f"/api/v1/tasks/{task['id']}", headers=submitter).json["retry"] == task["retry"]
    plain = api.post(
        "/api/v1/tasks", json={"task": "demo.echo", "queue": "low"}, headers=submitter
    ).json
    assert plain["retry"]["strategy"] == "exponential"
    assert plain["retry"]["max_retry_duration"] is None


def test_batch_items_carry_their_own_policy(api, submitter):
    items = api.post(
        "/api/v1/tasks/batch",
        json={
            "tasks": [
                {"task": "demo.echo", "queue": "low", "retry": {"strategy": "fixed"}},
                {"task": "demo.echo", "queue": "low", "retry": POLICY},
            ]
        },
        headers=submitter,
    ).json["items"]
    assert [t["retry"]["strategy"] for t in items] == ["fixed", "linear"]
    assert [t["retry"]["max_retry_duration"] for t in items] == [None, 600.0]


def test_workflow_node_tasks_carry_the_nodes_policy(api, submitter):
    nodes = [
        node("a", "demo.echo", queue="low", retry={"strategy": "fixed", "max_retry_duration": 5}),
        node("b", "demo.echo", "a", queue="low"),
    ]
    workflow = api.post(
        "/api/v1/workflows", json={"name": "policy", "nodes": nodes}, headers=submitter
    ).json
    a, b = (
        api.get(f"/api/v1/tasks/{workflow['nodes'][n]['task_id']}", headers=submitter).json
        for n in ("a", "b")
    )
    assert (a["retry"]["strategy"], a["retry"]["max_retry_duration"]) == ("fixed", 5.0)
    assert (b["retry"]["strategy"], b["retry"]["max_retry_duration"]) == ("exponential", None)


def test_schedule_fires_tasks_with_its_policy_and_a_patch_changes_it(api, submitter):
    schedule = api.post(
        "/api/v1/schedules",
        json={"name": "p", "task": "demo.echo", "queue": "low", "interval": 3600, "retry": POLICY},
        headers=submitter,
    ).json
    assert schedule["retry"]["strategy"] == "linear"
    fired = api.post(f"/api/v1/schedules/{schedule['id']}/trigger", headers=submitter).json
    task = api.get(f"/api/v1/tasks/{fired['task_id']}", headers=submitter).json
    assert task["retry"] == {**STORED, "strategy": "linear", "max_retry_duration": 600.0}
    changed = api.patch(
        f"/api/v1/schedules/{schedule['id']}",
        json={"retry": {"strategy": "fixed", "backoff": 1}},
        headers=submitter,
    )
    assert changed.status_code == 200, changed.json
    fired = api.post(f"/api/v1/schedules/{schedule['id']}/trigger", headers=submitter).json
    task = api.get(f"/api/v1/tasks/{fired['task_id']}", headers=submitter).json
    assert (task["retry"]["strategy"], task["retry"]["backoff"]) == ("fixed", 1.0)
    assert task["retry"]["max_retry_duration"] is None


BAD = [
    pytest.param({"strategy": "random"}, "strategy", id="unknown-strategy"),
    pytest.param({"strategy": 1}, "strategy", id="strategy-not-a-string"),
    pytest.param({"max_retry_duration": 0}, "max_retry_duration", id="duration-zero"),
    pytest.param({"max_retry_duration": -5}, "max_retry_duration", id="duration-negative"),
    pytest.param(
        {"max_retry_duration": 366 * 86400 + 1}, "max_retry_duration", id="duration-too-long"
    ),
    pytest.param({"max_retry_duration": "1h"}, "max_retry_duration", id="duration-a-string"),
]


@pytest.mark.parametrize(("retry", "field"), BAD)
def test_bad_policy_is_422_naming_the_field_at_every_door(
    api, submitter, assert_problem, retry, field
):
    task = {"task": "demo.echo", "queue": "low", "retry": retry}
    response = api.post("/api/v1/tasks", json=task, headers=submitter)
    assert_problem(response, 422, f"retry.{field}")
    response = api.post("/api/v1/tasks/batch", json={"tasks": [task]}, headers=submitter)
    assert_problem(response, 422, f"tasks.0.retry.{field}")
    nodes = [node("a", "demo.echo", queue="low", retry=retry)]
    response = api.post("/api/v1/workflows", json={"name": "w", "nodes": nodes}, headers=submitter)
    assert_problem(response, 422, f"nodes.0.retry.{field}")
    schedule = {"name": "s", "task": "demo.echo", "queue": "low", "interval": 60, "retry": retry}
    response = api.post("/api/v1/schedules", json=schedule, headers=submitter)
    assert_problem(response, 422, f"retry.{field}")


def test_the_document_states_the_strategies_and_the_bounds(api):
    spec = api.get("/api/openapi.json").json
    retry = spec["components"]["schemas"]["Retry"]["properties"]
    assert retry["strategy"]["enum"] == ["exponential", "linear", "fixed"]
    assert retry["max_retry_duration"]["exclusiveMinimum"] == 0
    assert retry["max_retry_duration"]["maximum"] == 366 * 86400
