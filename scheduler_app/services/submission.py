"""Accepting tasks: validate against the registry, commit to the ledger, then publish."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from scheduler_app.config import Settings
from scheduler_app.errors import Conflict, ValidationFailed
from scheduler_app.models import Task, TaskEvent
from scheduler_app.services.dispatch import Dispatch
from scheduler_app.services.principal import Principal
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
            body.get("args") or [], body.get("kwargs") or {}
        ).items():
            errors[prefix + name] = messages
    queue = body.get("queue") or (ttype.queue if ttype else None) or settings.default_queue
    if queue not in settings.queues:
        errors[prefix + "queue"] = [f"unknown queue {queue!r}; known: {list(settings.queues)}"]
    run_at = _run_at(body, now)
    expires_at = body.get("expires_at")
    if expires_at is not None:
        expires_at = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)
        if expires_at <= max(now, run_at):
            errors[prefix + "expires_at"] = ["must be later than now and than run_at"]
    if errors:
        raise ValidationFailed("the task cannot be accepted", errors=errors)

    retry = {
        "max_retries": settings.default_max_retries,
        "backoff": settings.default_backoff,
        "backoff_max": settings.default_backoff_max,
        "jitter": settings.default_jitter,
        **(ttype.retry if ttype else {}),
        **(body.get("retry") or {}),
    }
    status = (
        TaskStatus.QUEUED
        if run_at <= now + timedelta(seconds=settings.lookahead_seconds)
        else TaskStatus.SCHEDULED
    )
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
        "timeout": body.get("timeout"),
        "run_at": run_at,
        "expires_at": expires_at,
        "dispatched_at": now if status is TaskStatus.QUEUED else None,
        "created_at": now,
        "owner_id": principal.id,
        "idempotency_key": body.get("idempotency_key"),
        "request_hash": request_hash(body),
        "notify": body.get("notify"),
        "tags": list(body.get("tags") or []),
        "request_id": request_id,
        "workflow_id": body.get("workflow_id"),
        "node_id": body.get("node_id"),
        "schedule_id": body.get("schedule_id"),
        "replay_of": body.get("replay_of"),
    }


def dispatch_of(task: Task | Mapping[str, Any]) -> Dispatch:
    """The broker message for a queued task."""
    get = task.get if isinstance(task, Mapping) else lambda k: getattr(task, k)
    return Dispatch(
        id=get("id"),
        task=get("task"),
        queue=get("queue"),
        priority=get("priority"),
        eta=get("run_at"),
        timeout=get("timeout"),
        request_id=get("request_id"),
        attempt=(get("attempts") or 0) + 1,
    )


def insert_tasks(session: Session, rows: Sequence[dict[str, Any]]) -> list[Accepted]:
    """Insert rows (idempotency-aware, race-safe) and their creation events; no commit.

    A row whose (owner, idempotency key) exists already is replaced by the existing task when the
    bodies match, and raises Conflict when they differ.
    """
    if not rows:
        return []
    # Rows without a key cannot conflict: a plain INSERT, whose compiled form SQLAlchemy caches
    # (it cannot cache ON CONFLICT), sent as multi-row pages. Keyed rows skip their conflicts.
    plain = [row for row in rows if not row["idempotency_key"]]
    keyed = [row for row in rows if row["idempotency_key"]]
    tasks: dict[uuid.UUID, Task] = {}
    if plain:
        tasks.update((t.id, t) for t in session.scalars(insert(Task).returning(Task), plain))
    if keyed:
        conflict_free = pg_insert(Task).on_conflict_do_nothing(
            constraint="uq_tasks_owner_idempotency_key"
        )
        tasks.update((t.id, t) for t in session.scalars(conflict_free.returning(Task), keyed))
    events = [
        {
            "task_id": row["id"],
            "at": row["created_at"],
            "status": row["status"],
            "attempt": 0,
            "detail": "submitted",
        }
        for row in rows
        if row["id"] in tasks
    ]
    if events:
        session.execute(insert(TaskEvent), events)
    accepted: list[Accepted] = []
    for row in rows:
        if row["id"] in tasks:
            accepted.append(Accepted(tasks[row["id"]], replayed=False))
            continue
        existing = session.scalars(
            select(Task).where(
                Task.owner_id == row["owner_id"], Task.idempotency_key == row["idempotency_key"]
            )
        ).one()
        if existing.request_hash != row["request_hash"]:
            raise Conflict(
                f"idempotency key {row['idempotency_key']!r} was used with a different body",
                errors={"idempotency_key": ["already used for another request"]},
            )
        accepted.append(Accepted(existing, replayed=True))
    return accepted
