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
from tests.e2e.test_retries import stopped_by_the_window

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
        "strategy": "exponential",
        "max_retry_duration": None,
    }
    override = client.submit(task="test.patient", queue="prio", retry={"max_retries": 1})
    assert override["retry"]["max_retries"] == 1
    assert override["retry"]["backoff"] == 3.0


def test_task_type_default_strategy_and_retry_window_apply(stack, client):
    """test.impatient's type retries every 0.3 s (fixed) for 1.5 s at most; a task of it that
    says nothing about retries gets exactly that, and GET /task-types shows it."""
    listed = client.http.get("/api/v1/task-types", headers=client.headers).json
    types = {t["name"]: t for t in listed}
    assert types["test.impatient"]["retry"] == {
        "max_retries": 50,
        "backoff": 0.3,
        "jitter": False,
        "strategy": "fixed",
        "max_retry_duration": 1.5,
    }
    stack.worker("default", 1)
    task = client.submit(task="test.impatient")
    assert task["retry"]["strategy"] == "fixed" and task["retry"]["max_retry_duration"] == 1.5
    done = client.wait(task["id"], timeout=30)
    assert done["status"] == "failed" and done["attempts"] < 20
    runs = stopped_by_the_window(stack.app, client.http, client.headers, task["id"], 1.5)
    assert {r.retry_delay for r in runs[:-1]} == {0.3}


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
