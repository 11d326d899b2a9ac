"""Batches (services/tasks/batching.py) never weaken what one message at a time guarantees.

A worker process that has seen a task type run short takes more messages of the queue with
the one Celery gave it, reads and locks them in one statement and records their successes in
one. With real workers, what must never happen because of that shortcut:

- a transition goes unrecorded, or an attempt runs twice, because several ran in one batch;
- a second message for an attempt of the batch runs it again (the connection's advisory lock
  is re-entrant: the batch must set duplicates apart; control ``batch_dedupe``);
- a pause committed while a batch runs lets through attempts that had not started
  ``claim_after`` after the batch's read (control ``batch_reread``: no such bound);
- an extra that runs long after all is declared lost while it runs, or survives a cancel
  (control ``batch_watch``: no watch of long extras);
- a pool process killed in the middle of a batch loses a task.

Negative controls: ``BATCHING_NEGATIVE_CONTROL=<name> pytest tests/e2e/test_batching.py``
starts the workers with ``SCHEDULER_TEST_REMOVE=<name>``; the test named above for it fails.
The take's own "never in neither place" is tests/integration/test_batch_take.py.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import replace

import psutil
import pytest
from sqlalchemy import func, select

from scheduler_app.models import Run, TaskEvent, WorkerInstance
from scheduler_app.services.tasks.batching import active_key
from scheduler_app.services.tasks.dispatches import dispatch_of
from tests.support import wait_until

pytestmark = pytest.mark.e2e

CONTROL = os.environ.get("BATCHING_NEGATIVE_CONTROL")
WORKER_ENV = {"SCHEDULER_TEST_REMOVE": CONTROL} if CONTROL else {}


@pytest.fixture
def client(stack):
    from tests.e2e.test_failures import Client

    return Client(stack)


def _teach(client, queue: str, count: int = 6) -> None:
    """Run ``count`` short test.count tasks one after the other: the process learns the type
    (it judges by the last four runs; the first, which connects, is slower)."""
    for _ in range(count):
        task = client.submit(task="test.count", kwargs={"key": uuid.uuid4().hex}, queue=queue)
        assert client.wait(task["id"], timeout=20)["status"] == "succeeded"


def _instances(stack) -> list[uuid.UUID]:
    with stack.ext.tasks.sessions() as session:
        return list(session.scalars(select(WorkerInstance.id)))


def _processed_in_batches(stack) -> int:
    """Extras the worker instances ran in batches (the hash their heartbeat reads)."""
    redis = stack.redis.client()
    return sum(int(redis.hget(active_key(i), "processed") or 0) for i in _instances(stack))


def _listed(stack, instance: uuid.UUID) -> list[str]:
    """The long extras a worker's processes list for its heartbeat."""
    fields = stack.redis.client().hgetall(active_key(instance))
    return [v.decode() for k, v in fields.items() if k.startswith(b"pid:")]


def _events(stack, task_id: str) -> list[str]:
    with stack.ext.tasks.sessions() as session:
        return list(
            session.scalars(
                select(TaskEvent.status)
                .where(TaskEvent.task_id == uuid.UUID(task_id))
                .order_by(TaskEvent.at, TaskEvent.id)
            )
        )


# test.count writes its counters in the ledger (a few ms a run): with claim_after 0.5 s and
# batches of 16, a type is short below 31 ms.
LENIENT = {"SCHEDULER_CLAIM_AFTER": "0.5", **WORKER_ENV}


def test_a_drain_runs_in_batches_and_records_every_transition(stack, client):
    stack.worker("prio", 2, **LENIENT)
    _teach(client, "prio", 8)  # both pool processes see the type run short
    key = uuid.uuid4().hex
    tasks = client.batch([{"task": "test.count", "kwargs": {"key": key}, "queue": "prio"}] * 300)
    ids = [t["id"] for t in tasks]
    done = client.wait_all(ids, timeout=60)
    assert {t["status"] for t in done} == {"succeeded"}
    assert {t["attempts"] for t in done} == {1}
    assert client.count("started", key) == 300 and client.count("completed", key) == 300
    assert _processed_in_batches(stack) > 100  # most ran as extras of a batch
    with stack.ext.tasks.sessions() as session:
        uids = [uuid.UUID(i) for i in ids]
        runs = session.execute(
            select(Run.status, func.count()).where(Run.task_id.in_(uids)).group_by(Run.status)
        ).all()
        events = session.execute(
            select(TaskEvent.status, func.count())
            .where(TaskEvent.task_id.in_(uids))
            .group_by(TaskEvent.status)
        ).all()
    assert dict(runs) == {"succeeded": 300}
    assert dict(events) == {"queued": 300, "running": 300, "succeeded": 300}
    timeline = _events(stack, ids[-1])
    assert timeline == ["queued", "running", "succeeded"]


def test_duplicate_messages_in_one_batch_run_the_attempt_once(stack, client):
    stack.worker("prio", 1, **LENIENT)
    _teach(client, "prio")
    keys = [uuid.uuid4().hex for _ in range(4)]
    # waiting (a day away), so that only the messages published below exist, all at once
    tasks = [
        client.submit(task="test.count", kwargs={"key": k}, queue="prio", delay=86400) for k in keys
    ]
    a, b, c, d = (
        replace(dispatch_of(client.stack.ext.tasks.get_any(uuid.UUID(t["id"]))), eta=None)
        for t in tasks
    )
    stack.ext.dispatcher.publish([a, b, a, c, a, d])
    for task in tasks:
        assert client.wait(task["id"], timeout=20)["status"] == "succeeded"
    time.sleep(1.0)  # every message has been taken by now
    assert [client.count("started", k) for k in keys] == [1, 1, 1, 1]
    assert _events(stack, tasks[0]["id"]).count("succeeded") == 1
    assert _processed_in_batches(stack) >= 3


def test_a_pause_during_a_batch_stops_what_has_not_started_within_claim_after(stack, client):
    """claim_after 0.6 s: of eight 0.25 s attempts read at once, the first three start within
    0.6 s of the read; the queue is paused as the first starts; the others wait for resume."""
    stack.worker("prio", 1, SCHEDULER_CLAIM_AFTER="0.6", SCHEDULER_WORKER_BATCH="8", **WORKER_ENV)
    _teach(client, "prio")
    keys = [uuid.uuid4().hex for _ in range(8)]
    tasks = client.batch(
        [
            {"task": "test.count", "kwargs": {"key": k, "seconds": 0.25}, "queue": "prio"}
            for k in keys
        ]
    )
    wait_until(lambda: client.count("started", keys[0]) == 1, 20, 0.01, message="a start")
    response = client.http.post("/api/v1/queues/prio/pause", headers=client.headers)
    assert response.status_code == 200
    assert stack.redis.client().hlen("unacked") >= 5  # a batch: its extras were taken
    time.sleep(2.0)
    started = [client.count("started", k) for k in keys]
    assert sum(started) <= 4, f"{started}: attempts read before the pause started late"
    assert client.http.post("/api/v1/queues/prio/resume", headers=client.headers).status_code == 200
    for task in tasks:
        assert client.wait(task["id"], timeout=30)["status"] == "succeeded"
    assert [client.count("completed", k) for k in keys] == [1] * 8


def test_an_extra_that_runs_long_is_listed_and_a_cancel_ends_it(stack, client):
    stack.scheduler()  # it declares lost what no heartbeat lists (grace 1 s, beats 0.5 s)
    stack.worker("prio", 1, SCHEDULER_CLAIM_AFTER="1", **WORKER_ENV)
    _teach(client, "prio")
    short, long_ = uuid.uuid4().hex, uuid.uuid4().hex
    first, extra = client.batch(
        [
            {"task": "test.count", "kwargs": {"key": short}, "queue": "prio"},
            {"task": "test.count", "kwargs": {"key": long_, "seconds": 60}, "queue": "prio"},
        ]
    )
    assert client.wait(first["id"], timeout=20)["status"] == "succeeded"
    wait_until(lambda: client.count("started", long_) == 1, 20, 0.02, message="the long start")
    # it runs as an extra of the short one's batch: listed for the heartbeat by its process
    [instance] = _instances(stack)
    wait_until(lambda: extra["id"] in _listed(stack, instance), 5, 0.05, message="the extra listed")
    time.sleep(4.0)  # several beats past the grace
    running = client.get(extra["id"])
    assert running["status"] == "running" and running["attempts"] == 1, running
    assert [(r.attempt, r.status) for r in client.runs(extra["id"])] == [(1, "running")]
    response = client.http.post(f"/api/v1/tasks/{extra['id']}/cancel", headers=client.headers)
    assert response.status_code == 200 and response.json["status"] == "cancelled"
    probe = client.submit(task="demo.echo", args=["free"], queue="prio")
    assert client.wait(probe["id"], timeout=20)["status"] == "succeeded"
    assert client.get(extra["id"])["status"] == "cancelled"
    assert client.count("completed", long_) == 0 and client.count("started", long_) == 1


def test_a_pool_process_killed_mid_batch_loses_nothing(stack, client):
    stack.scheduler()
    worker = stack.worker("prio", 1, SCHEDULER_CLAIM_AFTER="2", **WORKER_ENV)
    _teach(client, "prio")
    keys = [uuid.uuid4().hex for _ in range(8)]
    retry = {"max_retries": 3, "backoff": 0.1, "jitter": False}
    tasks = client.batch(
        [
            {
                "task": "test.count",
                "kwargs": {"key": k, "seconds": 0.1},
                "queue": "prio",
                "retry": retry,
            }
            for k in keys
        ]
    )
    wait_until(lambda: client.count("started", keys[2]) == 1, 20, 0.01, message="a third start")
    assert stack.redis.client().hlen("unacked") >= 5  # the batch's extras, taken
    [pool] = psutil.Process(worker.process.pid).children()
    os.kill(pool.pid, signal.SIGKILL)
    for task in tasks:
        assert client.wait(task["id"], timeout=60)["status"] == "succeeded"
    for task, key in zip(tasks, keys, strict=True):
        assert client.count("completed", key) >= 1
        assert _events(stack, task["id"]).count("succeeded") == 1


@pytest.mark.parametrize("kind", ["soft", "hard"])
def test_an_extra_past_its_timeout_is_stopped_and_counted(stack, client, kind):
    """test.count stops at its soft limit; test.stubborn ignores it and its process is ended at
    the hard one: either way the attempt counts as timed out, as a first message's would."""
    task = "test.count" if kind == "soft" else "test.stubborn"
    worker = stack.worker("prio", 1, SCHEDULER_CLAIM_AFTER="1", **WORKER_ENV)
    for _ in range(6):  # the type is learned short
        body = {"task": task, "kwargs": {"key": uuid.uuid4().hex, "seconds": 0}, "queue": "prio"}
        assert client.wait(client.submit(**body)["id"], timeout=20)["status"] == "succeeded"
    key = uuid.uuid4().hex
    first, extra = client.batch(
        [
            {"task": task, "kwargs": {"key": uuid.uuid4().hex, "seconds": 0}, "queue": "prio"},
            {
                "task": task,
                "kwargs": {"key": key, "seconds": 30},
                "queue": "prio",
                "timeout": 1,
                "retry": {"max_retries": 0},
            },
        ]
    )
    assert client.wait(first["id"], timeout=20)["status"] == "succeeded"
    done = client.wait(extra["id"], timeout=20)
    assert done["status"] == "failed" and done["error"]["type"] == "AttemptTimeout", done
    assert client.count("completed", key) == 0
    probe = client.submit(task="demo.echo", args=["free"], queue="prio")
    assert client.wait(probe["id"], timeout=20)["status"] == "succeeded"
    # it ran as the first's extra: a batch that ended (soft), the batch's watch (hard)
    if kind == "soft":
        assert _processed_in_batches(stack) >= 1
    else:
        assert "passed its hard time limit while running in a batch" in worker.log()
