"""The lazy claim (services/tasks/claims.py) never lets an attempt run twice or go uncounted.

A short attempt is read and locked, run, and claimed in the statement that records its outcome.
What must never happen because of that shortcut, each with a real worker:

- two messages for the same attempt (a duplicate, a re-publish) run it at the same time;
- an attempt that kills its worker goes uncounted, so that the task is run again without end;
- a task cancelled while its attempt runs, not yet claimed, is not terminated (prefork).

Negative control: ``LAZY_CLAIM_NEGATIVE_CONTROL=1 pytest tests/e2e/test_lazy_claim.py`` starts
the workers with ``SCHEDULER_TEST_REMOVE=claim_lock,eager_claim``: the read takes no lock on the
attempt and re-published messages are claimed lazily as well. The first two tests then fail
(the task starts several times; the crashing task is run again and again until the test's
deadline).
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest
from sqlalchemy import select

from scheduler_app.models import TaskEvent
from scheduler_app.services.tasks.dispatches import dispatch_of
from tests.support import Process, wait_until, worker_argv

pytestmark = pytest.mark.e2e

NEGATIVE_CONTROL = {"SCHEDULER_TEST_REMOVE": "claim_lock,eager_claim"}
WORKER_ENV = NEGATIVE_CONTROL if os.environ.get("LAZY_CLAIM_NEGATIVE_CONTROL") == "1" else {}


@pytest.fixture
def client(stack):
    from tests.e2e.test_failures import Client

    return Client(stack)


def test_duplicate_messages_of_a_short_attempt_run_it_once(stack, client):
    """Six messages for one 30 ms attempt, four pool processes taking them at once: one runs."""
    key = uuid.uuid4().hex
    task = client.submit(task="test.count", kwargs={"key": key, "seconds": 0.03}, queue="prio")
    dispatch = dispatch_of(client.stack.ext.tasks.get_any(uuid.UUID(task["id"])))
    stack.ext.dispatcher.publish([dispatch] * 5)  # six messages in all
    stack.worker("prio", 4, **WORKER_ENV)
    done = client.wait(task["id"], timeout=30)
    assert done["status"] == "succeeded" and done["attempts"] == 1
    time.sleep(1.0)  # every message has been taken by now (four processes, 30 ms each)
    assert client.count("started", key) == 1
    assert client.count("completed", key) == 1
    runs = client.runs(task["id"])
    assert [(r.attempt, r.status) for r in runs] == [(1, "succeeded")]
    with stack.ext.tasks.sessions() as session:
        statuses = session.scalars(
            select(TaskEvent.status).where(TaskEvent.task_id == uuid.UUID(task["id"]))
        ).all()
    assert statuses.count("running") == 1 and statuses.count("succeeded") == 1


def test_attempt_that_kills_a_solo_worker_before_its_claim_still_counts(stack, client):
    """``-P solo``: the task kills the worker's only process before its attempt is claimed.

    The message stays unacked; the reconciler publishes it again once the worker is overdue,
    and that message is claimed before it runs, so the next crash is an attempt that counts
    (WorkerLostError, retried, then dead-lettered past ``max_retries``).
    """
    stack.scheduler()
    task = client.submit(task="test.crash", retry={"max_retries": 1, "backoff": 0.1})
    deadline = time.monotonic() + 90
    starts = 0
    while client.get(task["id"])["status"] not in ("failed", "succeeded", "cancelled"):
        assert time.monotonic() < deadline, f"still {client.get(task['id'])} after {starts} runs"
        # not stack.worker(): this one may die before it logs that it is ready
        worker = Process(
            "worker",
            worker_argv("default", 1, None, "solo"),
            {**stack.env, **WORKER_ENV},
            stack.logdir,
        ).start()
        stack.processes.append(worker)
        starts += 1
        wait_until(
            lambda w=worker: (
                w.process.poll() is not None
                or client.get(task["id"])["status"] in ("failed", "succeeded")
            ),
            60,
            0.1,
            message="the worker to crash",
        )
        if worker.process.poll() is None:
            worker.signal(signal.SIGTERM)
    done = client.get(task["id"])
    assert done["status"] == "failed" and done["error"]["type"] == "WorkerLostError"
    assert done["attempts"] == 2
    # two counted attempts; each may have cost one uncounted crash before its claim
    assert starts <= 4


def test_cancel_terminates_an_attempt_not_claimed_yet(stack, client):
    """Cancelled while it runs, before its claim (claim_after 20 s): the pool process is freed."""
    stack.worker("default", 1, SCHEDULER_CLAIM_AFTER="20", **WORKER_ENV)
    key = uuid.uuid4().hex
    task = client.submit(task="test.count", kwargs={"key": key, "seconds": 30})
    wait_until(lambda: client.count("started", key) == 1, 20, 0.02, message="the task to start")
    assert client.get(task["id"])["status"] == "queued"  # running, not claimed yet
    response = client.http.post(f"/api/v1/tasks/{task['id']}/cancel", headers=client.headers)
    assert response.status_code == 200 and response.json["status"] == "cancelled"
    probe = client.submit(task="demo.echo", args=["free"])
    assert client.wait(probe["id"], timeout=20)["status"] == "succeeded"
    time.sleep(0.5)
    assert client.get(task["id"])["status"] == "cancelled"
    assert client.count("completed", key) == 0
