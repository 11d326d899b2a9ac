"""The one way a task changes state: a guarded UPDATE plus its timeline event, in one statement."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, func, insert, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from scheduler_app.ledger_connection import LedgerConnection, PreparedStatement
from scheduler_app.models import DeadLetter, Run, Task, TaskEvent
from scheduler_app.states import ALLOWED_SOURCES, TaskStatus


def transition(
    session: Session,
    task_ids: uuid.UUID | Iterable[uuid.UUID],
    to: TaskStatus,
    *,
    values: Mapping[str, Any] | None = None,
    where: Sequence[ColumnElement[bool]] = (),
    worker: str | None = None,
    detail: str | None = None,
    returning: Sequence[Any] = (),
    traceback: str | None = None,
    run: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Move the given tasks to ``to`` where their current state allows it; return the moved rows.

    The WHERE clause carries the allowed sources, so a task already terminal (or moved by someone
    else in between) is simply not returned: callers treat an empty result as "not applicable".
    A move to ``failed`` writes the task's dead letter in the same statement, so every failed
    task has exactly one. With ``run``, the same statement also starts the attempt's run (a move
    to ``running``) or closes it with these values (any other move).
    """
    ids = [task_ids] if isinstance(task_ids, uuid.UUID) else list(task_ids)
    if not ids:
        return []
    sources = [s.value for s in ALLOWED_SOURCES[to]]
    columns = [Task.id, Task.attempts, *returning]
    if to is TaskStatus.FAILED:
        columns += [
            Task.owner_id,
            Task.task,
            Task.args,
            Task.kwargs,
            Task.queue,
            Task.error_type,
            Task.error_message,
        ]
        columns = list(dict.fromkeys(columns))
    moved = (
        update(Task)
        .where(Task.id.in_(ids), Task.status.in_(sources), *where)
        .values(status=to.value, **dict(values or {}))
        .returning(*columns)
        .cte("moved")
    )
    event = (
        insert(TaskEvent)
        .from_select(
            ["task_id", "at", "status", "attempt", "worker", "detail"],
            select(
                moved.c.id,
                func.clock_timestamp(),
                literal(to.value),
                moved.c.attempts,
                literal(worker),
                literal(detail),
            ),
        )
        .cte("event")
    )
    query = select(moved).add_cte(event)
    if run is not None:
        query = query.add_cte(_run_change(moved, to, run))
    if to is TaskStatus.FAILED:
        query = query.add_cte(_dead_letters(moved, worker, traceback))
    return list(session.execute(query).all())


def _dead_letters(moved: Any, worker: str | None, traceback: str | None) -> Any:
    columns = [
        "id",
        "task_id",
        "owner_id",
        "task",
        "args",
        "kwargs",
        "queue",
        "error_type",
        "error_message",
        "traceback",
        "attempts",
        "worker",
        "failed_at",
    ]
    rows = select(
        func.gen_random_uuid(),
        moved.c.id,
        moved.c.owner_id,
        moved.c.task,
        moved.c.args,
        moved.c.kwargs,
        moved.c.queue,
        moved.c.error_type,
        moved.c.error_message,
        literal(traceback),
        moved.c.attempts,
        literal(worker),
        func.clock_timestamp(),
    )
    return (
        pg_insert(DeadLetter)
        .from_select(columns, rows)
        .on_conflict_do_nothing(index_elements=[DeadLetter.task_id])
        .cte("dead_letter")
    )


def record_event(
    session: Session,
    task_id: uuid.UUID,
    status: TaskStatus | str,
    *,
    attempt: int = 0,
    worker: str | None = None,
    detail: str | None = None,
) -> None:
    """Add a timeline entry that is not a state change (e.g. a creation or a re-publish)."""
    session.execute(
        insert(TaskEvent).values(
            task_id=task_id,
            at=func.clock_timestamp(),
            status=str(status),
            attempt=attempt,
            worker=worker,
            detail=detail,
        )
    )


def _run_change(moved: Any, to: TaskStatus, values: Mapping[str, Any]) -> Any:
    if to is TaskStatus.RUNNING:
        names = ["task_id", "attempt", *values]
        columns = Run.__table__.c
        rows = select(
            moved.c.id,
            moved.c.attempts,
            *(literal(value, type_=columns[name].type) for name, value in values.items()),
        )
        return insert(Run).from_select(names, rows).cte("run_started")
    return (
        update(Run)
        .where(Run.task_id == moved.c.id, Run.attempt == moved.c.attempts)
        .where(Run.finished_at.is_(None))
        .values(**values)
        .cte("run_closed")
    )


# The two transitions every attempt makes, as statements prepared per worker connection
# (scheduler_app.ledger_connection): built from the same table of allowed sources, each is one
# round trip that Postgres rarely parses or plans again. A prepared plan outlives the statistics
# it was made with, so each statement leaves the planner only the plans that suit any table size:
# the status guard is written "(...) IS TRUE" so that it cannot become a scan of
# ix_tasks_status_created (a backlog of thousands of queued tasks, when the statistics said
# there were few), and the run is found by its unique key from the parameters.
def _sources(to: TaskStatus) -> str:
    return ", ".join(f"'{s.value}'" for s in sorted(ALLOWED_SOURCES[to]))


class ClaimedAttempt(NamedTuple):
    """What a claim returns: the attempt number and the task's spec."""

    id: str
    attempts: int
    task: str
    args: list[Any] | None
    kwargs: dict[str, Any] | None
    queue: str
    priority: int
    max_retries: int
    backoff: float
    backoff_max: float
    jitter: bool
    timeout: float | None
    request_id: str | None


CLAIM = PreparedStatement(
    "ledger_claim",
    ("uuid", "timestamptz", "integer", "text", "uuid"),  # id, now, attempt, worker, instance
    f"""
WITH moved AS (
    UPDATE tasks
    SET status = 'running', attempts = attempts + 1,
        started_at = coalesce(started_at, clock_timestamp())
    WHERE id = $1 AND (status IN ({_sources(TaskStatus.RUNNING)})) IS TRUE
      AND (expires_at IS NULL OR expires_at > $2)
      AND ($3 IS NULL OR attempts = $3 - 1)
    RETURNING {", ".join(ClaimedAttempt._fields)}
), event AS (
    INSERT INTO task_events (task_id, at, status, attempt, worker)
    SELECT id, clock_timestamp(), 'running', attempts, $4 FROM moved
), run AS (
    INSERT INTO runs (task_id, attempt, worker, worker_instance, status, started_at)
    SELECT id, attempts, $4, $5, 'running', $2 FROM moved
)
SELECT * FROM moved""",
)

SUCCEED = PreparedStatement(
    "ledger_succeed",
    ("uuid", "integer", "text", "timestamptz", "jsonb"),  # id, attempt, worker, now, result
    f"""
WITH moved AS (
    UPDATE tasks
    SET status = 'succeeded', finished_at = $4, result = $5,
        error_type = NULL, error_message = NULL
    WHERE id = $1 AND (status IN ({_sources(TaskStatus.SUCCEEDED)})) IS TRUE AND attempts = $2
    RETURNING id, attempts
), event AS (
    INSERT INTO task_events (task_id, at, status, attempt, worker)
    SELECT id, clock_timestamp(), 'succeeded', attempts, $3 FROM moved
), run AS (
    UPDATE runs SET status = 'succeeded', finished_at = $4
    FROM moved
    WHERE runs.task_id = $1 AND runs.attempt = $2 AND runs.finished_at IS NULL
      AND runs.task_id = moved.id
)
SELECT id FROM moved""",
)


def claim_attempt(
    conn: LedgerConnection,
    task_id: uuid.UUID,
    *,
    worker: str,
    instance: uuid.UUID | None,
    now: datetime,
    attempt: int | None,
) -> ClaimedAttempt | None:
    """queued/retrying -> running, with its event and run; the task's spec, or None.

    ``attempt`` (when given) must be the next attempt, so a stale message cannot start a later one.
    """
    rows = conn.execute(
        CLAIM, (str(task_id), now, attempt, worker, str(instance) if instance else None)
    )
    return ClaimedAttempt._make(rows[0]) if rows else None


def succeed_attempt(
    conn: LedgerConnection,
    task_id: uuid.UUID,
    attempt: int,
    *,
    worker: str,
    now: datetime,
    result: str,
) -> bool:
    """running -> succeeded for this attempt, with its event and run; False if not applicable.

    ``result`` is the JSON text of the result.
    """
    return bool(conn.execute(SUCCEED, (str(task_id), attempt, worker, now, result)))
