"""8. The ledger at scale: rows 2b and 3a with N finished tasks already in the ledger vs as it
was, and the pruner removing them while the platform drains.

Opt-in (``python -m bench --only 11``): generating 5,000,000 tasks with their events and runs
takes minutes. ``BENCH_LEDGER_ROWS`` sets N (default: the plan's ``ledger_rows``).

The N tasks are generated in SQL, finished eight days ago (past the 7-day default retention of
``succeeded``), each with three events (in their day's partition of ``task_events``) and one
run. While rows 11a/11b measure, the bench holds the pruner's advisory lock, so the scheduler does
not prune them yet; for 11c/11d a pruner runs in the bench process (the scheduler's code, its
batch size and its settings) while drains run beside it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from datetime import timedelta

from sqlalchemy import text

from bench.environment import OURS_QUEUE, Environment
from bench.plan import Plan
from bench.report import Row, Target
from bench.scenarios.batch import batch_rate
from bench.scenarios.execution import drain

TITLE = "ledger at scale"
CHUNK = 250_000

_GENERATE = """
SET LOCAL statement_timeout = 0;
WITH made AS (
    INSERT INTO tasks (id, task, args, kwargs, queue, priority, status, attempts, max_retries,
        backoff, backoff_max, jitter, timeout, run_at, dispatched_at, created_at, started_at,
        finished_at, result, owner_id, tags)
    SELECT gen_random_uuid(), 'demo.echo', '[1]', '{}', 'default', 5, 'succeeded', 1, 3, 1, 300,
        true, 3600, t, t, t, t, t + interval '2 ms', '1', CAST(:owner AS uuid), '{}'
    FROM generate_series(1, :n) AS g,
         LATERAL (SELECT :start + g * interval '1 ms' AS t) AS at
    RETURNING id, created_at
), runs AS (
    INSERT INTO runs (task_id, attempt, worker, status, started_at, finished_at)
    SELECT id, 1, 'celery@bench', 'succeeded', created_at, created_at + interval '2 ms' FROM made
)
INSERT INTO task_events (task_id, at, status, attempt, worker, detail)
SELECT id, created_at + s.o * interval '1 ms', s.status, s.attempt, s.worker, s.detail
FROM made, (VALUES (0, 'queued', 0, NULL, 'submitted'), (1, 'running', 1, 'celery@bench', NULL),
                   (2, 'succeeded', 1, 'celery@bench', NULL))
           AS s(o, status, attempt, worker, detail)
"""


def generate(env: Environment, count: int) -> float:
    """Insert ``count`` finished no-op tasks (eight days old) with events and runs; seconds."""
    from scheduler_app.models.base import utcnow
    from scheduler_app.services.retention.partitions import Partitions

    start = utcnow() - timedelta(days=8, hours=1)
    partitions = Partitions(env.ledger.sessions, env.ledger.settings)
    span = timedelta(milliseconds=count + 10)
    day = start.date()
    while day <= (start + span).date():
        partitions._create(day)  # the days the scheduler would have created ahead
        day += timedelta(days=1)
    owner = env.principal().id
    from scheduler_app.db import deadline

    began = time.monotonic()
    for offset in range(0, count, CHUNK):
        size = min(CHUNK, count - offset)
        with deadline(3600):
            env.ledger.execute(
                _GENERATE,
                owner=str(owner),
                n=size,
                start=start + timedelta(milliseconds=offset),
            )
    with deadline(3600), env.ledger.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("SET statement_timeout = 0"))
        conn.execute(text("VACUUM ANALYZE tasks, runs, task_events"))
    return time.monotonic() - began


def run(env: Environment, plan: Plan) -> list[Row]:
    """Rows 11a to 11d."""
    from scheduler_app.services.retention import Pruner
    from scheduler_app.services.retention.pruner import PRUNER_LOCK

    count = int(os.environ.get("BENCH_LEDGER_ROWS", plan.ledger_rows))
    submit = Row(
        "11a",
        f"batch submit, 1000 tasks/request: {count:,} finished tasks in the ledger vs before",
        "tasks/s",
        target=Target("ratio>=", 0.9),
    )
    drained = Row(
        "11b",
        f"drain no-op tasks, prefork -c 2: {count:,} finished tasks in the ledger vs before",
        "tasks/s",
        target=Target("ratio>=", 0.9),
    )
    pruning = Row(
        "11c",
        "pruning (tasks removed/s) vs the drain rate beside it",
        "tasks/s",
        target=Target("ratio>=", 3.0),
    )
    beside = Row(
        "11d",
        "drain while the pruner runs vs drain without (same ledger)",
        "tasks/s",
        target=Target("ratio>=", 0.9),
    )
    for _ in range(plan.reps):
        submit.raw.append(batch_rate(env, 1000, plan.batch1000_requests))
        drained.raw.append(
            drain(env, "ours", [env.ours_worker], OURS_QUEUE, plan.drain_tasks)[0].rate
        )
    with env.ledger.engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PRUNER_LOCK})
        holder.commit()
        seconds = generate(env, count)
        size_mb = env.ledger.scalar("SELECT pg_database_size(current_database())") / 2**20
        for _ in range(plan.reps):
            submit.ours.append(batch_rate(env, 1000, plan.batch1000_requests))
            result, *_ = drain(env, "ours", [env.ours_worker], OURS_QUEUE, plan.drain_tasks)
            drained.ours.append(result.rate)
        beside.raw = list(drained.ours)
        # The pruner beside drains: the scheduler's code and settings, in this process.
        pruner = Pruner(env.ledger.sessions, env.ledger.settings)
        removed: Counter[str] = Counter()
        finished = threading.Event()

        def prune() -> None:
            while not finished.is_set():
                done = pruner.prune()
                removed.update(done)
                if not done.get("tasks"):
                    break
            finished.set()

        began = time.monotonic()
        worker = threading.Thread(target=prune, name="bench-pruner", daemon=True)
        worker.start()
        while not finished.is_set() and len(beside.ours) < max(plan.reps, 3):
            result, *_ = drain(env, "ours", [env.ours_worker], OURS_QUEUE, plan.drain_tasks)
            beside.ours.append(result.rate)
        worker.join()
        elapsed = time.monotonic() - began
        pruning.ours.append(removed["tasks"] / elapsed)
        pruning.raw.append(sum(beside.ours) / len(beside.ours))
        holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PRUNER_LOCK})
        holder.commit()
    submit.note = (
        f"{count:,} succeeded tasks with 3 events and a run each, generated in SQL in "
        f"{seconds:.0f} s (database {size_mb:,.0f} MB); 'raw' = the same ledger before"
    )
    pruning.note = (
        f"{removed['tasks']:,} tasks (and {removed['runs']:,} runs) removed in {elapsed:.1f} s "
        f"by the pruner (batches of {pruner.batch}) while {len(beside.ours)} drains of "
        f"{plan.drain_tasks} ran; their events leave with their day's partition"
    )
    return [submit, drained, pruning, beside]
