"""Experiment (measurement only, not the product): what batching across messages would buy.

Issue #15's path to 1.0 names batching across messages; Celery's pools cannot do it (each
pool process holds one message at a time; see bench/README.md). This is the smallest consumer of
our own that does, to measure the ceiling before anyone builds one: per round of K messages it
pops them (one Redis pipeline over the queue's priority lists, highest first), records their
unacked entries as kombu does (one MULTI pipeline), reads and locks their attempts (one
statement: the worker's own read over an array, pauses and expiry included), runs
``demo.echo``, records K successes with both events and the run (one statement), acks them
(one MULTI pipeline).
Against raw Celery ``-P solo`` draining as many no-op tasks, alternating, in the same run.

Left out, so a ceiling and not a design: failures and retries, time limits, heartbeats, the
lazy claim of long attempts, logging, metrics, the outcome seam's hand-over, shutdown.

    python -m bench.experiments.batch_consumer --tasks 3000 --batch 1 4 16 64 --reps 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg2

from bench.environment import RAW_DB, RAW_RESULT_DB, Environment
from bench.raw_app import make_raw_app
from bench.scenarios.execution import drain, queue_ours
from bench.services import cpu_seconds
from scheduler_app.services.broker.layout import UNACKED_INDEX_KEY, UNACKED_KEY, queue_keys
from scheduler_app.services.clients.service import ClientService
from scheduler_app.services.ledger.connection import connect_kwargs
from scheduler_app.services.ledger.transitions import _sources, read_sql
from scheduler_app.states import TaskStatus
from scheduler_app.task_types import load_task_modules

QUEUE = "low"  # one of the bench settings' queues; nothing else consumes it here
RAW_QUEUE = "raw-batch"
WORKER = "batch"
# The worker's own read (guards, pauses, the attempt's lock) over an array of ids.
READ = "PREPARE batch_read (uuid[], timestamptz, integer, text) AS " + read_sql().replace(
    "WHERE id = $1", "WHERE id = ANY($1)"
)
SUCCEED = f"""PREPARE batch_succeed (uuid[], int[], timestamptz[], timestamptz[], jsonb[]) AS
WITH input AS (
  SELECT * FROM unnest($1, $2, $3, $4, $5) AS i (id, attempt, started, finished, result)
), moved AS (
  UPDATE tasks t SET status = 'succeeded', attempts = i.attempt,
    started_at = coalesce(t.started_at, i.started), finished_at = i.finished, result = i.result,
    error_type = NULL, error_message = NULL,
    prune_after = clock_timestamp() + t.retention * interval '1 second'
  FROM input i
  WHERE t.id = i.id AND (t.status IN ({_sources(TaskStatus.RUNNING)})) IS TRUE
    AND t.attempts = i.attempt - 1
  RETURNING t.id, t.attempts, i.started, i.finished
), event AS (
  INSERT INTO task_events (task_id, at, status, attempt, worker, detail)
  SELECT id, step.at, step.status, attempts, '{WORKER}', NULL
  FROM moved, LATERAL (VALUES (moved.started, 'running'), (moved.finished, 'succeeded'))
    AS step (at, status)
), run AS (
  INSERT INTO runs (task_id, attempt, worker, status, started_at, finished_at)
  SELECT id, attempts, '{WORKER}', 'succeeded', started, finished FROM moved
)
SELECT id FROM moved"""


def consume(database_url: str, broker, batch: int, expected: int, run) -> dict[str, float]:
    """Drain QUEUE in rounds of ``batch``; rate and CPU per task (consumer, its backend, Redis)."""
    conn = psycopg2.connect(**connect_kwargs(database_url), options="-c synchronous_commit=off")
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT pg_backend_pid()")
    backend = cur.fetchone()[0]
    cur.execute(READ)
    cur.execute(SUCCEED)
    keys = queue_keys(QUEUE)
    redis_pid = int(broker.info("server")["process_id"])
    done = 0
    before = (
        time.perf_counter(),
        time.process_time(),
        cpu_seconds(psutil.Process(backend)),
        cpu_seconds(psutil.Process(redis_pid)),
    )
    while True:
        pop = broker.pipeline(transaction=False)
        for key in keys:
            pop.rpop(key, batch)
        raw: list[bytes] = []
        for popped in pop.execute():
            raw.extend(popped or [])
        if not raw:
            break  # (a real consumer would also push back what it popped beyond ``batch``)
        messages = [json.loads(m) for m in raw]
        tags = [m["properties"]["delivery_tag"] for m in messages]
        bookkeeping = broker.pipeline()
        for tag, payload in zip(tags, raw, strict=True):
            bookkeeping.zadd(UNACKED_INDEX_KEY, {tag: time.time()})
            bookkeeping.hset(UNACKED_KEY, tag, payload)
        bookkeeping.execute()
        started = datetime.now(UTC)
        cur.execute(
            "SELECT pg_advisory_unlock_all(); EXECUTE batch_read (%s::uuid[], %s, NULL, %s)",
            ([m["headers"]["id"] for m in messages], started, WORKER),
        )
        columns: tuple[list, ...] = ([], [], [], [], [])
        for task_id, attempt, _task, args, kwargs, *_spec, locked in cur.fetchall():
            if not locked:
                continue
            result = run(*(args or []), **(kwargs or {}))
            row = (task_id, attempt, started, datetime.now(UTC), json.dumps(result))
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        cur.execute(
            "EXECUTE batch_succeed (%s::uuid[], %s::int[], %s::timestamptz[], "
            "%s::timestamptz[], %s::jsonb[])",
            columns,
        )
        done += len(cur.fetchall())
        ack = broker.pipeline()
        for tag in tags:
            ack.zrem(UNACKED_INDEX_KEY, tag)
            ack.hdel(UNACKED_KEY, tag)
        ack.execute()
    after = (
        time.perf_counter(),
        time.process_time(),
        cpu_seconds(psutil.Process(backend)),
        cpu_seconds(psutil.Process(redis_pid)),
    )
    conn.close()
    if done != expected:
        raise SystemExit(f"batch {batch}: {done} of {expected} tasks succeeded")
    wall, consumer, postgres, redis_cpu = (b - a for a, b in zip(before, after, strict=True))
    return {
        "rate": done / wall,
        "consumer": consumer / done * 1000,
        "postgres": postgres / done * 1000,
        "redis": redis_cpu / done * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    env = Environment(Path(tempfile.mkdtemp(prefix="bench-batch-")))
    env.db.create()
    env._db_created = True
    env.redis.start()
    try:
        env.ledger = env._ledger()
        env.raw_app = make_raw_app(env.redis.url_of(RAW_DB), env.redis.url_of(RAW_RESULT_DB))
        env.client_uuid = ClientService(env.ledger.sessions).create("batch", "submitter")[0].id
        echo = load_task_modules(env.ledger.settings.task_modules)["demo.echo"].fn
        raw = env.start_worker("raw", "raw-solo", RAW_QUEUE, "solo", 1)
        env.wait_ready(raw)
        results: dict[str, list[dict[str, float]]] = {}
        for _ in range(args.reps):
            for batch in args.batch:
                queue_ours(env, QUEUE, args.tasks)
                results.setdefault(f"ours, batch {batch}", []).append(
                    consume(env.db.url, env.ours_redis(), batch, args.tasks, echo)
                )
            result, per_task, _ = drain(env, "raw", [raw], RAW_QUEUE, args.tasks)
            results.setdefault("raw Celery -P solo", []).append(
                {"rate": result.rate, "consumer": per_task}
            )
        print(
            f"| consumer ({args.tasks} tasks, median of {args.reps}) | tasks/s | CPU ms a task: "
            "consumer | PostgreSQL backend | Redis |"
        )
        print("|---|---|---|---|---|")
        for name, runs in results.items():
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            cells = [f"{med['rate']:,.0f}", f"{med['consumer']:.3f}"]
            cells += [f"{med[k]:.3f}" if k in med else "-" for k in ("postgres", "redis")]
            print(f"| {name} | " + " | ".join(cells) + " |")
    finally:
        env.close()
        env.remove_workdir()


if __name__ == "__main__":
    main()
