"""Failures that never reach task code: unknown types, hard timeouts; retry defaults; retention."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import insert, select

from scheduler_app.models import DeadLetter
from scheduler_app.models.base import utcnow
from scheduler_app.services.dead_letters.service import purge_older_than
from tests.e2e.test_failures import Client

pytestmark = pytest.mark.e2e


@pytest.fixture
def client(stack) -> Client:
    return Client(stack)


def test_task_type_unknown_to_the_worker_fails_into_the_dead_letter_queue(stack, client):
    """The API knows test.count; this worker does not (an old deploy): the task must not wait
    forever nor be re-published without end."""
    stack.scheduler()
    stack.worker("default", 1, SCHEDULER_TASK_MODULES="tasks.demo,tasks.http")
    task = client.submit(task="test.count", kwargs={"key": uuid.uuid4().hex})
    done = client.wait(task["id"], timeout=20)
    assert done["status"] == "failed"
    assert done["error"]["type"] == "UnknownTaskType"
    assert done["attempts"] == 0
    dead = client.http.get("/api/v1/dlq", headers=client.headers).json["items"]
    assert [d["task_id"] for d in dead] == [task["id"]]


def test_attempt_past_its_hard_time_limit_is_killed_and_counted_as_timed_out(stack, client):
    """test.stubborn swallows the soft limit; the pool kills it at the hard limit."""
    stack.scheduler()
    worker = stack.worker("default", 1)
    task = client.submit(
        task="test.stubborn", kwargs={"seconds": 30}, timeout=0.5, retry={"max_retries": 0}
    )
    done = client.wait(task["id"], timeout=20)
    assert done["status"] == "failed"
    assert done["error"]["type"] == "AttemptTimeout"
    assert worker.process.poll() is None
    after = client.submit(task="demo.echo", args=["still working"])
    assert client.wait(after["id"], timeout=20)["status"] == "succeeded"


def test_task_type_default_retry_policy_applies_unless_the_submission_overrides(stack, client):
    defaults = client.submit(task="test.patient", queue="prio")
    assert defaults["retry"] == {
        "max_retries": 7,
        "backoff": 3.0,
        "backoff_max": 60.0,
        "jitter": False,
    }
    override = client.submit(task="test.patient", queue="prio", retry={"max_retries": 1})
    assert override["retry"]["max_retries"] == 1
    assert override["retry"]["backoff"] == 3.0


def test_retention_removes_only_dead_letters_older_than_it(stack, client):
    sessions = stack.ext.tasks.sessions
    ages = {timedelta(days=40): None, timedelta(days=5): None}
    with sessions() as session, session.begin():
        for age in ages:
            task = client.submit(task="demo.echo", queue="prio")
            ages[age] = uuid.uuid4()
            session.execute(
                insert(DeadLetter).values(
                    id=ages[age],
                    task_id=uuid.UUID(task["id"]),
                    owner_id=uuid.UUID(task["owner"]),
                    task="demo.echo",
                    args=[],
                    kwargs={},
                    queue="prio",
                    attempts=1,
                    failed_at=utcnow() - age,
                )
            )
    assert purge_older_than(sessions, 30) == 1
    with sessions() as session:
        left = list(session.scalars(select(DeadLetter.id)))
    assert left == [ages[timedelta(days=5)]]
