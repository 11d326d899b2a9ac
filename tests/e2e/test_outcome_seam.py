"""The outcome seam: a consumer registered on it sees every terminal outcome exactly once.

The consumer is ``tests.task_types.probe``, registered the way any task module registers one
and loaded by the API, the workers and the scheduler; it counts each outcome it is handed in the
ledger. Every terminal path is driven through real processes.
"""

from __future__ import annotations

import os
import signal
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from scheduler_app.models import TaskOutcome
from scheduler_app.models.base import utcnow
from tests.e2e.test_failures import Client
from tests.support import wait_until
from tests.task_types import CRASH_MARKER_ENV, PROBE_TAG

pytestmark = pytest.mark.e2e

ONCE = {"max_retries": 0}
# Negative control of the crash test: without the scheduler's sweep, an outcome whose process
# died after the commit is never handed over and the test fails.
NO_SWEEP = bool(os.environ.get("OUTCOME_SEAM_NEGATIVE_CONTROL"))


@pytest.fixture
def client(stack) -> Client:
    return Client(stack)


def _pending_outcomes(client: Client) -> int:
    with client.stack.ext.tasks.sessions() as session:
        return session.scalar(select(func.count()).select_from(TaskOutcome))


def _seen(client: Client, task: dict) -> tuple[int, int]:
    """(outcomes the probe was handed for the task, of them with its final status)."""
    tid = task["id"]
    return client.counters.get(f"outcome:{tid}"), client.counters.get(
        f"outcome:{tid}:{task['status']}"
    )


def test_every_terminal_path_reaches_the_consumer_exactly_once(stack, client):
    stack.scheduler()
    stack.worker("default", 2)
    doomed = stack.worker("high", 1)
    tags = [PROBE_TAG]

    def submit(**body) -> dict:
        return client.submit(tags=tags, **body)

    succeeded = submit(task="demo.echo", args=[1])
    retried = submit(task="demo.flaky", kwargs={"failures": 1}, retry={"backoff": 0.1})
    failed = submit(task="demo.fail", retry=ONCE)
    timed_out = submit(task="test.stubborn", kwargs={"seconds": 30}, timeout=0.5, retry=ONCE)
    expires = (utcnow() + timedelta(seconds=1.5)).isoformat()
    expired = submit(task="demo.echo", queue="prio", expires_at=expires)  # nobody consumes prio
    waiting = submit(task="demo.echo", delay=60)
    running_key = uuid.uuid4().hex
    running = submit(task="test.count", kwargs={"key": running_key, "seconds": 20})
    lost_key = uuid.uuid4().hex
    lost = submit(
        task="test.count", queue="high", kwargs={"key": lost_key, "seconds": 30}, retry=ONCE
    )
    untagged = client.submit(task="demo.echo", args=[2])

    assert (
        client.http.post(
            f"/api/v1/tasks/{waiting['id']}/cancel", headers=client.headers
        ).status_code
        == 200
    )
    wait_until(lambda: client.count("started", running_key), 20, message="the long task to start")
    assert (
        client.http.post(
            f"/api/v1/tasks/{running['id']}/cancel", headers=client.headers
        ).status_code
        == 200
    )
    wait_until(lambda: client.count("started", lost_key), 20, message="the doomed task to start")
    doomed.signal(signal.SIGKILL)

    tasks = [succeeded, retried, failed, timed_out, expired, waiting, running, lost, untagged]
    done = {t["id"]: t for t in client.wait_all([t["id"] for t in tasks], 60)}
    expected = {
        succeeded["id"]: ("succeeded", None),
        retried["id"]: ("succeeded", None),
        failed["id"]: ("failed", "DemoFailure"),
        timed_out["id"]: ("failed", "AttemptTimeout"),
        expired["id"]: ("failed", "Expired"),
        waiting["id"]: ("cancelled", None),
        running["id"]: ("cancelled", None),
        lost["id"]: ("failed", "WorkerLostError"),
    }
    got = {
        tid: (
            done[tid]["status"],
            (done[tid]["error"] or {}).get("type") if done[tid]["status"] == "failed" else None,
        )
        for tid in expected
    }
    assert got == expected
    wait_until(lambda: _pending_outcomes(client) == 0, 10, message="every outcome to be consumed")
    assert {tid: _seen(client, done[tid]) for tid in expected} == {tid: (1, 1) for tid in expected}
    assert _seen(client, done[untagged["id"]]) == (0, 0)  # nobody wanted it: no row was written


def test_outcome_of_a_process_killed_before_its_consumers_ran_is_handed_over_once(
    stack, client, tmp_path
):
    """The pool process dies (SIGKILL) between the commit of the success and the consumers'
    transaction; the scheduler's sweep hands the outcome over instead, once.

    Negative control: OUTCOME_SEAM_NEGATIVE_CONTROL=1 runs it without a scheduler, and the
    outcome is never consumed.
    """
    marker = tmp_path / "crashed"
    if not NO_SWEEP:
        stack.scheduler()
    stack.worker("default", 1, **{CRASH_MARKER_ENV: str(marker)})
    task = client.submit(task="demo.echo", args=["x"], tags=[PROBE_TAG])
    done = client.wait(task["id"])
    assert done["status"] == "succeeded"
    wait_until(marker.exists, 10, message="the pool process to die in the consumer")
    wait_until(lambda: _seen(client, done) == (1, 1), 15, message="the sweep to hand it over")
    wait_until(lambda: _pending_outcomes(client) == 0, 5, message="the outcome to be deleted")
    assert _seen(client, done) == (1, 1)
