"""3. Execution: drain rate of pre-queued no-op tasks, our worker vs raw Celery, like for like.

Each side's workers stop consuming (Celery remote control), the tasks are queued, the workers
start consuming again, and the rate is timed from the first completed task to the last. Ours
runs ``demo.echo`` through the ledger (claim, run record, result, events); raw runs a no-op with
the same pool, concurrency, ``acks_late`` and prefetch multiplier.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import astuple, dataclass

import psutil

from bench.environment import OURS_QUEUE, RAW_QUEUE, Environment
from bench.plan import Plan
from bench.probes import celery_pending, set_consuming, time_drain
from bench.raw_app import NOOP, SLEEP
from bench.report import Row, Target
from bench.services import BenchError, Child, cpu_seconds, postgres_cpu_seconds, wait_until

TITLE = "execution"
RAW_TRANSPORT_QUEUE = "raw-transport"
SUBMIT_CHUNK = 1000


def queue_ours(
    env: Environment, queue: str, count: int, sleep: float | None = None
) -> list[uuid.UUID]:
    """Submit ``count`` demo.echo tasks (demo.sleep of ``sleep`` seconds if given) through the
    submission service; their ids."""
    ids: list[uuid.UUID] = []
    for start in range(0, count, SUBMIT_CHUNK):
        bodies = [
            {"task": "demo.echo", "args": [i], "queue": queue}
            if sleep is None
            else {"task": "demo.sleep", "kwargs": {"seconds": sleep}, "queue": queue}
            for i in range(start, min(count, start + SUBMIT_CHUNK))
        ]
        ids += [a.task.id for a in env.ledger.tasks.submit(env.principal(), bodies)]
    return ids


def queue_raw(env: Environment, queue: str, count: int, sleep: float | None = None) -> None:
    """Publish ``count`` raw no-op tasks (sleeps of ``sleep`` seconds if given) to ``queue``
    with one producer."""
    task = env.raw_app.tasks[NOOP if sleep is None else SLEEP]
    with env.raw_app.producer_or_acquire() as producer:
        for index in range(count):
            args = [index] if sleep is None else [sleep]
            task.apply_async(args=args, queue=queue, producer=producer)


@dataclass
class CpuSplit:
    """CPU seconds so far of the workers' main processes, their pool processes, PostgreSQL's
    processes (all of the machine's: its backends and its background writers) and Redis."""

    main: float
    pool: float
    postgres: float
    redis: float

    @classmethod
    def now(cls, env: Environment, workers: Sequence[Child]) -> CpuSplit:
        main = pool = 0.0
        for worker in workers:
            try:
                root = psutil.Process(worker.pid)
                main += cpu_seconds(root)
                pool += sum(cpu_seconds(p) for p in root.children(recursive=True))
            except psutil.NoSuchProcess:
                continue
        redis = cpu_seconds(psutil.Process(env.redis.process.pid)) if env.redis.process else 0.0
        return cls(main, pool, postgres_cpu_seconds(), redis)

    def per_task_ms(self, before: CpuSplit, count: int) -> CpuSplit:
        """Milliseconds per task of each since ``before``."""
        return CpuSplit(
            *((a - b) / count * 1000 for a, b in zip(astuple(self), astuple(before), strict=True))
        )


def drain(
    env: Environment,
    side: str,
    workers: Sequence[Child],
    queue: str,
    count: int,
    sleep: float | None = None,
    expect: str = "succeeded",
):
    """Queue ``count`` tasks while the workers do not consume, then time their drain.

    ``expect``: the state ours' tasks are in afterwards ("queued": a worker that records no
    outcome; they are cancelled then, so the reconciler does not publish them again).

    Returns the drain, the workers' CPU milliseconds per task during it, and the CPU split.
    """
    app = env.control_app(side)
    nodes = [w.node for w in workers]
    client = env.ours_redis() if side == "ours" else env.raw_redis()
    set_consuming(app, nodes, queue, False)
    if celery_pending(client, [queue]):
        raise BenchError(f"{side}: queue {queue} is not empty before the drain")
    if side == "ours":
        ids = queue_ours(env, queue, count, sleep)
    else:
        queue_raw(env, queue, count, sleep)
    cpu_before = sum(w.cpu_seconds() for w in workers)
    split_before = CpuSplit.now(env, workers)
    set_consuming(app, nodes, queue, True)
    result = time_drain(lambda: count - celery_pending(client, [queue]), count, timeout=300)
    split = CpuSplit.now(env, workers).per_task_ms(split_before, count)
    cpu = sum(w.cpu_seconds() for w in workers) - cpu_before
    if side == "ours":
        # an attempt that ran past claim_after (a process's first, say) was claimed and its
        # success recorded even without the outcome write
        states = ["succeeded"] if expect == "succeeded" else [expect, "succeeded"]
        sql = "SELECT count(*) FROM tasks WHERE id = ANY(:ids) AND status = ANY(:states)"
        wait_until(
            lambda: env.ledger.scalar(sql, ids=list(ids), states=states) == count,
            10,
            0.05,
            f"the ledger to show all {count} tasks {expect}",
        )
        if expect == "queued":
            env.ledger.execute(
                "UPDATE tasks SET status = 'cancelled', finished_at = now() "
                "WHERE id = ANY(:ids) AND status = 'queued'",
                ids=list(ids),
            )
    return result, cpu / count * 1000, split


def paired(row: Row) -> str:
    """The ratio of each repetition's two drains, which ran one after the other: on a machine
    whose speed drifts between repetitions these say more than the ratio of the medians."""
    ratios = [f"{o / r:.3f}" for o, r in zip(row.ours, row.raw, strict=False) if r]
    return f"ours/raw per repetition: {', '.join(ratios) or 'n/a'}"


def run(env: Environment, plan: Plan) -> list[Row]:
    """Rows 3a to 3i."""
    prefork = Row(
        "3a",
        "drain no-op tasks, prefork -c 2: our worker vs raw Celery",
        "tasks/s",
        target=Target("ratio>=", 0.7),
    )
    cpu = Row("3b", "worker CPU per task, prefork -c 2 (main + pool)", "ms")
    solo = Row("3c", "drain no-op tasks, 2 workers -P solo: ours vs raw Celery", "tasks/s")
    split_rows = {
        part: Row(key, f"CPU per task during 3a: {what}", "ms")
        for key, part, what in (
            ("3d", "main", "worker main process"),
            ("3e", "pool", "worker pool processes"),
            ("3f", "postgres", "PostgreSQL (all its processes)"),
            ("3g", "redis", "Redis"),
        )
    }
    slow = Row(
        "3h", f"drain {plan.sleep_tasks} tasks of 20 ms, prefork -c 2: ours vs raw", "tasks/s"
    )
    unwritten = Row(
        "3i", "row 3a with our outcome write switched off (read and lock only) vs raw", "tasks/s"
    )
    transport = Row(
        "3j",
        "row 3a's raw Celery on our Redis transport vs on kombu's (one client per channel)",
        "tasks/s",
    )
    # Measurement only: this worker records no outcome (the tasks stay queued; cancelled below).
    no_writes = env.start_worker("ours", "ours-nowrite", "low", BENCH_OUTCOME_WRITE="off")
    raw_ours_transport = env.start_worker(
        "raw", "raw-transport", RAW_TRANSPORT_QUEUE, BENCH_RAW_TRANSPORT="ours"
    )
    solo_workers = {
        "ours": [env.start_worker("ours", f"ours-solo{i}", "high", "solo", 1) for i in range(2)],
        "raw": [env.start_worker("raw", f"raw-solo{i}", "raw-solo", "solo", 1) for i in range(2)],
    }
    env.wait_ready(*solo_workers["ours"], *solo_workers["raw"], no_writes, raw_ours_transport)
    try:
        for _ in range(plan.reps):
            for side, worker, queue in (
                ("ours", env.ours_worker, OURS_QUEUE),
                ("raw", env.raw_worker, RAW_QUEUE),
            ):
                result, per_task, split = drain(env, side, [worker], queue, plan.drain_tasks)
                getattr(prefork, side).append(result.rate)
                getattr(cpu, side).append(per_task)
                for part, row in split_rows.items():
                    getattr(row, side).append(getattr(split, part))
            result, _, _ = drain(env, "ours", [no_writes], "low", plan.drain_tasks, expect="queued")
            unwritten.ours.append(result.rate)
            unwritten.raw.append(prefork.raw[-1])
            result, _, _ = drain(
                env, "raw", [raw_ours_transport], RAW_TRANSPORT_QUEUE, plan.drain_tasks
            )
            transport.ours.append(result.rate)
            transport.raw.append(prefork.raw[-1])
            result, _, _ = drain(env, "ours", solo_workers["ours"], "high", plan.drain_tasks)
            solo.ours.append(result.rate)
            result, _, _ = drain(env, "raw", solo_workers["raw"], "raw-solo", plan.drain_tasks)
            solo.raw.append(result.rate)
            for side, worker, queue in (
                ("ours", env.ours_worker, OURS_QUEUE),
                ("raw", env.raw_worker, RAW_QUEUE),
            ):
                result, _, _ = drain(env, side, [worker], queue, plan.sleep_tasks, sleep=0.02)
                getattr(slow, side).append(result.rate)
    finally:
        for worker in (*solo_workers["ours"], *solo_workers["raw"], no_writes, raw_ours_transport):
            env.retire(worker)
    prefork.note = (
        f"{plan.drain_tasks} tasks queued per repetition while the workers did not consume, timed "
        "from the first completion to the last; ours = demo.echo through the ledger; "
        f"{paired(prefork)}"
    )
    solo.note = paired(solo)
    slow.note = (
        "demo.sleep 0.02 s vs a raw 20 ms sleep, on 3a's workers: what the ledger costs a task "
        "that waits on I/O (at most 2 / 0.02 s = 100 tasks/s on either side)"
    )
    unwritten.note = (
        "ours = a worker with BENCH_OUTCOME_WRITE=off (measurement only: its tasks "
        "stay queued and are cancelled after each drain), raw = the raw drain of 3a"
    )
    transport.note = (
        "ours = a raw worker (BENCH_RAW_TRANSPORT=ours) on services/broker/redis_transport.py, "
        "which every process of ours uses; raw = the raw drain of 3a (kombu's transport); "
        f"{paired(transport)}"
    )
    return [prefork, cpu, solo, *split_rows.values(), slow, unwritten, transport]
