"""3. Execution: drain rate of pre-queued no-op tasks, our worker vs raw Celery, like for like.

Each side's workers stop consuming (Celery remote control), the tasks are queued, the workers
start consuming again, and the rate is timed from the first completed task to the last. Ours
runs ``demo.echo`` through the ledger (claim, run record, result, events); raw runs a no-op with
the same pool, concurrency, ``acks_late`` and prefetch multiplier.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from bench.environment import OURS_QUEUE, RAW_QUEUE, Environment
from bench.plan import Plan
from bench.probes import celery_pending, set_consuming, time_drain
from bench.raw_app import NOOP
from bench.report import Row, Target
from bench.services import BenchError, Child, wait_until

TITLE = "execution"
SUBMIT_CHUNK = 1000


def queue_ours(env: Environment, queue: str, count: int) -> list[uuid.UUID]:
    """Submit ``count`` demo.echo tasks through the submission service; their ids."""
    ids: list[uuid.UUID] = []
    for start in range(0, count, SUBMIT_CHUNK):
        bodies = [
            {"task": "demo.echo", "args": [i], "queue": queue}
            for i in range(start, min(count, start + SUBMIT_CHUNK))
        ]
        ids += [a.task.id for a in env.ledger.tasks.submit(env.principal(), bodies)]
    return ids


def queue_raw(env: Environment, queue: str, count: int) -> None:
    """Publish ``count`` raw no-op tasks to ``queue`` with one producer."""
    noop = env.raw_app.tasks[NOOP]
    with env.raw_app.producer_or_acquire() as producer:
        for index in range(count):
            noop.apply_async(args=[index], queue=queue, producer=producer)


def drain(env: Environment, side: str, workers: Sequence[Child], queue: str, count: int):
    """Queue ``count`` tasks while the workers do not consume, then time their drain.

    Returns the drain and the workers' CPU seconds per task during it.
    """
    app = env.control_app(side)
    nodes = [w.node for w in workers]
    client = env.ours_redis() if side == "ours" else env.raw_redis()
    set_consuming(app, nodes, queue, False)
    if celery_pending(client, [queue]):
        raise BenchError(f"{side}: queue {queue} is not empty before the drain")
    ids = queue_ours(env, queue, count) if side == "ours" else queue_raw(env, queue, count)
    cpu_before = sum(w.cpu_seconds() for w in workers)
    set_consuming(app, nodes, queue, True)
    result = time_drain(lambda: count - celery_pending(client, [queue]), count, timeout=300)
    cpu = sum(w.cpu_seconds() for w in workers) - cpu_before
    if side == "ours":
        sql = "SELECT count(*) FROM tasks WHERE id = ANY(:ids) AND status = 'succeeded'"
        wait_until(
            lambda: env.ledger.scalar(sql, ids=list(ids)) == count,
            10,
            0.05,
            f"the ledger to show all {count} tasks succeeded",
        )
    return result, cpu / count * 1000


def run(env: Environment, plan: Plan) -> list[Row]:
    """Rows 3a to 3c."""
    prefork = Row(
        "3a",
        "drain no-op tasks, prefork -c 2: our worker vs raw Celery",
        "tasks/s",
        target=Target("ratio>=", 0.7),
    )
    cpu = Row("3b", "worker CPU per task, prefork -c 2 (main + pool)", "ms")
    solo = Row("3c", "drain no-op tasks, 2 workers -P solo: ours vs raw Celery", "tasks/s")
    solo_workers = {
        "ours": [env.start_worker("ours", f"ours-solo{i}", "high", "solo", 1) for i in range(2)],
        "raw": [env.start_worker("raw", f"raw-solo{i}", "raw-solo", "solo", 1) for i in range(2)],
    }
    env.wait_ready(*solo_workers["ours"], *solo_workers["raw"])
    try:
        for _ in range(plan.reps):
            result, per_task = drain(env, "ours", [env.ours_worker], OURS_QUEUE, plan.drain_tasks)
            prefork.ours.append(result.rate)
            cpu.ours.append(per_task)
            result, per_task = drain(env, "raw", [env.raw_worker], RAW_QUEUE, plan.drain_tasks)
            prefork.raw.append(result.rate)
            cpu.raw.append(per_task)
            result, _ = drain(env, "ours", solo_workers["ours"], "high", plan.drain_tasks)
            solo.ours.append(result.rate)
            result, _ = drain(env, "raw", solo_workers["raw"], "raw-solo", plan.drain_tasks)
            solo.raw.append(result.rate)
    finally:
        for worker in (*solo_workers["ours"], *solo_workers["raw"]):
            env.retire(worker)
    prefork.note = (
        f"{plan.drain_tasks} tasks queued per repetition while the workers did not consume, timed "
        "from the first completion to the last; ours = demo.echo through the ledger"
    )
    return [prefork, cpu, solo]
