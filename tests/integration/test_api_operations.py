"""/api/v1/workers, /api/v1/queues and /tasks/{id}/explain on real Postgres and Redis.

No worker process here (tests/e2e/test_operations.py runs real ones): worker instances are
registered with the registry the workers use, and queue "low" is consumed by no worker of the
session. Every pause a test makes is undone by the ``undo_controls`` fixture.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import delete, text

from scheduler_app.models import Pause, WorkerSetting
from scheduler_app.services.workers.registry import WorkerRegistry
from tests.support import metric_series
from tests.workflow_support import node
from tests.workflow_support import submit as submit_workflow


@pytest.fixture(autouse=True)
def undo_controls(app) -> Iterator[None]:
    yield
    ext = app.extensions["scheduler"]
    with ext.tasks.sessions() as session:
        paused = session.execute(text("SELECT scope, name FROM pauses")).all()
    for row in paused:
        if row.scope == "queue":
            ext.controls.resume_queue(row.name)
        else:
            ext.controls.resume_worker(row.name)
    with ext.tasks.sessions.begin() as session:
        session.execute(delete(Pause))
        session.execute(delete(WorkerSetting))


@pytest.fixture
def registered(app) -> Iterator:
    """Register a live worker instance of a new name consuming ``queues``; its name. Stopped
    (offline) after the test, so that queue "low" has no online worker in the next one."""
    registry = WorkerRegistry(app.extensions["scheduler"].tasks.sessions)
    instances: list[uuid.UUID] = []

    def make(*queues: str, concurrency: int = 2) -> str:
        name = f"w{uuid.uuid4().hex[:6]}@test"
        instances.append(uuid.uuid4())
        registry.register(instances[-1], name, 1, list(queues), concurrency)
        return name

    yield make
    for instance in instances:
        registry.stopped(instance)


def explain(api, headers, task_id: str) -> dict:
    response = api.get(f"/api/v1/tasks/{task_id}/explain", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def codes(explained: dict) -> list[str]:
    return [r["code"] for r in explained["reasons"]]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/workers"),
        ("post", "/api/v1/workers/x@y/pause"),
        ("post", "/api/v1/workers/x@y/resume"),
        ("get", "/api/v1/queues"),
        ("post", "/api/v1/queues/low/pause"),
        ("post", "/api/v1/queues/low/resume"),
    ],
)
def test_workers_and_queues_need_the_operator_role(api, submitter, assert_problem, method, path):
    assert_problem(getattr(api, method)(path, headers=submitter), 403)
    assert_problem(getattr(api, method)(path), 401)


def test_scale_needs_the_operator_role(api, submitter, assert_problem, registered):
    name = registered("low")
    response = api.post(f"/api/v1/workers/{name}/scale", json={"concurrency": 3}, headers=submitter)
    assert_problem(response, 403)


def test_unknown_worker_or_queue_is_404(api, operator, assert_problem):
    for path in ("pause", "resume"):
        assert_problem(api.post(f"/api/v1/workers/nobody@nowhere/{path}", headers=operator), 404)
        assert_problem(api.post(f"/api/v1/queues/no-such-queue/{path}", headers=operator), 404)
    response = api.post(
        "/api/v1/workers/nobody@nowhere/scale", json={"concurrency": 2}, headers=operator
    )
    assert_problem(response, 404)


@pytest.mark.parametrize("concurrency", [0, -1, 257, 1.5, "2", None, True])
def test_scale_refuses_a_concurrency_out_of_range(
    api, operator, assert_problem, registered, concurrency
):
    name = registered("low")
    response = api.post(
        f"/api/v1/workers/{name}/scale", json={"concurrency": concurrency}, headers=operator
    )
    assert_problem(response, 422, "concurrency")


def test_workers_list_heartbeats_with_stored_pause_and_size(api, operator, registered, app):
    name = registered("low", "high", concurrency=3)
    paused = api.post(f"/api/v1/workers/{name}/pause", headers=operator)
    assert paused.status_code == 200, paused.get_json()
    assert paused.json["status"] == "paused" and paused.json["paused_by"]
    scaled = api.post(f"/api/v1/workers/{name}/scale", json={"concurrency": 5}, headers=operator)
    assert scaled.status_code == 200 and scaled.json["concurrency_setting"] == 5
    items = {w["name"]: w for w in api.get("/api/v1/workers", headers=operator).json["items"]}
    worker = items[name]
    assert worker["status"] == "paused"
    assert worker["queues"] == ["low", "high"]
    assert worker["concurrency"] == 3 and worker["concurrency_setting"] == 5
    assert worker["active"] == 0 and worker["processed"] == 0
    assert worker["started_at"] and worker["last_heartbeat"]
    resumed = api.post(f"/api/v1/workers/{name}/resume", headers=operator)
    assert resumed.json["status"] == "online" and resumed.json["paused_at"] is None
    # a stopped instance is offline
    registry = WorkerRegistry(app.extensions["scheduler"].tasks.sessions)
    other = registered("low")
    with app.extensions["scheduler"].tasks.sessions() as session:
        instance = session.execute(
            text("SELECT id FROM worker_instances WHERE name = :n"), {"n": other}
        ).scalar()
    registry.stopped(instance)
    items = {w["name"]: w for w in api.get("/api/v1/workers", headers=operator).json["items"]}
    assert items[other]["status"] == "offline"


def test_queues_count_the_ledger_and_pauses_are_stored(api, operator, submitter, submit):
    before = {q["name"]: q for q in api.get("/api/v1/queues", headers=operator).json["items"]}
    assert set(before) >= {"default", "high", "low"}
    submit(submitter)
    submit(submitter, delay=3600)
    paused = api.post("/api/v1/queues/low/pause", headers=operator)
    assert paused.status_code == 200
    assert paused.json["paused"] is True and paused.json["paused_by"]
    # submissions are still accepted while paused
    submit(submitter)
    low = {q["name"]: q for q in api.get("/api/v1/queues", headers=operator).json["items"]}["low"]
    assert low["depth"] == before["low"]["depth"] + 2
    assert low["scheduled"] == before["low"]["scheduled"] + 1
    assert low["paused"] is True and low["oldest_age_seconds"] >= 0
    again = api.post("/api/v1/queues/low/pause", headers=operator).json
    assert again["paused_at"] == paused.json["paused_at"]  # pausing twice keeps the first
    resumed = api.post("/api/v1/queues/low/resume", headers=operator)
    assert resumed.status_code == 200 and resumed.json["paused"] is False


def test_explain_scheduled_paused_and_no_worker(api, operator, submitter, submit):
    task = submit(submitter, delay=3600)
    api.post("/api/v1/queues/low/pause", headers=operator)
    explained = explain(api, submitter, task["id"])
    assert explained["status"] == "scheduled"
    assert codes(explained) == ["scheduled", "queue_paused", "no_worker"]
    scheduled, paused, _ = explained["reasons"]
    assert scheduled["until"] == task["run_at"]
    assert paused["paused_by"] and paused["since"]


def test_explain_all_workers_of_the_queue_paused(api, operator, submitter, submit, registered):
    name = registered("low")
    task = submit(submitter)
    assert codes(explain(api, submitter, task["id"])) == ["queued"]
    api.post(f"/api/v1/workers/{name}/pause", headers=operator)
    explained = explain(api, submitter, task["id"])
    assert codes(explained) == ["workers_paused"]
    assert name in explained["reasons"][0]["workers"]


def test_explain_waiting_for_parents_names_them(api, submitter):
    wf = submit_workflow(
        api,
        submitter,
        [
            node("a", "demo.echo", queue="low"),
            node("b", "demo.echo", queue="low"),
            node("c", "demo.sum", "a", "b", queue="low"),
        ],
    )
    explained = explain(api, submitter, wf["nodes"]["c"]["task_id"])
    assert explained["status"] == "pending"
    [reason] = explained["reasons"]
    assert reason["code"] == "waiting_for_parents"
    assert [(p["node_id"], p["task_id"]) for p in reason["parents"]] == [
        ("a", wf["nodes"]["a"]["task_id"]),
        ("b", wf["nodes"]["b"]["task_id"]),
    ]


def test_explain_a_finished_task_says_so(api, submitter, submit):
    task = submit(submitter)
    api.post(f"/api/v1/tasks/{task['id']}/cancel", headers=submitter)
    explained = explain(api, submitter, task["id"])
    assert explained["status"] == "cancelled"
    [reason] = explained["reasons"]
    assert reason["code"] == "finished" and reason["status"] == "cancelled"
    assert reason["finished_at"]


def test_explain_is_owner_scoped(api, submitter, other_submitter, operator, submit, assert_problem):
    task = submit(submitter)
    assert_problem(api.get(f"/api/v1/tasks/{task['id']}/explain", headers=other_submitter), 404)
    assert_problem(api.get(f"/api/v1/tasks/{uuid.uuid4()}/explain", headers=submitter), 404)
    assert explain(api, operator, task["id"])["status"] == "queued"


def test_pauses_show_in_the_metrics(api, operator, registered):
    assert metric_series(api)['scheduler_queue_paused{queue="low"}'] == 0.0
    name = registered("low")
    api.post("/api/v1/queues/low/pause", headers=operator)
    api.post(f"/api/v1/workers/{name}/pause", headers=operator)
    series = metric_series(api)
    assert series['scheduler_queue_paused{queue="low"}'] == 1.0
    assert series['scheduler_workers{status="paused"}'] >= 1.0
