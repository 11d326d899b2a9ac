"""Metrics read from the ledger at scrape time: one statement, cached for a moment.

The ledger is the truth every API process shares, so a series computed from it is the same
whichever gunicorn process answers the scrape, and exact: ``scheduler_tasks_submitted_total``
is the number of task rows, ``scheduler_tasks_finished_total`` the number that ended in each
terminal state, ``scheduler_task_retries_total`` the attempts that were followed by another.
Nothing is counted on the hot path. The pruner adds the tasks it deletes to ``pruned_tasks`` in
the statement that deletes them, and the counters are the ledger's rows plus those, so they only
rise.

Each source of rows is one :class:`LedgerQuery` in :data:`LEDGER_QUERIES`; the collector joins
them with ``UNION ALL`` into the one statement a scrape runs. A new source (the stored queue
pauses, the webhook deliveries) is one more entry and one more family in :func:`families`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app.services.retention.pruner import COUNTER_PREFIX, DELIVERIES_PREFIX, TABLES
from scheduler_app.states import TERMINAL, TaskStatus

log = logging.getLogger(__name__)

# An instance that has not beaten for this long is not counted at all (offline for good).
OFFLINE_HORIZON_SECONDS = 3600

_ONLINE = (
    "stopped_at IS NULL AND last_seen > clock_timestamp() - make_interval(secs => :worker_timeout)"
)
_WAITING = (
    "status = 'queued' OR (status IN ('scheduled', 'retrying') AND run_at <= clock_timestamp())"
)


@dataclass(frozen=True)
class LedgerQuery:
    """One source of rows: a SELECT of (queue, task, status, value, extra), text or NULL."""

    kind: str
    sql: str


# The sources a scrape reads, in one statement. A new source (the webhook deliveries, say) is one
# more entry here and one more family in families().
LEDGER_QUERIES: list[LedgerQuery] = [
    # Every task by queue, type and state; extra = the retries its attempts so far imply.
    LedgerQuery(
        "tasks",
        "SELECT queue, task, status, count(*), sum(greatest(attempts - 1, 0)"
        " + CASE WHEN status = 'retrying' THEN 1 ELSE 0 END) FROM tasks GROUP BY 1, 2, 3",
    ),
    # Waiting and due (the depth a worker could take now); extra = the oldest one's age.
    LedgerQuery(
        "waiting",
        "SELECT queue, NULL, NULL, count(*), extract(epoch FROM clock_timestamp() - min(run_at))"
        f" FROM tasks WHERE {_WAITING} GROUP BY 1",
    ),
    # Tasks the pruner removed (services/retention/pruner.py), so the counters keep rising.
    LedgerQuery("pruned", "SELECT queue, task, status, tasks, retries FROM pruned_tasks"),
    # Rows the pruner removed per table, and the tables' sizes (the planner's estimate).
    LedgerQuery(
        "pruned_rows",
        f"SELECT substr(key, {len(COUNTER_PREFIX) + 1}), NULL, NULL, value, NULL FROM counters"
        f" WHERE key LIKE '{COUNTER_PREFIX}%'",
    ),
    LedgerQuery(
        "ledger_rows",
        "SELECT coalesce(p.relname, c.relname), NULL, NULL, sum(greatest(c.reltuples, 0)), NULL"
        " FROM pg_class c LEFT JOIN pg_inherits i ON i.inhrelid = c.oid"
        " LEFT JOIN pg_class p ON p.oid = i.inhparent"
        " WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace"
        f" AND coalesce(p.relname, c.relname) IN ({', '.join(repr(t) for t in TABLES)})"
        " GROUP BY 1",
    ),
    # Webhook deliveries that ended, by result (delivered | failed), the pruned ones included.
    LedgerQuery(
        "deliveries",
        "SELECT NULL, NULL, status, sum(n), NULL FROM (SELECT status, count(*) AS n"
        " FROM deliveries WHERE status <> 'pending' AND channel = 'webhook' GROUP BY 1"
        f" UNION ALL SELECT substr(key, {len(DELIVERIES_PREFIX) + 1}), value FROM counters"
        f" WHERE key LIKE '{DELIVERIES_PREFIX}%') AS d GROUP BY 3",
    ),
    LedgerQuery(
        "dead_letters",
        "SELECT queue, NULL, NULL, count(*), NULL FROM dead_letters GROUP BY 1",
    ),
    # Worker instances seen within the horizon, online or offline.
    LedgerQuery(
        "workers",
        f"SELECT NULL, NULL, CASE WHEN NOT ({_ONLINE}) THEN 'offline' WHEN EXISTS (SELECT 1"
        " FROM pauses p WHERE p.scope = 'worker' AND p.name = w.name) THEN 'paused'"
        " ELSE 'online' END, count(*), NULL FROM worker_instances w"
        f" WHERE last_seen > clock_timestamp() - interval '{OFFLINE_HORIZON_SECONDS} seconds'"
        " GROUP BY 3",
    ),
    # Online capacity per queue: value = processes (sum of concurrency), extra = instances.
    # Stored queue pauses (services/workers/controls.py).
    LedgerQuery("paused", "SELECT name, NULL, NULL, 1, NULL FROM pauses WHERE scope = 'queue'"),
    LedgerQuery(
        "capacity",
        "SELECT q, NULL, NULL, sum(concurrency), count(*)"
        f" FROM worker_instances, unnest(queues) AS q WHERE {_ONLINE} GROUP BY 1",
    ),
]


def statement(queries: Sequence[LedgerQuery]) -> str:
    """The one SELECT a scrape runs: every source tagged with its kind."""
    parts = [
        f"SELECT '{q.kind}'::text AS kind, s.queue::text, s.task::text, s.status::text,"
        f" s.value::float8, s.extra::float8"
        f" FROM ({q.sql}) AS s(queue, task, status, value, extra)"
        for q in queries
    ]
    return "\nUNION ALL\n".join(parts)


@dataclass(frozen=True)
class Row:
    kind: str
    queue: str | None
    task: str | None
    status: str | None
    value: float
    extra: float | None


def families(rows: Iterable[Row], queues: Iterable[str], default_concurrency: int) -> list[Metric]:
    """The metric families of one scrape's rows (``queues``: those the configuration knows)."""
    by_kind: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_kind[row.kind].append(row)
    known = set(queues) | {r.queue for r in by_kind["tasks"] if r.queue}

    submitted = CounterMetricFamily(
        "scheduler_tasks_submitted",
        "Tasks created (the ledger's rows and the pruned ones).",
        labels=["queue", "task"],
    )
    finished = CounterMetricFamily(
        "scheduler_tasks_finished",
        "Tasks that reached a terminal state.",
        labels=["queue", "task", "status"],
    )
    retries = CounterMetricFamily(
        "scheduler_task_retries", "Failed attempts followed by another.", labels=["queue", "task"]
    )
    tasks = GaugeMetricFamily(
        "scheduler_tasks", "Tasks in the ledger by state.", labels=["queue", "status"]
    )
    per_type: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    per_state: dict[tuple[str, str], float] = defaultdict(float)
    running: dict[str, float] = defaultdict(float)
    ended: dict[tuple[str, str, str], float] = defaultdict(float)
    # The counters: tasks in the ledger plus those the pruner removed.
    for r in by_kind["tasks"] + by_kind["pruned"]:
        per_type[(r.queue, r.task)][0] += r.value
        per_type[(r.queue, r.task)][1] += r.extra or 0.0
        if r.status in _TERMINAL:
            ended[(r.queue, r.task, r.status)] += r.value
    for r in by_kind["tasks"]:
        per_state[(r.queue, r.status)] += r.value
        if r.status == TaskStatus.RUNNING:
            running[r.queue] += r.value
    for labels, count in sorted(ended.items()):
        finished.add_metric(list(labels), count)
    for (queue, task), (count, retried) in sorted(per_type.items()):
        submitted.add_metric([queue, task], count)
        retries.add_metric([queue, task], retried)
    for queue in sorted(known):
        for status in TaskStatus:
            tasks.add_metric([queue, status.value], per_state.get((queue, status.value), 0.0))

    depth = GaugeMetricFamily(
        "scheduler_queue_depth", "Tasks due and waiting for a worker.", labels=["queue"]
    )
    oldest = GaugeMetricFamily(
        "scheduler_queue_oldest_age_seconds",
        "Age of the oldest due task still waiting (0 when none).",
        labels=["queue"],
    )
    waiting = {r.queue: r for r in by_kind["waiting"]}
    for queue in sorted(known | waiting.keys()):
        row = waiting.get(queue)
        depth.add_metric([queue], row.value if row else 0.0)
        oldest.add_metric([queue], max(0.0, row.extra or 0.0) if row else 0.0)

    paused = GaugeMetricFamily(
        "scheduler_queue_paused", "1 while the queue is paused (stored pause).", labels=["queue"]
    )
    paused_queues = {r.queue for r in by_kind["paused"] if r.value}
    for queue in sorted(known | paused_queues):
        paused.add_metric([queue], 1.0 if queue in paused_queues else 0.0)

    dead = GaugeMetricFamily(
        "scheduler_dead_letters", "Dead letters kept (failed tasks).", labels=["queue"]
    )
    dead_rows = {r.queue: r.value for r in by_kind["dead_letters"]}
    for queue in sorted(known | dead_rows.keys()):
        dead.add_metric([queue], dead_rows.get(queue, 0.0))

    workers = GaugeMetricFamily(
        "scheduler_workers", "Worker instances seen in the last hour.", labels=["status"]
    )
    worker_rows = {r.status: r.value for r in by_kind["workers"]}
    for status in WORKER_STATUSES:
        workers.add_metric([status], worker_rows.get(status, 0.0))

    required = GaugeMetricFamily(
        "scheduler_required_workers",
        "Workers needed for the queue's work: ceil((depth + running) / concurrency).",
        labels=["queue"],
    )
    capacity = {r.queue: r for r in by_kind["capacity"]}
    for queue in sorted(known):
        row = capacity.get(queue)
        per_worker = row.value / row.extra if row and row.extra else default_concurrency
        work = (waiting[queue].value if queue in waiting else 0.0) + running.get(queue, 0.0)
        required.add_metric([queue], float(math.ceil(work / max(per_worker, 1.0))))

    queue_workers = GaugeMetricFamily(
        "scheduler_queue_workers", "Online worker instances consuming the queue.", labels=["queue"]
    )
    for queue in sorted(known | capacity.keys()):
        row = capacity.get(queue)
        queue_workers.add_metric([queue], row.extra or 0.0 if row else 0.0)

    pruned = CounterMetricFamily(
        "scheduler_pruned", "Rows the retention pruner removed.", labels=["table"]
    )
    rows_now = GaugeMetricFamily(
        "scheduler_ledger_rows", "Rows in the ledger's tables (estimate).", labels=["table"]
    )
    removed = {r.queue: r.value for r in by_kind["pruned_rows"]}
    estimate = {r.queue: r.value for r in by_kind["ledger_rows"]}
    for table in TABLES:
        pruned.add_metric([table], removed.get(table, 0.0))
        rows_now.add_metric([table], estimate.get(table, 0.0))

    out: list[Metric] = [submitted, finished, retries, tasks, depth, oldest, paused, dead]
    out += [workers, queue_workers, required, pruned, rows_now]
    if by_kind["deliveries"]:
        deliveries = CounterMetricFamily(
            "scheduler_webhook_deliveries", "Webhook delivery attempts.", labels=["result"]
        )
        for r in by_kind["deliveries"]:
            deliveries.add_metric([r.status], r.value)
        out.append(deliveries)
    return out


_TERMINAL = frozenset(s.value for s in TERMINAL)
# A worker is paused while a stored worker pause names it (services/workers/controls.py).
WORKER_STATUSES = ("online", "paused", "offline")


@dataclass(eq=False)
class LedgerCollector:
    """A prometheus_client collector: the families of one statement, cached ``ttl`` seconds."""

    sessions: sessionmaker[Session]
    queues: Sequence[str]
    worker_timeout: float
    default_concurrency: int
    ttl: float = 1.5
    queries: Sequence[LedgerQuery] = field(default_factory=lambda: LEDGER_QUERIES)
    clock: Callable[[], float] = time.monotonic
    _cached: tuple[float, list[Metric], float] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = self.clock()
            if self._cached is None or now - self._cached[0] >= self.ttl:
                self._cached = (now, *self._read())
            _, metrics, up = self._cached
        yield from metrics
        gauge = GaugeMetricFamily(
            "scheduler_metrics_ledger_up", "1 if the last ledger read for metrics succeeded."
        )
        gauge.add_metric([], up)
        yield gauge

    def _read(self) -> tuple[list[Metric], float]:
        try:
            with self.sessions() as session:
                result = session.execute(
                    text(statement(self.queries)), {"worker_timeout": self.worker_timeout}
                ).all()
        except Exception:
            # A scrape must not fail with the database: the series go missing and
            # scheduler_metrics_ledger_up says why.
            log.warning("metrics: could not read the ledger", exc_info=True)
            return [], 0.0
        rows = [
            Row(r.kind, r.queue, r.task, r.status, float(r.value), _float(r.extra)) for r in result
        ]
        return families(rows, self.queues, self.default_concurrency), 1.0


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
