"""Stored pauses and pool sizes: what operators set, and what a worker does with a refused claim.

Pauses live in PostgreSQL (``pauses``), so they hold for workers started later and across
restarts (celery#1452), and the claim checks them (``ledger.transitions.PAUSE_GUARD``). Celery's
consumer control is only the fast path: a broadcast tells the workers to read the stored
controls again and stop (or start) fetching; a worker that missed it notices on its next
heartbeat. A message a claim refused is acked and its task comes back this way:

- its queue is paused: the task stays waiting with ``dispatched_at`` cleared (held), which the
  reconciler and the promoter leave alone while the queue is paused; resuming the queue
  publishes its held queued tasks, and the promoter releases its scheduled and retrying ones;
- only the worker is paused: the task is published again at once for another worker.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app.config import Settings
from scheduler_app.errors import NotFound
from scheduler_app.models import Pause, WorkerInstance, WorkerSetting
from scheduler_app.models.base import utcnow
from scheduler_app.services.broker.dispatcher import BROKER_ERRORS, Dispatcher
from scheduler_app.services.ledger.transitions import record_event
from scheduler_app.services.ledger.unit import after_commit, unit_of_work
from scheduler_app.services.tasks.dispatches import DISPATCH_COLUMNS, dispatch_of
from scheduler_app.states import CLAIMABLE, TaskStatus

log = logging.getLogger(__name__)

# The remote-control command every worker registers (tasks/controls.py): read the stored
# controls again and apply what changed.
SYNC_COMMAND = "scheduler_sync"
_CLAIMABLE_SQL = ", ".join(f"'{s.value}'" for s in sorted(CLAIMABLE))

# SQL, for the queries that must not publish a paused queue's tasks (reconciler, promoter).
QUEUE_NOT_PAUSED = text(
    "NOT EXISTS (SELECT 1 FROM pauses WHERE pauses.scope = 'queue' AND pauses.name = tasks.queue)"
)


@dataclass(frozen=True)
class Controls:
    """What is stored for one worker: the paused queues, whether it is paused, its pool size."""

    paused_queues: frozenset[str] = frozenset()
    worker_paused: bool = False
    concurrency: int | None = None

    def blocked(self, configured: Sequence[str]) -> frozenset[str]:
        """The configured queues this worker must not consume under these controls."""
        if self.worker_paused:
            return frozenset(configured)
        return frozenset(configured) & self.paused_queues


def read_controls(session: Session, worker: str) -> Controls:
    """The controls stored for ``worker`` (one query)."""
    rows = session.execute(
        text(
            "SELECT scope, name, NULL::int AS concurrency FROM pauses"
            " WHERE scope = 'queue' OR (scope = 'worker' AND name = :worker)"
            " UNION ALL SELECT 'size', name, concurrency FROM worker_settings WHERE name = :worker"
        ),
        {"worker": worker},
    ).all()
    return Controls(
        paused_queues=frozenset(r.name for r in rows if r.scope == "queue"),
        worker_paused=any(r.scope == "worker" for r in rows),
        concurrency=next((r.concurrency for r in rows if r.scope == "size"), None),
    )


@dataclass(frozen=True)
class Refusal:
    """Why a claimable task was not claimed by a worker: its queue or the worker is paused."""

    queue: str
    queue_paused: bool
    worker_paused: bool


@dataclass
class ClaimRefusals:
    """The worker's side: what to do with a message whose claim the pauses refused."""

    sessions: sessionmaker[Session]
    dispatcher: Dispatcher

    def refusal(
        self, task_id: uuid.UUID, worker: str, attempt: int | None, now: datetime
    ) -> Refusal | None:
        """Why the claim of a task that is still claimable was refused; None if it was not a
        pause (a duplicate, a stale or an expired message). Only read after a refused claim."""
        with self.sessions() as session:
            row = session.execute(
                text(
                    "SELECT queue,"
                    " EXISTS (SELECT 1 FROM pauses WHERE scope = 'queue' AND name = tasks.queue)"
                    " AS queue_paused,"
                    " EXISTS (SELECT 1 FROM pauses WHERE scope = 'worker' AND name = :worker)"
                    " AS worker_paused"
                    f" FROM tasks WHERE id = :id AND status IN ({_CLAIMABLE_SQL})"
                    " AND (expires_at IS NULL OR expires_at > :now)"
                    " AND (CAST(:attempt AS integer) IS NULL OR attempts = :attempt - 1)"
                ),
                {"id": task_id, "worker": worker, "now": now, "attempt": attempt},
            ).first()
        if row is None or not (row.queue_paused or row.worker_paused):
            return None
        return Refusal(row.queue, row.queue_paused, row.worker_paused)

    def hold(self, task_id: uuid.UUID, worker: str, queue: str) -> bool:
        """Keep the task waiting without a message while its queue is paused; False if the
        queue was resumed meanwhile (the caller claims again).

        The pause row is locked in share mode: a resume deleting it either commits first (no
        hold, nothing is left without a message) or waits for this hold and then publishes it.
        """
        with unit_of_work(self.sessions) as session:
            held = session.execute(
                text(
                    "UPDATE tasks SET dispatched_at = NULL"
                    f" WHERE id = :id AND status IN ({_CLAIMABLE_SQL})"
                    " AND EXISTS (SELECT 1 FROM pauses WHERE scope = 'queue'"
                    " AND name = tasks.queue FOR SHARE) RETURNING status, attempts"
                ),
                {"id": task_id},
            ).first()
            if held is not None:
                record_event(
                    session,
                    task_id,
                    held.status,
                    attempt=held.attempts,
                    worker=worker,
                    detail=f"held: queue {queue} is paused",
                )
        return held is not None

    def hand_back(self, task_id: uuid.UUID, worker: str) -> bool:
        """Publish the task again for another worker (this one is paused)."""
        with unit_of_work(self.sessions) as session:
            rows = session.execute(
                text(
                    "UPDATE tasks SET dispatched_at = clock_timestamp()"
                    f" WHERE id = :id AND status IN ({_CLAIMABLE_SQL})"
                    f" RETURNING {', '.join(c.key for c in DISPATCH_COLUMNS)}, status"
                ),
                {"id": task_id},
            ).all()
            if rows:
                record_event(
                    session,
                    task_id,
                    rows[0].status,
                    attempt=rows[0].attempts,
                    worker=worker,
                    detail=f"handed back: worker {worker} is paused",
                )
                dispatches = [dispatch_of(row._mapping) for row in rows]
                after_commit(session, lambda: self.dispatcher.publish(dispatches))
        return bool(rows)


@dataclass
class ControlService:
    """Operators' pauses and pool sizes (the API's side)."""

    sessions: sessionmaker[Session]
    dispatcher: Dispatcher
    settings: Settings

    # --- queues ---------------------------------------------------------------------------

    def pause_queue(self, name: str, by: str) -> None:
        """Pause a configured queue cluster-wide (already paused: kept as it was).

        Raises NotFound for a queue the configuration does not know."""
        self._known_queue(name)
        self._pause("queue", name, by)
        self.broadcast()

    def resume_queue(self, name: str) -> int:
        """Resume a queue and publish the tasks it held; returns how many. Raises NotFound."""
        self._known_queue(name)
        with unit_of_work(self.sessions) as session:
            session.execute(delete(Pause).where(Pause.scope == "queue", Pause.name == name))
            rows = session.execute(
                text(
                    "UPDATE tasks SET dispatched_at = clock_timestamp()"
                    " WHERE queue = :queue AND status = :queued AND dispatched_at IS NULL"
                    f" RETURNING {', '.join(c.key for c in DISPATCH_COLUMNS)}"
                ),
                {"queue": name, "queued": TaskStatus.QUEUED.value},
            ).all()
            if rows:
                record_event(
                    session,
                    [r.id for r in rows],
                    TaskStatus.QUEUED,
                    detail=f"published: queue {name} was resumed",
                )
            dispatches = [dispatch_of(row._mapping) for row in rows]
            after_commit(session, lambda: self.dispatcher.publish(dispatches))
        self.broadcast()
        return len(rows)

    # --- workers --------------------------------------------------------------------------

    def pause_worker(self, name: str, by: str) -> None:
        """Pause a worker by name: it takes nothing until resumed. Raises NotFound."""
        self._known_worker(name)
        self._pause("worker", name, by)
        self.broadcast([name])

    def resume_worker(self, name: str) -> None:
        """Let a paused worker take work again. Raises NotFound."""
        self._known_worker(name)
        with unit_of_work(self.sessions) as session:
            session.execute(delete(Pause).where(Pause.scope == "worker", Pause.name == name))
        self.broadcast([name])

    def scale(self, name: str, concurrency: int, by: str) -> None:
        """Store the worker's pool size and tell it to resize. Raises NotFound."""
        self._known_worker(name)
        with unit_of_work(self.sessions) as session:
            session.execute(
                insert(WorkerSetting)
                .values(name=name, concurrency=concurrency, updated_by=by, updated_at=utcnow())
                .on_conflict_do_update(
                    index_elements=[WorkerSetting.name],
                    set_={"concurrency": concurrency, "updated_by": by, "updated_at": utcnow()},
                )
            )
        self.broadcast([name])

    # --- helpers --------------------------------------------------------------------------

    def broadcast(self, destination: list[str] | None = None) -> None:
        """Ask workers to apply the stored controls now; best effort (they also check on
        every heartbeat)."""
        try:
            self.dispatcher.app.control.broadcast(
                SYNC_COMMAND, destination=destination, reply=False
            )
        except BROKER_ERRORS as exc:
            log.warning("control broadcast failed", extra={"error": str(exc)})

    def _pause(self, scope: str, name: str, by: str) -> None:
        with unit_of_work(self.sessions) as session:
            session.execute(
                insert(Pause)
                .values(scope=scope, name=name, paused_by=by, paused_at=utcnow())
                .on_conflict_do_nothing(index_elements=[Pause.scope, Pause.name])
            )

    def _known_queue(self, name: str) -> None:
        if name not in self.settings.queues:
            raise NotFound(f"no queue {name!r}; known: {list(self.settings.queues)}")

    def _known_worker(self, name: str) -> None:
        with self.sessions() as session:
            known = session.scalar(
                select(WorkerInstance.id).where(WorkerInstance.name == name).limit(1)
            )
        if known is None:
            raise NotFound(f"no worker named {name!r} has ever started")
