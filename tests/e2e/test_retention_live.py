"""The scheduler's pruner beside live traffic: with a one-second retention it removes finished
tasks in batches while a worker drains, and no task is lost before it ran.

Negative control: SCHEDULER_TEST_REMOVE=prune_terminal_guard (the pruner chooses by age alone)
deletes delayed and queued tasks before they run; the count then never reaches the total.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from scheduler_app.services.retention import ledger_figures
from scheduler_app.services.tasks.counters import CounterStore
from tests.e2e.test_failures import Client
from tests.support import Stack, wait_until

pytestmark = pytest.mark.e2e

TOTAL = 160


@pytest.fixture
def stack(tmp_path, logdir) -> Iterator[Stack]:
    platform = Stack(
        tmp_path,
        logdir,
        retention_succeeded=1,
        prune_interval=0.5,
        prune_batch=20,
    )
    control = os.environ.get("SCHEDULER_TEST_REMOVE")
    if control:
        platform.env["SCHEDULER_TEST_REMOVE"] = control
    yield platform
    platform.close()


def test_pruning_beside_a_drain_loses_no_live_task(stack):
    client = Client(stack)
    key = uuid.uuid4().hex
    stack.worker("default", 2)
    stack.scheduler()
    # Delays up to 4 s: tasks that wait while older ones finish and go.
    bodies = [
        {"task": "test.count", "kwargs": {"key": key}, "delay": (i % 9) * 0.5} for i in range(TOTAL)
    ]
    for start in range(0, TOTAL, 40):
        client.batch(bodies[start : start + 40])
    counters = CounterStore(stack.ext.tasks.sessions)
    wait_until(
        lambda: counters.get(f"completed:{key}") >= TOTAL,
        90,
        0.5,
        message=f"all {TOTAL} tasks to run (a live task was pruned?)",
    )
    assert counters.get(f"started:{key}") == TOTAL
    # The pruner kept up: what finished more than a second (plus a pass) ago is gone.
    wait_until(
        lambda: ledger_figures(stack.ext.tasks.sessions)["pruned"]["tasks"] >= TOTAL,
        30,
        0.5,
        message="the pruner to remove every finished task",
    )
    figures = ledger_figures(stack.ext.tasks.sessions)
    assert figures["pruned"]["runs"] >= TOTAL
    with stack.ext.tasks.sessions() as session:
        assert session.scalar(text("SELECT count(*) FROM tasks WHERE task = 'test.count'")) == 0
