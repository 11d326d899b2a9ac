"""Experiment (measurement only, not the product): what each part of an attempt's two
statements costs PostgreSQL.

Row 3f says PostgreSQL spends ~0.76 ms of CPU on each no-op task; this splits that figure. It
submits tasks as the bench does, then runs the worker's own statements for each one from one
connection, back to back (no broker, no Celery): the read (with its unlock and lock) and the
success of an unclaimed attempt, and variants of either with one part taken out or changed.
For each it reports the backend's CPU per task and the client's (psycopg2 and our Python), so
a change to a statement can be judged before it is made.

    python -m bench.experiments.ledger_statements --tasks 3000 --reps 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import psutil

from bench.environment import Environment
from bench.scenarios.execution import queue_ours
from bench.services import cpu_seconds
from scheduler_app.services.clients.service import ClientService
from scheduler_app.services.ledger.connection import LedgerConnection, PreparedStatement
from scheduler_app.services.ledger.transitions import (
    SUCCEED_UNCLAIMED_MOVE,
    Move,
    _named,
    prepared,
)

QUEUE = "low"
WORKER = "statements"
SUCCEED_TYPES = ("uuid", "integer", "text", "timestamptz", "jsonb", "timestamptz", "uuid")


class _NoEvent(Move):
    def _event_sql(self) -> str:
        return "event AS (SELECT 1)"


def _succeed(name: str, move: Move, edit: Callable[[str], str] = lambda s: s) -> PreparedStatement:
    return _named(name, SUCCEED_TYPES, edit(move.sql()))


def _variants(partition: str) -> dict[str, tuple[PreparedStatement | None, PreparedStatement]]:
    """name -> (read or None, success): each is run for every task of one batch."""
    base = prepared()
    read = base.read
    succeed = base.succeed_unclaimed
    return {
        "read + success (the worker's two statements)": (read, succeed),
        "read only (its unlock, the pause guard and the lock)": (read, None),
        "read without the unlock on its round trip": (
            PreparedStatement(read.name, read.types, read.sql),
            None,
        ),
        "success only": (None, succeed),
        "success without its two events": (
            None,
            _succeed("x_noevent", _NoEvent(**_fields(SUCCEED_UNCLAIMED_MOVE))),
        ),
        "success without its run": (
            None,
            _succeed("x_norun", replace(SUCCEED_UNCLAIMED_MOVE, run=None)),
        ),
        "success with events into today's partition directly": (
            None,
            _succeed(
                "x_partition",
                SUCCEED_UNCLAIMED_MOVE,
                lambda s: s.replace("INSERT INTO task_events ", f"INSERT INTO {partition} "),
            ),
        ),
        "success as the UPDATE alone": (
            None,
            _succeed(
                "x_update",
                replace(_NoEvent(**_fields(SUCCEED_UNCLAIMED_MOVE)), run=None),
            ),
        ),
    }


def _fields(move: Move) -> dict:
    return {f: getattr(move, f) for f in move.__dataclass_fields__}


def measure(
    ledger: LedgerConnection,
    ids: list[uuid.UUID],
    read: PreparedStatement | None,
    succeed: PreparedStatement | None,
) -> dict[str, float]:
    conn = ledger._connection()
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        backend = cur.fetchone()[0]
    done = 0
    before = (time.perf_counter(), time.process_time(), cpu_seconds(psutil.Process(backend)))
    for tid in ids:
        now = datetime.now(UTC)
        if read is not None:
            ledger.execute(read, (str(tid), now, None, WORKER))
        if succeed is not None:
            rows = ledger.execute(
                succeed, (str(tid), 1, WORKER, datetime.now(UTC), "null", now, None)
            )
            done += len(rows)
    after = (time.perf_counter(), time.process_time(), cpu_seconds(psutil.Process(backend)))
    if succeed is not None and done != len(ids):
        raise SystemExit(f"{succeed.name}: {done} of {len(ids)} succeeded")
    wall, client, backend_cpu = (b - a for a, b in zip(before, after, strict=True))
    n = len(ids)
    return {
        "wall": wall / n * 1000,
        "client": client / n * 1000,
        "postgres": backend_cpu / n * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    env = Environment(Path(tempfile.mkdtemp(prefix="bench-statements-")))
    env.db.create()
    env._db_created = True
    env.redis.start()
    try:
        env.ledger = env._ledger()
        env.client_uuid = ClientService(env.ledger.sessions).create("stmts", "submitter")[0].id
        ledger = LedgerConnection(env.db.url, synchronous_commit=False)
        with ledger._connection().cursor() as cur:
            cur.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'task_events' "
                "AND pg_get_expr(c.relpartbound, c.oid) LIKE %s",
                (f"%'{datetime.now(UTC):%Y-%m-%d}%",),
            )
            partition = cur.fetchone()[0]
        variants = _variants(partition)
        results: dict[str, list[dict[str, float]]] = {}
        for _ in range(args.reps):
            for name, (read, succeed) in variants.items():
                ids = queue_ours(env, QUEUE, args.tasks)
                results.setdefault(name, []).append(measure(ledger, ids, read, succeed))
                env.ours_redis().flushall()
        print(
            f"| statements per task ({args.tasks} tasks, median of {args.reps}) | wall ms | "
            "CPU ms: client | PostgreSQL backend |"
        )
        print("|---|---|---|---|")
        for name, runs in results.items():
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(f"| {name} | {med['wall']:.3f} | {med['client']:.3f} | {med['postgres']:.3f} |")
    finally:
        env.close()
        env.remove_workdir()


if __name__ == "__main__":
    main()
