"""The dead-letter queue: inspect, replay and purge terminal failures kept in Postgres.

Dead letters are written by :func:`scheduler_app.services.ledger.transitions.transition` in the same
statement that moves a task to ``failed``, so none is ever missing or doubled.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app.errors import Conflict, NotFound
from scheduler_app.models import DeadLetter, Task
from scheduler_app.models.base import utcnow
from scheduler_app.services.clients.principal import Principal, Role
from scheduler_app.services.ledger.unit import after_commit, unit_of_work
from scheduler_app.services.pagination import keyset_page, text_bytes
from scheduler_app.services.tasks.service import TaskService
from scheduler_app.services.tasks.submission import insert_tasks

MAX_BULK = 10_000


@dataclass
class ReplayResult:
    count: int
    tasks: list[Task]

    @property
    def task_ids(self) -> list[uuid.UUID]:
        return [task.id for task in self.tasks]


def replay_body(task: Task) -> dict[str, Any]:
    """The submission that runs a failed task again, with its original options."""
    body: dict[str, Any] = {
        "task": task.task,
        "args": task.args,
        "kwargs": task.kwargs,
        "queue": task.queue,
        "priority": task.priority,
        "retry": {
            "max_retries": task.max_retries,
            "backoff": task.backoff,
            "backoff_max": task.backoff_max,
            "jitter": task.jitter,
            "strategy": task.retry_strategy,
            "max_retry_duration": task.max_retry_duration,
        },
        "tags": task.tags,
        "replay_of": task.id,
    }
    if task.timeout:
        body["timeout"] = task.timeout
    if task.notify:
        body["notify"] = task.notify
    return body


@dataclass
class DeadLetterService:
    sessions: sessionmaker[Session]
    tasks: TaskService

    def list(
        self, filters: Mapping[str, Any], limit: int, cursor: str | None
    ) -> tuple[list[DeadLetter], str | None]:
        """One page of dead letters, newest failure first, and the next cursor (or None)."""
        return keyset_page(
            self.sessions,
            _filtered(select(DeadLetter), filters),
            DeadLetter.failed_at,
            DeadLetter.id,
            limit,
            cursor,
            size=text_bytes(
                DeadLetter.args, DeadLetter.kwargs, DeadLetter.traceback, DeadLetter.error_message
            ),
            max_bytes=self.tasks.settings.max_page_bytes,
        )

    def get(self, dead_letter_id: uuid.UUID) -> DeadLetter:
        """The dead letter; raises NotFound."""
        with self.sessions() as session:
            found = session.get(DeadLetter, dead_letter_id)
        if found is None:
            raise NotFound(f"dead letter {dead_letter_id} not found")
        return found

    def replay_one(self, dead_letter_id: uuid.UUID, request_id: str | None = None) -> Task:
        """Submit the failed task again, linked by replay_of; raises NotFound or Conflict."""
        dead = self.get(dead_letter_id)
        if dead.replayed_task_id is not None:
            raise Conflict(f"dead letter already replayed as task {dead.replayed_task_id}")
        result = self._replay([dead_letter_id], request_id)
        if not result.tasks:
            raise Conflict("dead letter was replayed concurrently")
        return result.tasks[0]

    def replay_many(
        self,
        ids: Sequence[uuid.UUID] | None,
        filters: Mapping[str, Any] | None,
        dry_run: bool,
        request_id: str | None = None,
    ) -> ReplayResult:
        """Replay the not yet replayed dead letters chosen by ids and/or filter (or count them)."""
        query = select(DeadLetter.id).where(DeadLetter.replayed_task_id.is_(None))
        if ids:
            query = query.where(DeadLetter.id.in_(ids))
        query = _filtered(query, filters or {})
        with self.sessions() as session:
            chosen = list(session.scalars(query.order_by(DeadLetter.failed_at).limit(MAX_BULK)))
        if dry_run:
            return ReplayResult(len(chosen), [])
        return self._replay(chosen, request_id)

    def delete(self, dead_letter_id: uuid.UUID) -> None:
        """Remove one dead letter; raises NotFound."""
        with unit_of_work(self.sessions) as session:
            gone = session.execute(
                delete(DeadLetter).where(DeadLetter.id == dead_letter_id).returning(DeadLetter.id)
            ).first()
        if gone is None:
            raise NotFound(f"dead letter {dead_letter_id} not found")

    def purge(self, filters: Mapping[str, Any]) -> int:
        """Remove every dead letter matching the filter; return how many."""
        ids = _filtered(select(DeadLetter.id), filters).scalar_subquery()
        with unit_of_work(self.sessions) as session:
            return len(
                session.execute(
                    delete(DeadLetter).where(DeadLetter.id.in_(ids)).returning(DeadLetter.id)
                ).all()
            )

    def purge_older_than(self, days: float, now: datetime | None = None) -> int:
        """Retention: remove dead letters that failed more than ``days`` ago."""
        return purge_older_than(self.sessions, days, now)

    def _replay(self, ids: Sequence[uuid.UUID], request_id: str | None) -> ReplayResult:
        if not ids:
            return ReplayResult(0, [])
        with self.sessions() as session:
            originals = session.execute(
                select(DeadLetter.id, Task)
                .join(Task, Task.id == DeadLetter.task_id)
                .where(DeadLetter.id.in_(ids), DeadLetter.replayed_task_id.is_(None))
            ).all()
        accepted_all = []
        with unit_of_work(self.sessions) as session:
            for dead_id, task in originals:
                owner = Principal(task.owner_id, Role.SUBMITTER)
                rows = self.tasks.prepare(owner, [replay_body(task)], request_id=request_id)
                claimed = session.execute(
                    update(DeadLetter)
                    .where(DeadLetter.id == dead_id, DeadLetter.replayed_task_id.is_(None))
                    .values(replayed_task_id=rows[0]["id"])
                    .returning(DeadLetter.id)
                ).first()
                if claimed is None:
                    continue
                accepted_all += insert_tasks(session, rows)
            after_commit(session, lambda: self.tasks.publish(accepted_all))
        return ReplayResult(len(accepted_all), [a.task for a in accepted_all])


def _filtered(query: Select, filters: Mapping[str, Any]) -> Select:
    for name in ("task", "queue", "error_type"):
        if filters.get(name):
            query = query.where(getattr(DeadLetter, name) == filters[name])
    if filters.get("since"):
        query = query.where(DeadLetter.failed_at >= filters["since"])
    if filters.get("before"):
        query = query.where(DeadLetter.failed_at < filters["before"])
    if filters.get("replayed") is not None:
        column = DeadLetter.replayed_task_id
        query = query.where(column.is_not(None) if filters["replayed"] else column.is_(None))
    return query


def purge_older_than(
    sessions: sessionmaker[Session], days: float, now: datetime | None = None
) -> int:
    """Retention: remove dead letters that failed more than ``days`` ago; return how many."""
    cutoff = (now or utcnow()) - timedelta(days=days)
    with unit_of_work(sessions) as session:
        return len(
            session.execute(
                delete(DeadLetter).where(DeadLetter.failed_at < cutoff).returning(DeadLetter.id)
            ).all()
        )
