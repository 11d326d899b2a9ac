"""A task (one submitted call of a task type), its runs (attempts) and its timeline."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from scheduler_app.limits import RETRY_STRATEGIES
from scheduler_app.models.base import Base
from scheduler_app.states import TaskStatus

_STATUSES = ", ".join(f"'{s.value}'" for s in TaskStatus)
_STRATEGIES = ", ".join(f"'{s}'" for s in RETRY_STRATEGIES)
_TERMINAL = ", ".join(f"'{s.value}'" for s in TaskStatus if s.terminal)
# The predicate of ix_tasks_tags: a query by tag states it too, so the planner can use the index.
TAGGED = "cardinality(tags) > 0"
_OPEN = ", ".join(f"'{s.value}'" for s in TaskStatus if not s.terminal)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUSES})", name="status"),
        CheckConstraint("priority BETWEEN 0 AND 9", name="priority"),
        CheckConstraint(f"retry_strategy IN ({_STRATEGIES})", name="retry_strategy"),
        # The indexes of optional columns hold only the tasks with a value (migration 0012): a
        # task's insert and each of its state changes write an entry in every index it is in.
        Index(
            "uq_tasks_owner_idempotency_key",
            "owner_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index("ix_tasks_created", text("created_at DESC"), text("id DESC")),
        Index("ix_tasks_owner_created", "owner_id", text("created_at DESC"), text("id DESC")),
        Index("ix_tasks_status_created", "status", text("created_at DESC")),
        Index(
            "ix_tasks_due",
            "run_at",
            postgresql_where=text("status IN ('scheduled', 'retrying')"),
        ),
        Index(
            "ix_tasks_inflight",
            "dispatched_at",
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
        Index(
            "ix_tasks_expiring",
            "expires_at",
            postgresql_where=text(
                "expires_at IS NOT NULL"
                " AND status IN ('pending', 'scheduled', 'queued', 'retrying')"
            ),
        ),
        Index("ix_tasks_tags", "tags", postgresql_using="gin", postgresql_where=text(TAGGED)),
        Index(
            "ix_tasks_workflow_id", "workflow_id", postgresql_where=text("workflow_id IS NOT NULL")
        ),
        Index(
            "ix_tasks_schedule_id", "schedule_id", postgresql_where=text("schedule_id IS NOT NULL")
        ),
        # "Has this workflow anything left to run?" is one probe, however big it is.
        Index(
            "ix_tasks_workflow_open",
            "workflow_id",
            postgresql_where=text(
                "workflow_id IS NOT NULL"
                " AND status IN ('pending', 'scheduled', 'queued', 'running', 'retrying')"
            ),
        ),
        # Retention (services/retention): finished tasks kept for their state's default, in the
        # order they finished; those with an override of their own by the instant it passes.
        Index(
            "ix_tasks_finished",
            "status",
            "finished_at",
            postgresql_where=text(
                f"status IN ({_TERMINAL}) AND retention IS NULL AND workflow_id IS NULL"
            ),
        ),
        Index(
            "ix_tasks_prune_after",
            "prune_after",
            postgresql_where=text("prune_after IS NOT NULL AND workflow_id IS NULL"),
        ),
        # "Is a replay of this task still running?" (a replayed task is kept until it is not)
        Index(
            "ix_tasks_replay_open",
            "replay_of",
            postgresql_where=text(f"replay_of IS NOT NULL AND status IN ({_OPEN})"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    task: Mapped[str] = mapped_column(String(200))
    args: Mapped[list[Any]] = mapped_column(JSONB, default=list)
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    queue: Mapped[str] = mapped_column(String(100))
    priority: Mapped[int] = mapped_column(SmallInteger)
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    max_retries: Mapped[int] = mapped_column(Integer)
    backoff: Mapped[float] = mapped_column(Float)
    backoff_max: Mapped[float] = mapped_column(Float)
    jitter: Mapped[bool] = mapped_column(Boolean)
    # How the delay grows (services/tasks/backoff.py) and how long retrying may go on, in
    # seconds since the first attempt started (None: as long as max_retries allows).
    retry_strategy: Mapped[str] = mapped_column(
        String(20), default="exponential", server_default="exponential"
    )
    max_retry_duration: Mapped[float | None] = mapped_column(Float)
    timeout: Mapped[float | None] = mapped_column(Float)
    run_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result: Mapped[Any | None] = mapped_column(JSONB)
    error_type: Mapped[str | None] = mapped_column(String(200))
    error_message: Mapped[str | None] = mapped_column(Text)
    owner_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("clients.id", ondelete="RESTRICT")
    )
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    notify: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(100)), default=list)
    workflow_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    node_id: Mapped[str | None] = mapped_column(String(100))
    schedule_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    replay_of: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    request_id: Mapped[str | None] = mapped_column(String(100))
    # Seconds it is kept once finished when it has an override (its own, its type's or its
    # queue's); None: its terminal state's default. prune_after = finished + retention.
    retention: Mapped[float | None] = mapped_column(Float)
    prune_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Run(Base):
    """One attempt of a task."""

    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("task_id", "attempt", name="uq_runs_task_attempt"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    task_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tasks.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str | None] = mapped_column(String(255))
    worker_instance: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    status: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error_type: Mapped[str | None] = mapped_column(String(200))
    error_message: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    retry_delay: Mapped[float | None] = mapped_column(Float)


class TaskEvent(Base):
    """The timeline: one row per state change.

    Partitioned by day of ``at`` (migration 0010; the scheduler creates and drops the
    partitions: services/retention/partitions.py), hence the key ``(id, at)`` and no foreign key
    to ``tasks``: a pruned task's events leave with their partition.
    """

    __tablename__ = "task_events"
    __table_args__ = {"postgresql_partition_by": "RANGE (at)"}

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    task_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), primary_key=True, server_default=func.now()
    )
    status: Mapped[str] = mapped_column(String(20))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[str | None] = mapped_column(Text)
