"""6. Memory: worker RSS with N tasks scheduled an hour ahead, growth over a warmed baseline.

Ours keeps them in PostgreSQL (status ``scheduled``): the worker never sees them. Raw Celery
holds each ``countdown=3600`` message in the worker (celery#9849): kombu raises the prefetch
limit for every ETA message, so the worker takes them all. The raw messages are published in a
Redis pipeline (copies of one real message, each with its own task id and delivery tag); ours
are validated by the submission service and inserted in chunks of 1000. One repetition: with
N=100,000 it is the costly scenario.
"""

from __future__ import annotations

import json
import time
import uuid

from bench.environment import Environment
from bench.plan import Plan
from bench.probes import celery_pending, queue_keys
from bench.raw_app import NOOP
from bench.report import Row, Target
from bench.scenarios.execution import queue_ours, queue_raw
from bench.services import BenchError, Child, wait_until
from scheduler_app.services.broker import layout

TITLE = "memory"
OURS_MEMORY_QUEUE = "low"
RAW_MEMORY_QUEUE = "raw-eta"
HOUR = 3600
CHUNK = 1000
MB = 2**20


def create_ours(env: Environment, count: int) -> float:
    """Schedule ``count`` tasks an hour ahead; tasks/s.

    Rows come from the submission service's own validation (``TaskService.prepare``, what the
    batch endpoint runs) and go in with one cached multi-row INSERT per chunk, which is faster
    than the service's insert and leaves the same rows in the ledger.
    """
    from sqlalchemy import insert

    from scheduler_app.models import Task, TaskEvent
    from scheduler_app.services.ledger.unit import unit_of_work

    began = time.perf_counter()
    for start in range(0, count, CHUNK):
        bodies = [
            {"task": "demo.echo", "args": [i], "queue": OURS_MEMORY_QUEUE, "delay": HOUR}
            for i in range(start, min(count, start + CHUNK))
        ]
        rows = env.ledger.tasks.prepare(env.principal(), bodies)
        events = [
            {"task_id": r["id"], "at": r["created_at"], "status": r["status"], "attempt": 0}
            for r in rows
        ]
        with unit_of_work(env.ledger.sessions) as session:
            session.execute(insert(Task), rows)
            session.execute(insert(TaskEvent), events)
    return count / (time.perf_counter() - began)


def publish_raw(env: Environment, count: int) -> float:
    """Publish ``count`` countdown=3600 no-op messages in a Redis pipeline; messages/s."""
    client = env.raw_redis()
    template_queue = RAW_MEMORY_QUEUE + "-template"
    env.raw_app.tasks[NOOP].apply_async(countdown=HOUR, queue=template_queue)
    message = json.loads(client.rpop(template_queue))
    message["properties"]["delivery_info"]["routing_key"] = RAW_MEMORY_QUEUE
    began = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for index in range(count):
        task_id = str(uuid.uuid4())
        message["headers"]["id"] = message["headers"]["root_id"] = task_id
        message["properties"]["correlation_id"] = task_id
        message["properties"]["delivery_tag"] = str(uuid.uuid4())
        pipe.lpush(RAW_MEMORY_QUEUE, json.dumps(message))
        if index % CHUNK == CHUNK - 1:
            pipe.execute()
    pipe.execute()
    return count / (time.perf_counter() - began)


def settled_rss(child: Child, timeout: float = 10.0) -> int:
    """RSS once two samples half a second apart differ by under 0.5% (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    last = child.rss_bytes()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = child.rss_bytes()
        if abs(now - last) <= 0.005 * last:
            return now
        last = now
    return last


def run(env: Environment, plan: Plan) -> list[Row]:
    """Rows 6a and 6b."""
    n = plan.memory_tasks
    worker = Row(
        "6a",
        f"worker RSS growth, {n:,} tasks due in 1 h: ours vs raw countdown=3600",
        "MB",
        target=Target("ratio<=", 0.10),
    )
    scheduler = Row("6b", f"scheduler RSS growth, {n:,} tasks due in 1 h: ours", "MB")
    ours = env.start_worker("ours", "ours-mem", OURS_MEMORY_QUEUE)
    raw = env.start_worker("raw", "raw-mem", RAW_MEMORY_QUEUE)
    try:
        env.wait_ready(ours, raw)
        # Warm both: pool processes import the task code and open their connections.
        queue_ours(env, OURS_MEMORY_QUEUE, 20)
        queue_raw(env, RAW_MEMORY_QUEUE, 20)
        wait_until(
            lambda: (
                celery_pending(env.ours_redis(), [OURS_MEMORY_QUEUE]) == 0
                and celery_pending(env.raw_redis(), [RAW_MEMORY_QUEUE]) == 0
            ),
            60,
            0.05,
            "the warm-up tasks",
        )
        base = {"ours": settled_rss(ours), "raw": settled_rss(raw)}
        base["scheduler"] = settled_rss(env.scheduler)
        created = {"ours": create_ours(env, n), "raw": publish_raw(env, n)}
        began = time.monotonic()
        client = env.raw_redis()
        wait_until(
            lambda: sum(client.llen(k) for k in queue_keys(RAW_MEMORY_QUEUE)) == 0,
            plan.memory_consume_seconds,
            0.2,
            f"the raw worker to take the {n} ETA messages",
        )
        taken = time.monotonic() - began
        held = client.hlen(layout.UNACKED_KEY)
        if held < n:
            raise BenchError(f"the raw worker holds {held} of {n} ETA messages")
        worker.raw.append((settled_rss(raw) - base["raw"]) / MB)
        worker.ours.append((settled_rss(ours) - base["ours"]) / MB)
        scheduler.ours.append((settled_rss(env.scheduler) - base["scheduler"]) / MB)
    finally:
        raw.kill()  # a warm shutdown would first push the held messages back to the queue
        env.retire(raw)
        env.retire(ours)
        env.raw_redis().delete(RAW_MEMORY_QUEUE, layout.UNACKED_KEY, layout.UNACKED_INDEX_KEY)
    worker.note = (
        f"fresh prefork -c 2 workers, warmed with 20 tasks; RSS of main + pool processes; the "
        f"raw worker took {taken:.0f} s to take the {n:,} ETA messages "
        f"(baselines: ours {base['ours'] / MB:.0f} MB, raw {base['raw'] / MB:.0f} MB); created at "
        f"{created['ours']:,.0f}/s (ours, batch insert) and {created['raw']:,.0f}/s (raw, pipeline)"
    )
    return [worker, scheduler]
