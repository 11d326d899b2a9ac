"""Experiment (measurement only, not the product): what batching across messages would buy.

Issue #15's path to 1.0 names batching across messages; Celery's pools cannot do it (each
pool process holds one message at a time; see bench/README.md). This is the smallest consumer of
our own that does, to measure the ceiling before anyone builds one: per round of K messages it
pops them (one Redis pipeline over the queue's priority lists, highest first), records their
unacked entries as kombu does (one MULTI pipeline), reads and locks their attempts (one
statement: the worker's read, pauses and expiry included), runs ``demo.echo``, records K
successes with both events and the run (one statement), acks them (one MULTI pipeline).
Against raw Celery ``-P solo`` draining as many no-op tasks, alternating, in the same run.

Left out, so a ceiling and not a design: failures and retries, time limits, heartbeats, the
lazy claim of long attempts, logging, metrics, the outcome seam's hand-over, shutdown.

    python -m bench.experiments.batch_consumer --tasks 3000 --batch 1 4 16 64 --reps 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg2

from bench.raw_app import NOOP, make_raw_app
from scheduler_app.services.broker.layout import UNACKED_INDEX_KEY, UNACKED_KEY, queue_keys
from scheduler_app.services.ledger.connection import connect_kwargs
from scheduler_app.task_types import load_task_modules

QUEUE = "low"  # one of the bench settings' queues; nothing else consumes it here
RAW_QUEUE = "raw-batch"
READ = """PREPARE batch_read (uuid[], timestamptz) AS
SELECT id, attempts + 1, task, args, kwargs,
  CASE WHEN (status IN ('queued', 'retrying', 'scheduled')) IS TRUE
    AND (expires_at IS NULL OR expires_at > $2)
    AND NOT EXISTS (SELECT 1 FROM pauses WHERE (scope = 'queue' AND name = tasks.queue)
                    OR (scope = 'worker' AND name = 'batch'))
  THEN pg_try_advisory_lock(hashtextextended(id::text, attempts + 1)) END
FROM tasks WHERE id = ANY($1)"""
SUCCEED = """PREPARE batch_succeed (uuid[], int[], timestamptz[], timestamptz[], jsonb[]) AS
WITH input AS (
  SELECT * FROM unnest($1, $2, $3, $4, $5) AS i (id, attempt, started, finished, result)
), moved AS (
  UPDATE tasks t SET status = 'succeeded', attempts = i.attempt,
    started_at = coalesce(t.started_at, i.started), finished_at = i.finished, result = i.result,
    error_type = NULL, error_message = NULL,
    prune_after = clock_timestamp() + t.retention * interval '1 second'
  FROM input i
  WHERE t.id = i.id AND (t.status IN ('queued', 'retrying', 'scheduled')) IS TRUE
    AND t.attempts = i.attempt - 1
  RETURNING t.id, t.attempts, i.started, i.finished
), event AS (
  INSERT INTO task_events (task_id, at, status, attempt, worker, detail)
  SELECT id, step.at, step.status, attempts, 'batch', NULL
  FROM moved, LATERAL (VALUES (moved.started, 'running'), (moved.finished, 'succeeded'))
    AS step (at, status)
), run AS (
  INSERT INTO runs (task_id, attempt, worker, status, started_at, finished_at)
  SELECT id, attempts, 'batch', 'succeeded', started, finished FROM moved
)
SELECT id FROM moved"""


def _cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def submit(ledger, principal, count: int) -> None:
    """Queue ``count`` demo.echo tasks through the submission service (ledger rows + messages)."""
    for start in range(0, count, 1000):
        bodies = [
            {"task": "demo.echo", "args": [i], "queue": QUEUE}
            for i in range(start, min(count, start + 1000))
        ]
        ledger.submit(principal, bodies)


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
    before = (time.perf_counter(), time.process_time(), _cpu(backend), _cpu(redis_pid))
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
            "SELECT pg_advisory_unlock_all(); EXECUTE batch_read (%s::uuid[], %s)",
            ([m["headers"]["id"] for m in messages], started),
        )
        columns: tuple[list, ...] = ([], [], [], [], [])
        for task_id, attempt, _task, args, kwargs, locked in cur.fetchall():
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
    after = (time.perf_counter(), time.process_time(), _cpu(backend), _cpu(redis_pid))
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


def raw_solo(broker_url: str, broker, count: int, logdir: Path) -> dict[str, float]:
    """Raw Celery ``-P solo``: ``count`` no-ops queued, then one worker started; its drain."""
    app = make_raw_app(broker_url)
    with app.producer_or_acquire() as producer:
        for index in range(count):
            app.tasks[NOOP].apply_async(args=[index], queue=RAW_QUEUE, producer=producer)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCHEDULER_", "BENCH_"))}
    env["BENCH_BROKER_URL"] = broker_url
    argv = [sys.executable, "-m", "celery", "-A", "bench.raw_worker", "worker", "-Q", RAW_QUEUE]
    argv += ["-P", "solo", "-c", "1", "--hostname", f"raw-{uuid.uuid4().hex[:4]}@%h"]
    argv += ["--without-mingle", "--without-gossip", "--loglevel", "INFO"]
    with open(logdir / "raw-solo.log", "a") as log:
        worker = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    def pending() -> int:
        lists = sum(broker.llen(k) for k in broker.scan_iter(f"{RAW_QUEUE}*"))
        return lists + broker.hlen(UNACKED_KEY)

    try:
        while pending() >= count - 5:  # the clock starts at the first completions
            time.sleep(0.005)
        left, start, cpu = pending(), time.perf_counter(), _cpu(worker.pid)
        while pending():
            time.sleep(0.005)
        wall, used = time.perf_counter() - start, _cpu(worker.pid) - cpu
    finally:
        worker.terminate()
        worker.wait(30)
    return {"rate": left / wall, "consumer": used / left * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    from bench.environment import RAW_DB, Environment  # the bench's own ledger wiring

    workdir = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    env = Environment(workdir)
    env.db.create()
    env.redis.start()
    try:
        env.ledger = env._ledger()
        from scheduler_app.services.clients.principal import Principal, Role
        from scheduler_app.services.clients.service import ClientService

        client, _ = ClientService(env.ledger.sessions).create("batch", "submitter")
        principal = Principal(client.id, Role.SUBMITTER)
        echo = load_task_modules(env.ledger.settings.task_modules)["demo.echo"].fn
        broker = env.ours_redis()
        raw_url = env.redis.url_of(RAW_DB)
        raw_broker = env.redis.client(RAW_DB)
        results: dict[str, list[dict[str, float]]] = {}
        for _ in range(args.reps):
            for batch in args.batch:
                submit(env.ledger.tasks, principal, args.tasks)
                results.setdefault(f"ours, batch {batch}", []).append(
                    consume(env.db.url, broker, batch, args.tasks, echo)
                )
            results.setdefault("raw Celery -P solo", []).append(
                raw_solo(raw_url, raw_broker, args.tasks, env.logdir)
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
        env.redis.stop()
        env.db.drop()


if __name__ == "__main__":
    main()
