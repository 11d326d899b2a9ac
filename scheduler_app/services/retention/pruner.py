"""The pruner: deletes finished tasks (with their runs, events and dead letter) and finished
workflows (with their nodes' tasks) once their retention has passed.

Events stay in their daily partition of ``task_events`` until it is dropped whole
(``partitions.py``); only those in the default partition leave row by row with their task.

Each batch is one short transaction: pick at most ``prune_batch`` rows past their time and not
referenced, ``FOR UPDATE SKIP LOCKED`` (a row someone holds is left for the next pass), delete
them and what goes with them, count them. A pass keeps taking batches while they come back full,
within ``prune_budget`` seconds, so its rate follows the backlog; the scheduler runs a pass every
``prune_interval`` seconds under an advisory lock (one scheduler at a time).

Never pruned, whatever its age: a task that is not in a final state (the state guard of every
candidate query); a workflow's node (it goes with its workflow, never before it); a task a
schedule names as its ``last_task_id``; a failed task whose dead letter is younger than
``dlq_retention_days``; a task with an unfinished replay (``replay_of``); a task whose outcome
has not been handed to its consumers yet; a workflow that is running or has an unfinished or
still-kept node.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app.config import Settings
from scheduler_app.models.base import utcnow
from scheduler_app.services.ledger.unit import unit_of_work
from scheduler_app.services.retention.archive import Archive
from scheduler_app.services.retention.policy import Retention
from scheduler_app.states import TaskStatus

log = logging.getLogger(__name__)

PRUNER_LOCK = 0x5C4ED0A7  # pg advisory lock: one pruner at a time
VACUUM_EVERY = 60.0  # seconds between the pruner's own VACUUMs (prune_vacuum)
# The tables a pass deletes rows from and VACUUMs (task_events' rows go with their partition),
# and task_outcomes, a queue whose every row is deleted once its consumers have it.
VACUUMED = (
    "tasks",
    "runs",
    "dead_letters",
    "workflows",
    "workflow_nodes",
    "deliveries",
    "task_outcomes",
)
# Counters rows (the ``counters`` table) holding how many rows the pruner removed, per table.
COUNTER_PREFIX = "scheduler:pruned:"
TABLES = ("tasks", "task_events", "runs", "dead_letters", "workflows", "deliveries")
# Counters rows of the deliveries that ended and were pruned, per status, so that
# scheduler_webhook_deliveries_total keeps rising (services/metrics/ledger.py).
DELIVERIES_PREFIX = "scheduler:deliveries:"
_PRUNED_DELIVERIES = f"""
dc AS (INSERT INTO counters (key, value)
       SELECT '{DELIVERIES_PREFIX}' || status, count(*) FROM dl
       WHERE status <> 'pending' AND channel = 'webhook' GROUP BY status
       ON CONFLICT (key) DO UPDATE SET value = counters.value + EXCLUDED.value)"""

_TERMINAL = ", ".join(f"'{s.value}'" for s in TaskStatus if s.terminal)
_OPEN = ", ".join(f"'{s.value}'" for s in TaskStatus if not s.terminal)
# The states whose default a task without an override is kept for (one index range each).
_TASK_STATES = (
    TaskStatus.SUCCEEDED,
    TaskStatus.CANCELLED,
    TaskStatus.FAILED,
    TaskStatus.SKIPPED,
    TaskStatus.UPSTREAM_FAILED,
)
_WORKFLOW_STATES = (TaskStatus.SUCCEEDED, TaskStatus.CANCELLED, TaskStatus.FAILED)

# What still refers to a task t (its workflow is handled as a whole: see _WORKFLOW_HELD).
_TASK_HELD = f"""
  AND NOT EXISTS (SELECT 1 FROM tasks r WHERE r.replay_of = t.id AND r.replay_of IS NOT NULL
                  AND r.status IN ({_OPEN}))
  AND (t.schedule_id IS NULL OR NOT EXISTS (
        SELECT 1 FROM schedules s WHERE s.id = t.schedule_id AND s.last_task_id = t.id))
  AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.task_id = t.id
                  AND d.failed_at > :dead_letter_cutoff)
  AND NOT EXISTS (SELECT 1 FROM task_outcomes o WHERE o.task_id = t.id)
  AND NOT EXISTS (SELECT 1 FROM deliveries dv WHERE dv.task_id = t.id
                  AND dv.status = 'pending')"""
# A workflow w is held while one of its nodes is unfinished or held itself.
_WORKFLOW_HELD = f"""
  AND NOT EXISTS (
    SELECT 1 FROM tasks t WHERE t.workflow_id = w.id AND (
      t.status IN ({_OPEN}) OR t.prune_after > :now
      OR EXISTS (SELECT 1 FROM tasks r WHERE r.replay_of = t.id AND r.replay_of IS NOT NULL
                 AND r.status IN ({_OPEN}))
      OR EXISTS (SELECT 1 FROM dead_letters d WHERE d.task_id = t.id
                 AND d.failed_at > :dead_letter_cutoff)
      OR EXISTS (SELECT 1 FROM task_outcomes o WHERE o.task_id = t.id)
      OR EXISTS (SELECT 1 FROM deliveries dv WHERE dv.task_id = t.id
                 AND dv.status = 'pending')))
  AND NOT EXISTS (SELECT 1 FROM deliveries dv WHERE dv.workflow_id = w.id
                  AND dv.task_id IS NULL AND dv.status = 'pending')"""

_DELETE_TASKS = f"""
WITH e AS (DELETE FROM task_events_default WHERE task_id = ANY(CAST(:ids AS uuid[]))
           RETURNING 1),
r AS (DELETE FROM runs WHERE task_id = ANY(CAST(:ids AS uuid[])) RETURNING 1),
d AS (DELETE FROM dead_letters WHERE task_id = ANY(CAST(:ids AS uuid[])) RETURNING 1),
dl AS (DELETE FROM deliveries WHERE task_id = ANY(CAST(:ids AS uuid[]))
       RETURNING status, channel),{_PRUNED_DELIVERIES},
t AS (DELETE FROM tasks WHERE id = ANY(CAST(:ids AS uuid[]))
      RETURNING queue, task, status, greatest(attempts - 1, 0) AS retries),
p AS (INSERT INTO pruned_tasks (queue, task, status, tasks, retries)
      SELECT queue, task, status, count(*), sum(retries) FROM t GROUP BY 1, 2, 3
      ON CONFLICT (queue, task, status) DO UPDATE
      SET tasks = pruned_tasks.tasks + EXCLUDED.tasks,
          retries = pruned_tasks.retries + EXCLUDED.retries)
SELECT (SELECT count(*) FROM t) AS tasks, (SELECT count(*) FROM e) AS task_events,
       (SELECT count(*) FROM r) AS runs, (SELECT count(*) FROM d) AS dead_letters,
       (SELECT count(*) FROM dl) AS deliveries
"""
# A workflow's own deliveries (workflow.succeeded…), which name no task.
_DELETE_WORKFLOW_DELIVERIES = f"""
WITH dl AS (DELETE FROM deliveries WHERE workflow_id = ANY(CAST(:ids AS uuid[]))
            AND task_id IS NULL RETURNING status, channel),{_PRUNED_DELIVERIES}
SELECT count(*) FROM dl
"""


def _guard_removed() -> bool:
    # Negative control of tests/e2e/test_retention.py: candidates chosen by age alone, without
    # the final-state guard (a naive pruner), which the tests must catch deleting live tasks.
    return os.environ.get("SCHEDULER_TEST_REMOVE") == "prune_terminal_guard"


@dataclass(frozen=True)
class _Query:
    """One candidate query: the rows of one kind, past their time, oldest first."""

    name: str
    sql: str
    cutoff: float | None  # seconds before now (a state default); None: prune_after


def _task_queries(retention: Retention) -> list[_Query]:
    queries = []
    for status in _TASK_STATES:
        where = (
            f"t.status = '{status.value}' AND t.retention IS NULL AND t.workflow_id IS NULL"
            " AND t.finished_at < :cutoff"
        )
        order = "t.finished_at"
        if status is TaskStatus.SUCCEEDED and _guard_removed():
            where = (
                "t.retention IS NULL AND t.workflow_id IS NULL"
                " AND coalesce(t.finished_at, t.created_at) < :cutoff"
            )
            order = "t.created_at"
        queries.append(
            _Query(
                f"tasks:{status.value}",
                f"SELECT t.id FROM tasks t WHERE {where}{_TASK_HELD}\n"
                f"ORDER BY {order} LIMIT :n FOR UPDATE OF t SKIP LOCKED",
                retention.of(status),
            )
        )
    queries.append(
        _Query(
            "tasks:override",
            "SELECT t.id FROM tasks t WHERE t.prune_after < :now AND t.prune_after IS NOT NULL"
            f" AND t.workflow_id IS NULL AND t.status IN ({_TERMINAL}){_TASK_HELD}\n"
            "ORDER BY t.prune_after LIMIT :n FOR UPDATE OF t SKIP LOCKED",
            None,
        )
    )
    return queries


def _workflow_queries(retention: Retention) -> list[_Query]:
    queries = [
        _Query(
            f"workflows:{status.value}",
            f"SELECT w.id FROM workflows w WHERE w.status = '{status.value}'"
            f" AND w.retention IS NULL AND w.finished_at < :cutoff{_WORKFLOW_HELD}\n"
            "ORDER BY w.finished_at LIMIT :n FOR UPDATE OF w SKIP LOCKED",
            retention.of(status),
        )
        for status in _WORKFLOW_STATES
    ]
    queries.append(
        _Query(
            "workflows:override",
            "SELECT w.id FROM workflows w WHERE w.prune_after < :now"
            f" AND w.prune_after IS NOT NULL AND w.status <> 'running'{_WORKFLOW_HELD}\n"
            "ORDER BY w.prune_after LIMIT :n FOR UPDATE OF w SKIP LOCKED",
            None,
        )
    )
    return queries


class Pruner:
    """Removes what is past its retention, in bounded batches (see the module docstring)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        *,
        stop: threading.Event | None = None,
    ) -> None:
        self.sessions = sessions
        self.stop = stop or threading.Event()  # set: the pass ends after its current batch
        self.settings = settings
        self.retention = Retention.from_settings(settings)
        self.archive = Archive(settings.archive_dir) if settings.archive_dir else None
        self.batch = settings.prune_batch
        self.budget = settings.prune_budget
        self.backlog = False  # the last pass stopped on its budget with work left
        self._vacuumed_at = 0.0

    def run(self, now: datetime | None = None) -> Counter[str]:
        """One pass if no other process is pruning (pg advisory lock); rows removed per table."""
        with self.sessions.kw["bind"].connect() as conn:
            locked = conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": PRUNER_LOCK})
            conn.commit()  # the lock is the connection's: hold no transaction meanwhile
            if not locked:
                return Counter()
            try:
                removed = self.prune(now)
                # Even a pass that pruned nothing: task_outcomes is a queue (a row in and out
                # per ended task) and every move leaves a dead version of its task's row.
                if not self.stop.is_set():
                    self.vacuum(conn)
                return removed
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PRUNER_LOCK})
                conn.commit()

    def vacuum(self, conn: Connection) -> bool:
        """VACUUM the pruned tables, as ``prune_vacuum`` says, at most every VACUUM_EVERY
        seconds; True if it did. With autovacuum off, deleted rows' space is never reused."""
        mode = self.settings.prune_vacuum
        if mode == "never" or time.monotonic() - self._vacuumed_at < VACUUM_EVERY:
            return False
        if mode == "auto" and conn.scalar(text("SHOW autovacuum")) == "on":
            conn.commit()
            return False
        conn.commit()
        self._vacuumed_at = time.monotonic()
        started = time.monotonic()
        # VACUUM cannot run in a transaction block: this connection, in autocommit from here
        # on (the pool resets it when the connection goes back).
        conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.exec_driver_sql(f"VACUUM (SKIP_LOCKED) {', '.join(VACUUMED)}")
        log.info("vacuumed", extra={"tables": VACUUMED, "seconds": time.monotonic() - started})
        return True

    def prune(self, now: datetime | None = None) -> Counter[str]:
        """Delete batches while they come back full, within the time budget; ``now`` is the
        clock (injected by tests). Returns the rows removed per table."""
        removed: Counter[str] = Counter()
        started = time.monotonic()
        self.backlog = False
        for query in _task_queries(self.retention) + _workflow_queries(self.retention):
            # A workflow brings up to WORKFLOW_NODES_MAX tasks along: fewer per batch.
            size = self.batch if query.name.startswith("tasks:") else max(1, self.batch // 20)
            while True:
                moment = now or utcnow()
                taken = self._batch(query, moment, size, removed)
                if taken < size or self.stop.is_set():
                    break
                if time.monotonic() - started > self.budget:
                    self.backlog = True  # full batches still coming: the next pass soon
                    break
            if self.backlog or self.stop.is_set():
                break
        if removed:
            log.info("pruned", extra={"removed": dict(removed)})
        return removed

    def _params(self, query: _Query, now: datetime, size: int) -> dict[str, object]:
        cutoff = now - timedelta(seconds=query.cutoff) if query.cutoff is not None else now
        return {
            "now": now,
            "cutoff": cutoff,
            "dead_letter_cutoff": now - timedelta(seconds=self.retention.dead_letter),
            "n": size,
        }

    def _batch(self, query: _Query, now: datetime, size: int, removed: Counter[str]) -> int:
        with unit_of_work(self.sessions) as session:
            params = self._params(query, now, size)
            picked = [str(i) for i in session.scalars(text(query.sql), params)]
            if not picked:
                return 0
            counts: Counter[str] = Counter()
            if query.name.startswith("workflows:"):
                tasks = [
                    str(i)
                    for i in session.scalars(
                        text("SELECT id FROM tasks WHERE workflow_id = ANY(CAST(:ids AS uuid[]))"),
                        {"ids": picked},
                    )
                ]
                if self.archive is not None:
                    self.archive.workflows(session, picked, now)
                counts += self._delete_tasks(session, tasks, now)
                counts["deliveries"] += session.execute(
                    text(_DELETE_WORKFLOW_DELIVERIES), {"ids": picked}
                ).scalar_one()
                counts["workflows"] = session.execute(
                    text("DELETE FROM workflows WHERE id = ANY(CAST(:ids AS uuid[]))"),
                    {"ids": picked},
                ).rowcount
            else:
                counts += self._delete_tasks(session, picked, now)
            count_pruned(session, counts)
            removed.update(counts)
            return len(picked)

    def _delete_tasks(self, session: Session, ids: list[str], now: datetime) -> Counter[str]:
        if not ids:
            return Counter()
        if self.archive is not None:
            self.archive.tasks(session, ids, now)  # durable before the rows go
        row = session.execute(text(_DELETE_TASKS), {"ids": ids}).one()
        return Counter({k: int(v) for k, v in row._mapping.items()})


def count_pruned(session: Session, counts: Counter[str]) -> None:
    """Add ``counts`` (rows per table) to the pruned counters, in the caller's transaction."""
    rows = [
        {"key": COUNTER_PREFIX + table, "by": n}
        for table, n in counts.items()
        if n and table in TABLES
    ]
    if rows:
        session.execute(
            text(
                "INSERT INTO counters (key, value) VALUES (:key, :by) ON CONFLICT (key) "
                "DO UPDATE SET value = counters.value + EXCLUDED.value"
            ),
            rows,
        )


def ledger_figures(sessions: sessionmaker[Session]) -> dict[str, dict[str, int]]:
    """For /metrics: ``{"pruned": {table: rows removed, ever}, "rows": {table: rows now}}``.

    ``scheduler_pruned_total{table}`` and ``scheduler_ledger_rows{table}``; events pruned
    count those deleted with their task and those of dropped partitions (ANALYZE's estimate).
    Rows are the planner's estimate (pg_class.reltuples, summed over a partitioned table's
    partitions, kept fresh by autovacuum): a count(*) of a large ledger costs more than a scrape.
    """
    with sessions() as session:
        pruned = dict.fromkeys(TABLES, 0)
        for key, value in session.execute(
            text("SELECT key, value FROM counters WHERE key LIKE :prefix"),
            {"prefix": COUNTER_PREFIX + "%"},
        ):
            table = key[len(COUNTER_PREFIX) :]
            if table in pruned:
                pruned[table] = int(value)
        rows = dict.fromkeys(TABLES, 0)
        for name, estimate in session.execute(
            text(
                "SELECT coalesce(p.relname, c.relname) AS name,"
                " sum(greatest(c.reltuples, 0))::bigint AS estimate"
                " FROM pg_class c"
                " LEFT JOIN pg_inherits i ON i.inhrelid = c.oid"
                " LEFT JOIN pg_class p ON p.oid = i.inhparent"
                " WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace"
                " AND coalesce(p.relname, c.relname) = ANY(:tables)"
                " GROUP BY 1"
            ),
            {"tables": list(TABLES)},
        ):
            rows[name] = int(estimate)
        return {"pruned": pruned, "rows": rows}
