"""Worker instances in the ledger: registration, heartbeats, and attempts whose worker is gone."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, any_, not_, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app.models import Run, Task, WorkerInstance
from scheduler_app.models.base import utcnow
from scheduler_app.services.ledger.unit import unit_of_work
from scheduler_app.states import TaskStatus


@dataclass(frozen=True)
class LostAttempt:
    task_id: uuid.UUID
    attempt: int
    worker: str | None
    reason: str


@dataclass
class WorkerRegistry:
    sessions: sessionmaker[Session]

    def register(
        self, instance: uuid.UUID, name: str, pid: int, queues: Sequence[str], concurrency: int
    ) -> None:
        """Record a worker instance as started (one row per process start)."""
        now = utcnow()
        with unit_of_work(self.sessions) as session:
            session.execute(
                insert(WorkerInstance)
                .values(
                    id=instance,
                    name=name,
                    pid=pid,
                    queues=list(queues),
                    concurrency=concurrency,
                    started_at=now,
                    last_seen=now,
                )
                .on_conflict_do_nothing(index_elements=[WorkerInstance.id])
            )

    def beat(
        self,
        instance: uuid.UUID,
        active: Sequence[uuid.UUID],
        processed: int,
        concurrency: int | None = None,
    ) -> None:
        """Heartbeat: the instance lives and runs exactly these ledger tasks right now (with a
        pool of ``concurrency``, when given)."""
        values = {"last_seen": utcnow(), "active": list(active), "processed": processed}
        if concurrency is not None:
            values["concurrency"] = concurrency
        with unit_of_work(self.sessions) as session:
            session.execute(
                update(WorkerInstance).where(WorkerInstance.id == instance).values(**values)
            )

    def stopped(self, instance: uuid.UUID) -> None:
        with unit_of_work(self.sessions) as session:
            session.execute(
                update(WorkerInstance)
                .where(WorkerInstance.id == instance)
                .values(stopped_at=utcnow(), active=[])
            )

    def lost_attempts(
        self, *, timeout: float, grace: float, now: datetime | None = None
    ) -> list[LostAttempt]:
        """Running attempts that no live worker is executing.

        Lost when the run's instance stopped, stopped beating for ``timeout`` seconds, or has
        beaten at least ``grace`` seconds after the run started without listing the task as
        active (its pool process died, or the attempt was dropped).
        """
        now = now or utcnow()
        dead = or_(
            WorkerInstance.id.is_(None),
            WorkerInstance.stopped_at.is_not(None),
            WorkerInstance.last_seen < now - timedelta(seconds=timeout),
        )
        dropped = and_(
            WorkerInstance.last_seen > Run.started_at + timedelta(seconds=grace),
            not_(Run.task_id == any_(WorkerInstance.active)),
        )
        query = (
            select(Run.task_id, Run.attempt, Run.worker, dead.label("dead"))
            .join(Task, and_(Task.id == Run.task_id, Task.attempts == Run.attempt))
            .outerjoin(WorkerInstance, WorkerInstance.id == Run.worker_instance)
            .where(
                Task.status == TaskStatus.RUNNING.value,
                Run.finished_at.is_(None),
                Run.started_at < now - timedelta(seconds=grace),
                or_(dead, dropped),
            )
            .limit(1000)
        )
        with self.sessions() as session:
            rows = session.execute(query).all()
        return [
            LostAttempt(
                r.task_id,
                r.attempt,
                r.worker,
                "its worker stopped or died" if r.dead else "its worker process was lost",
            )
            for r in rows
        ]
