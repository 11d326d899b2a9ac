"""Accepting tasks: validate against the registry, commit to the ledger, then publish."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from scheduler_app.config import Settings, queue_retention
from scheduler_app.errors import Conflict, ValidationFailed
from scheduler_app.limits import RETRY_STRATEGIES
from scheduler_app.models import Task
from scheduler_app.services.clients.principal import Principal
from scheduler_app.services.ledger.connection import PreparedStatement, run_prepared
from scheduler_app.states import TaskStatus
from scheduler_app.task_types import TaskType


@dataclass(frozen=True)
class Accepted:
    task: Task
    replayed: bool


def request_hash(body: Mapping[str, Any]) -> str:
    """Stable digest of a submission body (without its idempotency key)."""
    canonical = {k: v for k, v in body.items() if k != "idempotency_key"}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _run_at(body: Mapping[str, Any], now: datetime) -> datetime:
    if body.get("run_at") is not None:
        run_at = body["run_at"]
        return run_at if run_at.tzinfo else run_at.replace(tzinfo=UTC)
    return now + timedelta(seconds=float(body.get("delay") or 0))


def build_row(
    body: Mapping[str, Any],
    types: Mapping[str, TaskType],
    settings: Settings,
    principal: Principal,
    now: datetime,
    *,
    request_id: str | None = None,
    prefix: str = "",
) -> dict[str, Any]:
    """Turn one validated submission into a tasks row; raise ValidationFailed naming fields."""
    errors: dict[str, list[str]] = {}
    ttype = types.get(body["task"])
    if ttype is None:
        errors[prefix + "task"] = [f"unknown task type {body['task']!r}; see /api/v1/task-types"]
    else:
        for name, messages in ttype.check_call(
            body.get("args") or [], body.get("kwargs") or {}, settings
        ).items():
            errors[prefix + name] = messages
    queue = body.get("queue") or (ttype.queue if ttype else None) or settings.default_queue
    if queue not in settings.queues:
        errors[prefix + "queue"] = [f"unknown queue {queue!r}; known: {list(settings.queues)}"]
    timeout = body.get("timeout")
    if timeout is not None and timeout > settings.max_task_timeout:
        errors[prefix + "timeout"] = [
            f"must be at most {settings.max_task_timeout:g} seconds (max_task_timeout)"
        ]
    retention = body.get("retention")
    if retention is None:
        # The type's, else the queue's; None: the terminal state's default (settings).
        retention = (ttype.retention if ttype else None) or queue_retention(settings).get(queue)
    run_at = _run_at(body, now)
    expires_at = body.get("expires_at")
    if expires_at is not None:
        # One already past (or before run_at) is accepted: the task fails "Expired" at once,
        # as any task that was not started by its expires_at.
        expires_at = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)
    if errors:
        raise ValidationFailed("the task cannot be accepted", errors=errors)

    retry = {
        "max_retries": settings.default_max_retries,
        "backoff": settings.default_backoff,
        "backoff_max": settings.default_backoff_max,
        "jitter": settings.default_jitter,
        "strategy": RETRY_STRATEGIES[0],
        "max_retry_duration": None,
        **(ttype.retry if ttype else {}),
        **(body.get("retry") or {}),
    }
    # Due now: queued. Later: scheduled until due, either riding a broker ETA (due within the
    # look-ahead: published now) or waiting in the ledger for the scheduler to release it.
    status = TaskStatus.QUEUED if run_at <= now else TaskStatus.SCHEDULED
    published = run_at <= now + timedelta(seconds=settings.lookahead_seconds)
    return {
        "id": uuid.uuid4(),
        "task": body["task"],
        "args": list(body.get("args") or []),
        "kwargs": dict(body.get("kwargs") or {}),
        "queue": queue,
        "priority": body.get("priority", 5),
        "status": status.value,
        "attempts": 0,
        "max_retries": retry["max_retries"],
        "backoff": retry["backoff"],
        "backoff_max": max(retry["backoff_max"], retry["backoff"]),
        "jitter": retry["jitter"],
        "retry_strategy": retry["strategy"],
        "max_retry_duration": retry["max_retry_duration"],
        # Every attempt has a time limit: the task's own, else its type's, else the default.
        "timeout": min(
            timeout or (ttype.timeout if ttype else None) or settings.default_task_timeout,
            settings.max_task_timeout,
        ),
        "run_at": run_at,
        "expires_at": expires_at,
        "dispatched_at": now if published else None,
        "created_at": now,
        "owner_id": principal.id,
        "idempotency_key": body.get("idempotency_key"),
        # Only a keyed submission is ever compared with an earlier one.
        "request_hash": request_hash(body) if body.get("idempotency_key") else None,
        "notify": body.get("notify"),
        "tags": list(body.get("tags") or []),
        "request_id": request_id,
        "workflow_id": body.get("workflow_id"),
        "node_id": body.get("node_id"),
        "schedule_id": body.get("schedule_id"),
        "replay_of": body.get("replay_of"),
        "retention": None if retention is None else float(retention),
    }


class NewTask(dict):
    """A task row this request inserted: a dict whose keys also read as attributes, like ``Task``.

    Building ORM objects for rows we already hold costs more than the insert itself in a batch.
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


# Columns a submission leaves empty (the attempt fills them in); every other column of ``tasks``
# is in the rows ``build_row`` makes.
_NOT_INSERTED = {
    "started_at": None,
    "finished_at": None,
    "result": None,
    "error_type": None,
    "error_message": None,
    "prune_after": None,
}
TASK_COLUMNS = tuple(c.name for c in Task.__table__.columns if c.name not in _NOT_INSERTED)
_COLUMN_LIST = ", ".join(TASK_COLUMNS)

# The rows travel as one JSON document and PostgreSQL unpacks them (jsonb_populate_recordset):
# one parameter however many rows, no per-value adaptation in Python, one statement text to plan.
# ON CONFLICT DO NOTHING skips rows whose (owner, idempotency key) exists; their creation events
# are written in the same statement as the rows that were inserted.
INSERT_SQL = f"""
WITH inserted AS (
    INSERT INTO tasks ({_COLUMN_LIST})
    SELECT {_COLUMN_LIST} FROM jsonb_populate_recordset(NULL::tasks, %(rows)s::jsonb)
    ON CONFLICT DO NOTHING
    RETURNING id, status, created_at
), events AS (
    INSERT INTO task_events (task_id, at, status, attempt, detail)
    SELECT id, created_at, status, 0, 'submitted' FROM inserted
)
SELECT id FROM inserted
"""


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_stdlib_rows_json = json.JSONEncoder(separators=(",", ":"), default=_json_default).encode


def _rows_json(rows: list[dict[str, Any]]) -> str:
    """The rows as one JSON document (orjson; the standard library for ints beyond 64 bits)."""
    try:
        return orjson.dumps(rows).decode()
    except TypeError:
        return _stdlib_rows_json(rows)


# Rows without an idempotency key cannot conflict: they go in as the statement above, prepared
# once per pooled connection and run in autocommit (the statement is its own transaction), which
# is one round trip instead of BEGIN, the statement and COMMIT, and no parsing or planning.
SUBMIT = PreparedStatement(
    "scheduler_submit", ("jsonb",), INSERT_SQL.replace("%(rows)s::jsonb", "$1")
)


def _prepared_on(connection: Any) -> dict[str, int]:
    """The record of statements prepared on a pooled connection's current backend."""
    backend = connection.dbapi_connection.get_backend_pid()  # no round trip: libpq knows it
    if connection.info.get("prepared_backend") != backend:
        connection.info["prepared_backend"] = backend
        connection.info["prepared"] = {}
    return connection.info["prepared"]


def insert_keyless(engine: Engine, rows: Sequence[dict[str, Any]]) -> list[Accepted]:
    """Insert and commit rows that carry no idempotency key, with their creation events."""
    if not rows:
        return []
    payload = _rows_json([{name: row[name] for name in TASK_COLUMNS} for row in rows])
    dialect = engine.dialect
    connection = engine.raw_connection()
    dbapi = connection.dbapi_connection
    try:
        dbapi.autocommit = True
        inserted = len(run_prepared(dbapi, _prepared_on(connection), SUBMIT, (payload,)))
    except dialect.loaded_dbapi.Error as exc:
        gone = dialect.is_disconnect(exc, dbapi, None)
        if gone:
            connection.invalidate(exc)
        raise DBAPIError.instance(
            SUBMIT.execute_sql, None, exc, dialect.loaded_dbapi.Error, connection_invalidated=gone
        ) from exc
    finally:
        if not dbapi.closed:
            dbapi.autocommit = False
        connection.close()
    if inserted != len(rows):
        raise RuntimeError(f"{len(rows) - inserted} task ids collided with existing tasks")
    return [Accepted(NewTask(row, **_NOT_INSERTED), replayed=False) for row in rows]


def insert_tasks(db: Session | Connection, rows: Sequence[dict[str, Any]]) -> list[Accepted]:
    """Insert rows (idempotency-aware, race-safe) and their creation events; no commit.

    A row whose (owner, idempotency key) exists already is replaced by the existing task when the
    bodies match, and raises Conflict when they differ.
    """
    if not rows:
        return []
    payload = _rows_json([{name: row[name] for name in TASK_COLUMNS} for row in rows])
    connection = db.connection() if isinstance(db, Session) else db
    result = connection.exec_driver_sql(INSERT_SQL, {"rows": payload})
    inserted = {str(row_id) for (row_id,) in result}
    accepted: list[Accepted] = []
    for row in rows:
        if str(row["id"]) in inserted:
            accepted.append(Accepted(NewTask(row, **_NOT_INSERTED), replayed=False))
            continue
        if not row["idempotency_key"]:
            raise RuntimeError(f"task id {row['id']} collided with an existing task")
        existing = NewTask(
            connection.execute(
                select(Task.__table__).where(
                    Task.owner_id == row["owner_id"],
                    Task.idempotency_key == row["idempotency_key"],
                )
            )
            .mappings()
            .one()
        )
        if existing.request_hash != row["request_hash"]:
            raise Conflict(
                f"idempotency key {row['idempotency_key']!r} was used with a different body",
                errors={"idempotency_key": ["already used for another request"]},
            )
        accepted.append(Accepted(existing, replayed=True))
    return accepted
