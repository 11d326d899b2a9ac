"""Stored pauses, scaling and explain with real worker processes.

Negative control: ``PAUSE_CLAIM_NEGATIVE_CONTROL=1`` prepares the workers' claim without the
pause check (tests/pause_control.py); the pause tests must then fail, a task slipping through.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from scheduler_app.services.broker.layout import queue_keys
from tests.e2e.test_failures import Client
from tests.support import TEST_TASK_MODULES, Stack, wait_until

pytestmark = pytest.mark.e2e

MODULES = f"{TEST_TASK_MODULES},tests.pause_control"
QUIET = 2.0  # seconds a held task is watched for not running
SHARED = f"shared-{uuid.uuid4().hex[:6]}@test"


@pytest.fixture(scope="module")
def ops(tmp_path_factory) -> Iterator[Stack]:
    # Heartbeats every second: the self-check of a missed broadcast waits that long.
    platform = Stack(
        tmp_path_factory.mktemp("ops"),
        tmp_path_factory.mktemp("ops-logs"),
        heartbeat_interval=1.0,
        worker_timeout=10.0,
    )
    platform.scheduler()
    yield platform
    platform.close()


@pytest.fixture(scope="module")
def shared(ops) -> str:
    """A worker of the default queue for the tests that need no worker of their own."""
    ops.worker("default", 2, hostname=SHARED, SCHEDULER_TASK_MODULES=MODULES)
    return SHARED


@pytest.fixture
def client(ops) -> Iterator[Client]:
    api = Client(ops)
    yield api
    with ops.ext.tasks.sessions() as session:
        paused = session.execute(text("SELECT scope, name FROM pauses")).all()
    for row in paused:
        if row.scope == "queue":
            ops.ext.controls.resume_queue(row.name)
        else:
            ops.ext.controls.resume_worker(row.name)


@pytest.fixture
def workers(ops) -> Iterator[list]:
    """Start workers with the negative-control module loaded; stopped after the test."""
    started: list = []

    def start(queues: str = "default", concurrency: int = 2, hostname: str | None = None):
        proc = ops.worker(queues, concurrency, hostname=hostname, SCHEDULER_TASK_MODULES=MODULES)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop(timeout=10)


def post(client: Client, path: str, **body) -> dict:
    response = client.http.post(path, json=body or None, headers=client.headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def statuses(client: Client, ids: list[str]) -> list[str]:
    return [client.get(i)["status"] for i in ids]


def never_started(ops: Stack, ids: list[str]) -> bool:
    with ops.ext.tasks.sessions() as session:
        started = session.execute(
            text("SELECT count(*) FROM runs WHERE task_id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": ids},
        ).scalar()
    return started == 0


def events(ops: Stack, task_id: str) -> list[str]:
    with ops.ext.tasks.sessions() as session:
        return list(
            session.execute(
                text("SELECT coalesce(detail, status) FROM task_events WHERE task_id = :id"),
                {"id": task_id},
            ).scalars()
        )


def submit_echoes(client: Client, queue: str, count: int) -> list[str]:
    bodies = [{"task": "demo.echo", "args": [i], "queue": queue} for i in range(count)]
    return [t["id"] for t in client.batch(bodies)]


def test_a_paused_queue_holds_its_work_and_releases_it_on_resume(ops, client, shared):
    paused = post(client, "/api/v1/queues/default/pause")
    assert paused["paused"] is True
    ids = submit_echoes(client, "default", 3)  # accepted while paused
    # a short delay rides a broker ETA: refused when due, it is held as scheduled
    delayed = client.submit(task="demo.echo", delay=0.5)["id"]
    time.sleep(QUIET)
    assert statuses(client, ids) == ["queued"] * 3 and never_started(ops, [*ids, delayed])
    explained = client.http.get(f"/api/v1/tasks/{ids[0]}/explain", headers=client.headers).json
    assert "queue_paused" in [r["code"] for r in explained["reasons"]]
    # the reconciler (every second here) did not publish them again and again meanwhile
    assert not [e for e in events(ops, ids[0]) if "re-published" in e]
    post(client, "/api/v1/queues/default/resume")
    assert [t["status"] for t in client.wait_all([*ids, delayed], 30)] == ["succeeded"] * 4


def test_a_pause_no_worker_heard_of_still_holds_every_task(ops, client, shared):
    """The broadcast is lost (the pause is only written): the worker keeps fetching, and the
    claim refuses each task. Negative control: PAUSE_CLAIM_NEGATIVE_CONTROL=1."""
    with ops.ext.tasks.sessions.begin() as session:
        session.execute(
            text("INSERT INTO pauses (scope, name, paused_by) VALUES ('queue', 'default', 't')")
        )
    ids = submit_echoes(client, "default", 10)
    time.sleep(QUIET)
    assert never_started(ops, ids), "a task of a paused queue was claimed"
    assert statuses(client, ids) == ["queued"] * 10
    # Each either reached the worker and was refused there (held, without a message), or is
    # still in Redis because the worker's heartbeat caught the stored pause first and stopped
    # fetching: never anywhere else.
    held = {i for i in ids if any("held: queue default is paused" in e for e in events(ops, i))}
    broker = ops.redis.client()
    waiting = sum(broker.llen(key) for key in queue_keys("default"))
    assert len(held) + waiting == len(ids), (held, waiting)
    post(client, "/api/v1/queues/default/resume")
    assert [t["status"] for t in client.wait_all(ids, 30)] == ["succeeded"] * 10


def explain_codes(client: Client, task_id: str) -> list[dict]:
    response = client.http.get(f"/api/v1/tasks/{task_id}/explain", headers=client.headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["reasons"]


def test_stored_pauses_hold_across_a_worker_restart_and_release_on_resume(ops, client, workers):
    """A paused worker takes nothing; a paused queue's tasks wait; both after the worker
    restarts (a worker started after the pauses), until each is resumed."""
    hostname = f"paused-{uuid.uuid4().hex[:6]}@test"
    first = workers("high", 1, hostname=hostname)
    assert post(client, f"/api/v1/workers/{hostname}/pause")["status"] == "paused"
    ids = submit_echoes(client, "high", 3)
    time.sleep(QUIET)
    assert never_started(ops, ids)
    [reason] = explain_codes(client, ids[0])
    assert reason["code"] == "workers_paused" and reason["workers"] == [hostname]
    post(client, "/api/v1/queues/high/pause")
    first.stop(timeout=10)
    workers("high", 1, hostname=hostname)  # the same worker, started after both pauses
    time.sleep(QUIET)
    assert never_started(ops, ids)
    post(client, f"/api/v1/workers/{hostname}/resume")
    time.sleep(QUIET)
    assert never_started(ops, ids) and statuses(client, ids) == ["queued"] * 3
    assert [r["code"] for r in explain_codes(client, ids[0])] == ["queue_paused"]
    post(client, "/api/v1/queues/high/resume")
    assert [t["status"] for t in client.wait_all(ids, 30)] == ["succeeded"] * 3


def _concurrency(client: Client, hostname: str) -> int:
    items = client.http.get("/api/v1/workers", headers=client.headers).json["items"]
    return next(w["concurrency"] for w in items if w["name"] == hostname)


def test_scale_changes_real_parallelism_and_survives_a_restart(ops, client, workers):
    hostname = f"scaled-{uuid.uuid4().hex[:6]}@test"
    first = workers("default", 1, hostname=hostname)
    scaled = post(client, f"/api/v1/workers/{hostname}/scale", concurrency=3)
    assert scaled["concurrency_setting"] == 3
    wait_until(lambda: _concurrency(client, hostname) == 3, 20, 0.2, message="pool of 3")
    bodies = [{"task": "demo.sleep", "kwargs": {"seconds": 2}} for _ in range(3)]
    ids = [t["id"] for t in client.batch(bodies)]
    client.wait_all(ids, 40)
    with ops.ext.tasks.sessions() as session:
        runs = session.execute(
            text(
                "SELECT started_at, finished_at FROM runs WHERE task_id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": ids},
        ).all()
    # all three ran at once: each started before any finished
    assert len(runs) == 3
    assert max(r.started_at for r in runs) < min(r.finished_at for r in runs)
    first.stop(timeout=10)
    workers("default", 1, hostname=hostname)  # started with -c 1: the stored size wins
    wait_until(lambda: _concurrency(client, hostname) == 3, 20, 0.2, message="pool of 3")
    post(client, f"/api/v1/workers/{hostname}/scale", concurrency=1)
    wait_until(lambda: _concurrency(client, hostname) == 1, 20, 0.2, message="pool of 1")


def test_explain_a_running_task_and_a_retry_backoff(ops, client, shared):
    hostname = shared
    sleeping = client.submit(task="demo.sleep", kwargs={"seconds": 3})
    failing = client.submit(task="demo.fail", retry={"max_retries": 1, "backoff": 600})
    client.wait(sleeping["id"], ("running",), 20)
    explained = client.http.get(
        f"/api/v1/tasks/{sleeping['id']}/explain", headers=client.headers
    ).json
    [reason] = explained["reasons"]
    assert reason["code"] == "running" and reason["worker"] == hostname and reason["since"]
    client.wait(failing["id"], ("retrying",), 20)
    explained = client.http.get(
        f"/api/v1/tasks/{failing['id']}/explain", headers=client.headers
    ).json
    assert explained["reasons"][0]["code"] == "retry_backoff"
    assert explained["reasons"][0]["until"] == client.get(failing["id"])["run_at"]
    client.http.post(f"/api/v1/tasks/{failing['id']}/cancel", headers=client.headers)
    finished = client.wait(sleeping["id"], timeout=20)
    explained = client.http.get(
        f"/api/v1/tasks/{sleeping['id']}/explain", headers=client.headers
    ).json
    assert explained["reasons"][0]["code"] == "finished"
    assert explained["reasons"][0]["status"] == finished["status"] == "succeeded"


def test_a_paused_worker_hands_back_what_it_still_fetches(ops, client, shared, workers):
    """Its pause only written (the broadcast lost): the paused worker keeps fetching for a
    moment, refuses each claim and publishes the task again, and the other worker runs it.
    Negative control: PAUSE_CLAIM_NEGATIVE_CONTROL=1 (the paused worker runs some)."""
    hostname = f"handing-{uuid.uuid4().hex[:6]}@test"
    workers("default", 2, hostname=hostname)
    with ops.ext.tasks.sessions.begin() as session:
        session.execute(
            text("INSERT INTO pauses (scope, name, paused_by) VALUES ('worker', :n, 't')"),
            {"n": hostname},
        )
    ids = submit_echoes(client, "default", 10)
    assert [t["status"] for t in client.wait_all(ids, 30)] == ["succeeded"] * 10
    with ops.ext.tasks.sessions() as session:
        ran_on = set(
            session.execute(
                text("SELECT worker FROM runs WHERE task_id = ANY(CAST(:ids AS uuid[]))"),
                {"ids": ids},
            ).scalars()
        )
    assert ran_on == {shared}, "a paused worker claimed a task"
    assert any(
        f"handed back: worker {hostname} is paused" in e for i in ids for e in events(ops, i)
    )
