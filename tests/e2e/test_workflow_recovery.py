"""A workflow's releases survive a process killed mid-release and a Redis that lost everything.

Negative control: WORKFLOW_RECOVERY_NEGATIVE_CONTROL=1 runs both tests without the scheduler
process (no outcome sweep, no reconciler); the release is then lost and both tests fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from tests.e2e.test_failures import Client
from tests.support import Stack, wait_until
from tests.task_types import CRASH_MARKER_ENV, PROBE_TAG
from tests.workflow_support import node, statuses, submit, wait_finished

pytestmark = pytest.mark.e2e

NO_SCHEDULER = bool(os.environ.get("WORKFLOW_RECOVERY_NEGATIVE_CONTROL"))


@pytest.fixture
def fast_stack(tmp_path, logdir) -> Iterator[Stack]:
    """A stack whose reconciler looks every second."""
    platform = Stack(tmp_path, logdir, reconciler_interval=1, reconcile_grace_seconds=1)
    yield platform
    platform.close()


def _releases(client: Client, task_id: str) -> int:
    with client.stack.ext.tasks.sessions() as session:
        return session.scalar(
            text(
                "SELECT count(*) FROM task_events WHERE task_id = :id AND status = 'queued'"
                " AND detail LIKE 'released%'"
            ),
            {"id": task_id},
        )


def test_release_lost_with_a_killed_process_is_made_once_by_the_sweep(fast_stack, tmp_path):
    """The pool process that ends ``a`` is SIGKILLed inside the transaction that releases
    ``b`` (the test probe consumer kills it after the workflow consumer ran); the release
    rolls back with it, and the scheduler's sweep releases ``b`` once."""
    client = Client(fast_stack)
    marker = tmp_path / "crashed"
    fast_stack.worker("default", 1, **{CRASH_MARKER_ENV: str(marker)})
    keys = {name: uuid.uuid4().hex for name in "ab"}
    wf = submit(
        client.http,
        client.headers,
        [
            node("a", "test.count", kwargs={"key": keys["a"]}, tags=[PROBE_TAG]),
            node("b", "test.count", "a", kwargs={"key": keys["b"]}),
        ],
    )
    wait_until(marker.exists, 20, message="the pool process to die in the consumer")
    # Started only now: its sweep would otherwise race the pool process for the outcome.
    if not NO_SCHEDULER:
        fast_stack.scheduler()
    done = wait_finished(client.http, client.headers, wf["id"], timeout=40)
    assert done["status"] == "succeeded"
    assert statuses(done) == {"a": "succeeded", "b": "succeeded"}
    assert _releases(client, done["nodes"]["b"]["task_id"]) == 1
    assert client.count("started", keys["b"]) == 1


def test_release_published_into_a_flushed_redis_runs_once(fast_stack):
    """``b`` is released and published, then Redis loses everything (FLUSHALL) before any
    worker consumes its queue: the reconciler publishes it again, and it runs once."""
    client = Client(fast_stack)
    if not NO_SCHEDULER:
        fast_stack.scheduler()
    fast_stack.worker("default", 1)
    keys = {name: uuid.uuid4().hex for name in "ab"}
    wf = submit(
        client.http,
        client.headers,
        [
            node("a", "test.count", kwargs={"key": keys["a"]}),
            node("b", "test.count", "a", queue="high", kwargs={"key": keys["b"]}),
        ],
    )
    b_id = wf["nodes"]["b"]["task_id"]
    wait_until(lambda: client.get(b_id)["status"] == "queued", 20, message="b to be released")
    fast_stack.redis.client().flushall()
    fast_stack.worker("high", 1)
    done = wait_finished(client.http, client.headers, wf["id"], timeout=40)
    assert statuses(done) == {"a": "succeeded", "b": "succeeded"}
    assert _releases(client, b_id) == 1
    assert client.count("started", keys["b"]) == 1
