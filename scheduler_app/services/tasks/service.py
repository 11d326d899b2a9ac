"""Tasks as the API sees them: submit, read, list, follow, cancel."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select, text
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app.config import Settings
from scheduler_app.errors import Conflict, NotFound, ValidationFailed
from scheduler_app.models import Task, TaskEvent
from scheduler_app.models.base import utcnow
from scheduler_app.models.task import TAGGED
from scheduler_app.services.broker.dispatcher import Dispatcher
from scheduler_app.services.clients.principal import Principal
from scheduler_app.services.ledger.transitions import transition
from scheduler_app.services.ledger.unit import after_commit, unit_of_work
from scheduler_app.services.pagination import keyset_page, text_bytes
from scheduler_app.services.tasks.dispatches import dispatch_of
from scheduler_app.services.tasks.submission import (
    Accepted,
    build_row,
    insert_keyless,
    insert_tasks,
)
from scheduler_app.states import TaskStatus
from scheduler_app.task_types import TaskType

log = logging.getLogger(__name__)


@dataclass
class TaskService:
    """Submission and queries over the ledger, with publishing after commit."""

    sessions: sessionmaker[Session]
    dispatcher: Dispatcher
    settings: Settings
    types: Mapping[str, TaskType]

    def submit(
        self,
        principal: Principal,
        bodies: Sequence[Mapping[str, Any]],
        *,
        request_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
        batch: bool = False,
    ) -> list[Accepted]:
        """Validate every body (all or nothing), commit them, then publish the due ones.

        Raises ValidationFailed (naming ``tasks.N.field`` in a batch) or Conflict (idempotency).
        """
        rows = self.prepare(principal, bodies, request_id=request_id, extra=extra, batch=batch)
        if any(row["idempotency_key"] for row in rows):
            with unit_of_work(self.sessions) as session:
                accepted = insert_tasks(session, rows)
                after_commit(session, lambda: self.publish(accepted))
            return accepted
        # One autocommit statement: it has committed when it returns.
        accepted = insert_keyless(self.sessions.kw["bind"], rows)
        self.publish(accepted)
        return accepted

    def prepare(
        self,
        principal: Principal,
        bodies: Sequence[Mapping[str, Any]],
        *,
        request_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
        batch: bool = False,
    ) -> list[dict[str, Any]]:
        """Validated ledger rows for the bodies; raises ValidationFailed naming every bad field."""
        now = utcnow()
        errors: dict[str, list[str]] = {}
        rows = []
        for index, body in enumerate(bodies):
            try:
                rows.append(
                    build_row(
                        {**body, **(extra or {})},
                        self.types,
                        self.settings,
                        principal,
                        now,
                        request_id=request_id,
                        prefix=f"tasks.{index}." if batch else "",
                    )
                )
            except ValidationFailed as exc:
                errors.update(exc.errors)
        if batch and len(bodies) > self.settings.max_batch:
            errors["tasks"] = [f"at most {self.settings.max_batch} tasks in one batch"]
        keys = [row["idempotency_key"] for row in rows if row["idempotency_key"]]
        if len(keys) != len(set(keys)):
            errors["tasks"] = ["idempotency keys must be unique within a batch"]
        if errors:
            raise ValidationFailed("the tasks cannot be accepted", errors=errors)
        return rows

    def publish(self, accepted: Sequence[Accepted]) -> int:
        """Publish the newly committed tasks due within the look-ahead (call after the commit)."""
        return self.dispatcher.publish(
            dispatch_of(a.task)
            for a in accepted
            if not a.replayed and a.task.dispatched_at is not None
        )

    def get(self, principal: Principal, task_id: uuid.UUID) -> Task:
        """The task, if the principal may see it; raises NotFound otherwise."""
        with self.sessions() as session:
            return self._visible(session, principal, task_id)

    def get_any(self, task_id: uuid.UUID) -> Task:
        """The task whoever owns it (internal callers); raises NotFound."""
        with self.sessions() as session:
            task = session.get(Task, task_id)
        if task is None:
            raise NotFound(f"task {task_id} not found")
        return task

    def events(self, principal: Principal, task_id: uuid.UUID) -> list[TaskEvent]:
        """The task's timeline, oldest first; raises NotFound."""
        with self.sessions() as session:
            self._visible(session, principal, task_id)
            return list(
                session.scalars(
                    select(TaskEvent)
                    .where(TaskEvent.task_id == task_id)
                    .order_by(TaskEvent.at, TaskEvent.id)
                )
            )

    def list(
        self, principal: Principal, filters: Mapping[str, Any], limit: int, cursor: str | None
    ) -> tuple[list[Task], str | None]:
        """One page of tasks, newest first, and the cursor of the next page (or None)."""
        return keyset_page(
            self.sessions,
            _filtered(select(Task), principal, filters),
            Task.created_at,
            Task.id,
            limit,
            cursor,
            size=text_bytes(Task.args, Task.kwargs, Task.result, Task.notify),
            max_bytes=self.settings.max_page_bytes,
        )

    def cancel(self, principal: Principal, task_id: uuid.UUID) -> Task:
        """Cancel a task that has not finished; a running attempt is terminated.

        Raises NotFound, or Conflict when the task is already terminal.
        """
        with unit_of_work(self.sessions) as session:
            task = self._visible(session, principal, task_id)
            was = task.status
            moved = transition(
                session,
                task_id,
                TaskStatus.CANCELLED,
                values={"finished_at": utcnow()},
                detail="cancelled by client",
                run={"status": "cancelled", "finished_at": utcnow()},
            )
            if not moved:
                session.refresh(task)  # what it is now, not what it was when we looked
                raise Conflict(f"task is already {task.status}")
            # A queued task may be running already, not yet claimed (services/tasks/claims.py).
            terminate = was in (TaskStatus.RUNNING, TaskStatus.QUEUED, TaskStatus.RETRYING)
            after_commit(session, lambda: self.dispatcher.revoke(task_id, terminate=terminate))
        return self.get(principal, task_id)

    def _visible(self, session: Session, principal: Principal, task_id: uuid.UUID) -> Task:
        task = session.get(Task, task_id)
        if task is None or not (principal.sees_everything or task.owner_id == principal.id):
            raise NotFound(f"task {task_id} not found")
        return task


def _filtered(query: Select, principal: Principal, filters: Mapping[str, Any]) -> Select:
    if not principal.sees_everything:
        query = query.where(Task.owner_id == principal.id)
    if filters.get("status"):
        query = query.where(Task.status.in_(filters["status"]))
    for name in ("task", "queue", "workflow_id", "schedule_id"):
        if filters.get(name) is not None:
            query = query.where(getattr(Task, name) == filters[name])
    if filters.get("tag"):
        query = query.where(Task.tags.contains([filters["tag"]]), text(TAGGED))
    if filters.get("created_after"):
        query = query.where(Task.created_at > filters["created_after"])
    if filters.get("created_before"):
        query = query.where(Task.created_at < filters["created_before"])
    return query
