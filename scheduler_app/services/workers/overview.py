"""What operators see of workers and queues: heartbeats, stored controls and the ledger's counts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app import limits as L
from scheduler_app.config import Settings
from scheduler_app.errors import NotFound
from scheduler_app.models.base import utcnow

# The newest instance of each worker name, with its stored pause and pool size.
WORKERS_SQL = """
WITH latest AS (
    SELECT DISTINCT ON (name) name, queues, concurrency, active, processed, started_at,
           last_seen, stopped_at
    FROM worker_instances
    WHERE CAST(:name AS text) IS NULL OR name = :name
    ORDER BY name, started_at DESC
)
SELECT latest.*, pauses.paused_by, pauses.paused_at, worker_settings.concurrency AS setting
FROM latest
LEFT JOIN pauses ON pauses.scope = 'worker' AND pauses.name = latest.name
LEFT JOIN worker_settings ON worker_settings.name = latest.name
ORDER BY latest.name
LIMIT :limit
"""

# Every configured queue in one statement: ledger counts, stored pause, online workers.
QUEUES_SQL = """
WITH counts AS (
    SELECT queue,
           count(*) FILTER (WHERE status = 'queued') AS depth,
           count(*) FILTER (WHERE status IN ('scheduled', 'retrying')) AS scheduled,
           count(*) FILTER (WHERE status = 'running') AS running,
           min(coalesce(run_at, created_at)) FILTER (WHERE status = 'queued') AS oldest
    FROM tasks
    WHERE status IN ('scheduled', 'queued', 'running', 'retrying')
      AND queue = ANY(:queues)
    GROUP BY queue
), latest AS (
    SELECT DISTINCT ON (name) name, queues, last_seen, stopped_at
    FROM worker_instances
    ORDER BY name, started_at DESC
), consumers AS (
    SELECT queue, count(*) AS workers,
           count(*) FILTER (WHERE pauses.name IS NULL) AS unpaused
    FROM latest
    CROSS JOIN LATERAL unnest(latest.queues) AS queue
    LEFT JOIN pauses ON pauses.scope = 'worker' AND pauses.name = latest.name
    WHERE latest.stopped_at IS NULL AND latest.last_seen > :alive_since
    GROUP BY queue
)
SELECT q.name, coalesce(counts.depth, 0) AS depth, coalesce(counts.scheduled, 0) AS scheduled,
       coalesce(counts.running, 0) AS running, counts.oldest,
       pauses.paused_by, pauses.paused_at,
       coalesce(consumers.workers, 0) AS workers, coalesce(consumers.unpaused, 0) AS unpaused
FROM unnest(CAST(:queues AS text[])) WITH ORDINALITY AS q(name, position)
LEFT JOIN counts ON counts.queue = q.name
LEFT JOIN consumers ON consumers.queue = q.name
LEFT JOIN pauses ON pauses.scope = 'queue' AND pauses.name = q.name
ORDER BY q.position
"""


@dataclass
class OperationsView:
    """Reads for the workers and queues endpoints (operators)."""

    sessions: sessionmaker[Session]
    settings: Settings

    def workers(self, name: str | None = None) -> list[dict[str, Any]]:
        """Each worker name's newest instance: online, paused or offline."""
        now = utcnow()
        with self.sessions() as session:
            rows = session.execute(text(WORKERS_SQL), {"name": name, "limit": L.PAGE_MAX}).all()
        return [self._worker(row, now) for row in rows]

    def worker(self, name: str) -> dict[str, Any]:
        """One worker by name; raises NotFound."""
        found = self.workers(name)
        if not found:
            raise NotFound(f"no worker named {name!r} has ever started")
        return found[0]

    def alive(self, row: Any, now: datetime) -> bool:
        """Whether an instance row beat recently and did not stop."""
        cutoff = now - timedelta(seconds=self.settings.worker_timeout)
        return row.stopped_at is None and row.last_seen > cutoff

    def _worker(self, row: Any, now: datetime) -> dict[str, Any]:
        if not self.alive(row, now):
            status = "offline"
        elif row.paused_at is not None:
            status = "paused"
        else:
            status = "online"
        return {
            "name": row.name,
            "status": status,
            "queues": list(row.queues),
            "concurrency": row.concurrency,
            "concurrency_setting": row.setting,
            "active": len(row.active or []) if status != "offline" else 0,
            "processed": row.processed,
            "started_at": row.started_at,
            "last_heartbeat": row.last_seen,
            "paused_by": row.paused_by,
            "paused_at": row.paused_at,
        }

    def queues(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every configured queue (or the one named): depth, scheduled, running, paused, the
        age of its oldest queued task and the online workers that consume it."""
        names = list(self.settings.queues)
        if name is not None:
            if name not in names:
                raise NotFound(f"no queue {name!r}; known: {names}")
            names = [name]
        now = utcnow()
        alive_since = now - timedelta(seconds=self.settings.worker_timeout)
        with self.sessions() as session:
            rows = session.execute(
                text(QUEUES_SQL), {"queues": names, "alive_since": alive_since}
            ).all()
        return [
            {
                "name": row.name,
                "depth": row.depth,
                "scheduled": row.scheduled,
                "running": row.running,
                "paused": row.paused_at is not None,
                "paused_by": row.paused_by,
                "paused_at": row.paused_at,
                "oldest_age_seconds": (
                    max(0.0, (now - row.oldest).total_seconds()) if row.oldest else None
                ),
                "workers": row.workers,
                "unpaused_workers": row.unpaused,
            }
            for row in rows
        ]
