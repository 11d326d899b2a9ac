"""Priority, delays, cancel and the reconciler, on a real worker, scheduler and Redis."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from scheduler_app.models import Run
from tests.support import Process, worker_argv

pytestmark = pytest.mark.e2e


def _submit(api, headers, **body) -> dict:
    response = api.post("/api/v1/tasks", json=body, headers=headers)
    assert response.status_code == 202, response.json
    return response.json


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _ids_in_redis(client) -> set[str]:
    """Every task id mentioned anywhere in Redis (lists, hashes, strings, sets)."""
    found: set[str] = set()
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "hash":
            values = list(client.hgetall(key).values())
        elif kind == "string":
            values = [client.get(key)]
        elif kind in ("set", "zset"):
            values = list(client.smembers(key)) if kind == "set" else client.zrange(key, 0, -1)
        else:
            values = []
        for value in values:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            found.update(
                part for part in text.split('"') if len(part) == 36 and part.count("-") == 4
            )
    return found


def test_higher_priority_runs_first_on_a_busy_queue(
    api, submitter, process_env, logdir, wait_status
):
    """Ten tasks wait on an idle queue; one worker process then drains them, highest first.

    Negative control (run once): with ``priority_steps`` collapsed to the Celery default
    ``[0, 3, 6, 9]`` and prefetch 4, the start order no longer follows the priorities.
    """
    priorities = [3, 9, 0, 5, 7, 1, 8, 2, 6, 4]
    tasks = [
        _submit(
            api, submitter, task="demo.sleep", kwargs={"seconds": 0.05}, queue="prio", priority=p
        )
        for p in priorities
    ]
    drainer = Process("prio-worker", worker_argv("prio", 1), process_env, logdir).start()
    try:
        finished = [wait_status(t["id"], submitter, timeout=60) for t in tasks]
    finally:
        drainer.stop()
    order = [t["priority"] for t in sorted(finished, key=lambda t: _ts(t["started_at"]))]
    assert order == sorted(priorities, reverse=True)


def test_short_delay_runs_on_time_and_never_early(api, submitter, worker, scheduler, wait_status):
    submitted = [
        _submit(api, submitter, task="demo.echo", delay=delay) for delay in (2, 7)
    ]  # 2 s rides an ETA in Redis; 7 s is past the look-ahead and waits in Postgres
    for task in submitted:
        done = wait_status(task["id"], submitter, timeout=30)
        lateness = (_ts(done["started_at"]) - _ts(done["run_at"])).total_seconds()
        assert 0 <= lateness < 0.5, lateness


def test_long_delay_leaves_nothing_in_redis_and_runs_when_its_time_comes(stack):
    """On a platform of its own: with the session's worker, after other files' tests, the
    released task sometimes did not run within 60 s under the parallel suite (not explained;
    see the closing note of 2026-12-02)."""
    from scheduler_app.services.tasks.promoter import promote_due
    from tests.support import wait_until

    stack.worker("default", 2)
    api = stack.app.test_client()
    client, secret = stack.ext.clients.create("long-delay", "submitter")
    token = api.post(
        "/api/v1/auth/token", json={"client_id": client.client_id, "client_secret": secret}
    ).json["access_token"]
    submitter = {"Authorization": f"Bearer {token}"}
    task = _submit(api, submitter, task="demo.echo", args=["later"], delay=3600)
    assert task["status"] == "scheduled"
    assert task["id"] not in _ids_in_redis(stack.redis.client())

    sessions = stack.ext.tasks.sessions
    # Still an hour early: nothing is released.
    promote_due(sessions, stack.ext.dispatcher, stack.settings)
    assert api.get(f"/api/v1/tasks/{task['id']}", headers=submitter).json["status"] == "scheduled"
    # The scheduler's clock moves an hour on: the task is released and runs.
    released = promote_due(
        sessions,
        stack.ext.dispatcher,
        stack.settings,
        now=_ts(task["run_at"]) + timedelta(seconds=0.1),
    )
    assert released >= 1

    def finished():
        body = api.get(f"/api/v1/tasks/{task['id']}", headers=submitter).json
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    done = wait_until(finished, 30, 0.05, message="the released task to finish")
    assert done["status"] == "succeeded"
    assert done["result"] == {"args": ["later"], "kwargs": {}}


def test_cancelled_before_its_time_never_runs(app, api, submitter, worker, scheduler, wait_status):
    task = _submit(api, submitter, task="demo.echo", delay=1.0)
    response = api.post(f"/api/v1/tasks/{task['id']}/cancel", headers=submitter)
    assert response.status_code == 200
    assert response.json["status"] == "cancelled"
    time.sleep(2.5)  # past its due time: the message reached the worker and was refused
    after = api.get(f"/api/v1/tasks/{task['id']}", headers=submitter).json
    assert after["status"] == "cancelled"
    assert after["attempts"] == 0 and after["started_at"] is None
    with app.extensions["scheduler"].tasks.sessions() as session:
        assert session.scalars(select(Run).where(Run.task_id == uuid.UUID(task["id"]))).all() == []
    assert api.post(f"/api/v1/tasks/{task['id']}/cancel", headers=submitter).status_code == 409


def test_reconciler_republishes_a_task_whose_message_redis_lost(
    api, submitter, redis_server, process_env, logdir, scheduler, wait_status
):
    """FLUSHALL between commit and run: the ledger still has the task, so it still runs once.

    Negative control (run once): with the scheduler fixture removed (no reconciler), the task
    stays ``queued`` forever and this test times out.
    """
    task = _submit(api, submitter, task="demo.echo", args=["survivor"], queue="prio")
    client = redis_server.client()
    assert task["id"] in _ids_in_redis(client)
    client.flushall()
    assert task["id"] not in _ids_in_redis(client)

    drainer = Process("prio-worker", worker_argv("prio", 1), process_env, logdir).start()
    try:
        done = wait_status(task["id"], submitter, timeout=45)
    finally:
        drainer.stop()
    assert done["status"] == "succeeded"
    assert done["attempts"] == 1
    events = api.get(f"/api/v1/tasks/{task['id']}/events", headers=submitter).json
    assert any("re-published by the reconciler" in (e["detail"] or "") for e in events)
