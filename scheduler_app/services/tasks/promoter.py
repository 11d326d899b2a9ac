"""Releasing delayed work: tasks waiting in Postgres are published shortly before they are due."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app.config import Settings
from scheduler_app.models import Task
from scheduler_app.models.base import utcnow
from scheduler_app.services.broker.dispatcher import Dispatch, Dispatcher
from scheduler_app.services.ledger.transitions import transition
from scheduler_app.services.ledger.unit import after_commit, unit_of_work
from scheduler_app.services.tasks.dispatches import DISPATCH_COLUMNS, dispatch_of
from scheduler_app.services.workers.controls import QUEUE_NOT_PAUSED
from scheduler_app.states import TaskStatus

log = logging.getLogger(__name__)


def promote_due(
    sessions: sessionmaker[Session],
    dispatcher: Dispatcher,
    settings: Settings,
    *,
    now: datetime | None = None,
    limit: int = 1000,
) -> int:
    """Publish scheduled tasks (and long-backoff retries) due within the look-ahead, and mark
    published scheduled tasks that are due now as queued.

    ``now`` is the scheduler's clock, which a test may move forward. Several schedulers may run
    at once: rows are claimed with SKIP LOCKED. Returns how many tasks were released.
    """
    now = now or utcnow()
    horizon = now + timedelta(seconds=settings.lookahead_seconds)
    with unit_of_work(sessions) as session:
        due = session.execute(
            select(Task.id, Task.status)
            .where(
                Task.status.in_([TaskStatus.SCHEDULED.value, TaskStatus.RETRYING.value]),
                Task.run_at <= horizon,
                Task.dispatched_at.is_(None),
                QUEUE_NOT_PAUSED,  # released when the queue is resumed
            )
            .order_by(Task.run_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        # Short delays were published with an ETA at submission and stayed scheduled: due now,
        # they wait for a worker like any queued task.
        ridden = session.scalars(
            select(Task.id)
            .where(
                Task.status == TaskStatus.SCHEDULED.value,
                Task.dispatched_at.is_not(None),
                Task.run_at <= now,
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        transition(session, ridden, TaskStatus.QUEUED, detail="due (published with an ETA)")
        if not due:
            return 0
        scheduled = [row.id for row in due if row.status == TaskStatus.SCHEDULED.value]
        retrying = [row.id for row in due if row.status == TaskStatus.RETRYING.value]
        rows = transition(
            session,
            scheduled,
            TaskStatus.QUEUED,
            values={"dispatched_at": now},
            detail="released by the scheduler",
            returning=DISPATCH_COLUMNS,
        )
        if retrying:
            rows += session.execute(
                update(Task)
                .where(Task.id.in_(retrying), Task.status == TaskStatus.RETRYING.value)
                .values(dispatched_at=now)
                .returning(*DISPATCH_COLUMNS)
            ).all()
        dispatches = [_on_real_clock(dispatch_of(row._mapping), now) for row in rows]
        after_commit(session, lambda: dispatcher.publish(dispatches))
    return len(rows)


def _on_real_clock(dispatch: Dispatch, now: datetime) -> Dispatch:
    """Keep the remaining wait when the scheduler's clock was moved (tests, drills)."""
    real_now = utcnow()
    if dispatch.eta is None or abs((now - real_now).total_seconds()) < 1:
        return dispatch
    return replace(dispatch, eta=real_now + (dispatch.eta - now))


def expire_overdue(
    sessions: sessionmaker[Session], *, now: datetime | None = None, limit: int = 1000
) -> int:
    """Fail (with a dead letter) waiting tasks whose expires_at passed before they started."""
    now = now or utcnow()
    waiting = [TaskStatus.SCHEDULED, TaskStatus.QUEUED, TaskStatus.RETRYING, TaskStatus.PENDING]
    with unit_of_work(sessions) as session:
        ids = session.scalars(
            select(Task.id)
            .where(
                Task.expires_at <= now,
                Task.status.in_([s.value for s in waiting]),
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        moved = transition(
            session,
            ids,
            TaskStatus.FAILED,
            values={
                "finished_at": now,
                "error_type": "Expired",
                "error_message": "the task was not started before its expires_at",
            },
            detail="expired before it could start",
        )
    return len(moved)
