"""GET /api/v1/tasks on a large ledger: the statements the list service really sends (captured
from the engine) are planned as index scans, never as a sequential scan of ``tasks``.

Hundreds of thousands to millions of rows are generated in SQL (generate_series). Slow:
``-m "not slow"`` skips it.
Negative control: LEDGER_SCALE_NEGATIVE_CONTROL=1 drops the indexes the listings use by owner,
by time and by workflow first; those listings then become scans and the test fails.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import event, text

from scheduler_app.db import deadline
from scheduler_app.models.base import utcnow
from scheduler_app.services.clients.principal import Principal, Role
from scheduler_app.services.pagination import encode_cursor
from tests.support import Stack

pytestmark = pytest.mark.slow

# 400,000 tasks and as many events by default (a minute on a busy 2-core machine);
# LEDGER_SCALE_TASKS=3000000 for the few-million-row check.
TASKS = int(os.environ.get("LEDGER_SCALE_TASKS", "400000"))
OWNERS = 20


@pytest.fixture(scope="module")
def stack(tmp_path_factory, logdir) -> Iterator[Stack]:
    platform = Stack(tmp_path_factory.mktemp("scale"), logdir)
    yield platform
    platform.close()


@pytest.fixture(scope="module")
def ledger(stack) -> dict:
    """TASKS finished tasks (and an event each) over OWNERS owners; a few in rare states."""
    owners = [stack.ext.clients.create(f"scale-{i}", "submitter")[0].id for i in range(OWNERS)]
    workflow, schedule = uuid.uuid4(), uuid.uuid4()
    started = time.monotonic()
    with deadline(900), stack.ext.engine.begin() as conn:
        conn.execute(text("SET LOCAL statement_timeout = 0"))
        conn.execute(
            text(
                """
                INSERT INTO tasks (id, task, args, kwargs, queue, priority, status, attempts,
                    max_retries, backoff, backoff_max, jitter, run_at, created_at, finished_at,
                    owner_id, tags, workflow_id, schedule_id)
                SELECT gen_random_uuid(), 'demo.echo', '[]', '{}', 'default', 5,
                    CASE WHEN g % 1001 = 0 THEN 'queued' WHEN g % 97 = 0 THEN 'failed'
                         ELSE 'succeeded' END,
                    1, 3, 1, 60, true, t, t, t + interval '1 second',
                    (CAST(:owners AS uuid[]))[1 + g % :n],
                    CASE WHEN g % 500 = 0 THEN ARRAY['rare'] ELSE ARRAY[]::varchar[] END,
                    CASE WHEN g % 100000 = 7 THEN CAST(:workflow AS uuid) END,
                    CASE WHEN g % 50000 = 3 THEN CAST(:schedule AS uuid) END
                FROM generate_series(1, :tasks) AS g,
                     LATERAL (SELECT now() - (:tasks - g) * interval '100 ms' AS t) AS at
                """
            ),
            {
                "owners": [str(o) for o in owners],
                "n": OWNERS,
                "workflow": str(workflow),
                "schedule": str(schedule),
                "tasks": TASKS,
            },
        )
        conn.execute(
            text(
                "INSERT INTO task_events (task_id, at, status, attempt) "
                "SELECT id, created_at, status, 1 FROM tasks"
            )
        )
    with deadline(900), stack.ext.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("SET statement_timeout = 0"))
        conn.execute(text("ANALYZE"))
        if os.environ.get("LEDGER_SCALE_NEGATIVE_CONTROL"):
            for index in ("ix_tasks_owner_created", "ix_tasks_created", "ix_tasks_workflow_id"):
                conn.execute(text(f"DROP INDEX {index}"))
    return {
        "owners": owners,
        "workflow": workflow,
        "schedule": schedule,
        "seconds": time.monotonic() - started,
    }


def _plans(stack, principal: Principal, filters: dict, cursor: str | None) -> list[dict]:
    """EXPLAIN of each statement the list service sends for this page."""
    sent: list[tuple[str, object]] = []

    def capture(conn, cursor_, statement, parameters, context, executemany):
        if "FROM tasks" in statement:
            sent.append((statement, parameters))

    engine = stack.ext.engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        stack.ext.tasks.list(principal, filters, 50, cursor)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert sent
    plans = []
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            for statement, parameters in sent:
                cur.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
                plan = cur.fetchone()[0]
                plans.append(plan[0]["Plan"] if isinstance(plan, list) else json.loads(plan))
    finally:
        raw.close()
    return plans


def _scans(plan: dict) -> list[tuple[str, str]]:
    found = []
    if "Relation Name" in plan:
        found.append((plan["Node Type"], plan["Relation Name"]))
    for child in plan.get("Plans", []):
        found += _scans(child)
    return found


def test_list_queries_use_indexes_at_scale(stack, ledger):
    owner = Principal(ledger["owners"][3], Role.SUBMITTER)
    operator = Principal(uuid.uuid4(), Role.OPERATOR)
    middle = utcnow() - timedelta(seconds=TASKS * 0.05)  # half way back
    cursor = encode_cursor(middle, uuid.UUID(int=0))
    cases = {
        "owner, first page": (owner, {}, None),
        "owner, by cursor": (owner, {}, cursor),
        "all owners, by cursor": (operator, {}, cursor),
        "owner, by status (rare)": (owner, {"status": ["queued"]}, None),
        "owner, by status (common)": (owner, {"status": ["succeeded"]}, cursor),
        "all owners, by status": (operator, {"status": ["failed"]}, None),
        "owner, by tag": (owner, {"tag": "rare"}, None),
        "by workflow": (operator, {"workflow_id": ledger["workflow"]}, None),
        "by schedule": (owner, {"schedule_id": ledger["schedule"]}, None),
    }
    seq = {}
    for name, (principal, filters, page) in cases.items():
        plans = [_scans(plan) for plan in _plans(stack, principal, filters, page)]
        assert plans[0], (name, "the first statement reads no table")
        for scans in plans:  # a later one may read nothing (an empty page: no ids to fetch)
            bad = [s for s in scans if s[0] == "Seq Scan"]
            if bad:
                seq[name] = scans
    assert not seq, f"sequential scans at {TASKS} tasks: {seq}"
    print(f"generated {TASKS} tasks and {TASKS} events in {ledger['seconds']:.1f} s")
