"""Recurring schedules and their ledger of slots (one row per slot: fired, skipped or buffered)."""

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
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from scheduler_app.models.base import Base

OVERLAPS = ("allow", "skip", "buffer_one")
CATCHUPS = ("none", "last", "all")
RUN_STATUSES = ("fired", "skipped", "buffered")
RUN_KINDS = ("scheduled", "catchup", "manual")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Schedule(Base):
    __tablename__ = "schedules"
    __table_args__ = (
        CheckConstraint("(cron IS NULL) <> (interval IS NULL)", name="cron_or_interval"),
        CheckConstraint(_one_of("overlap", OVERLAPS), name="overlap"),
        CheckConstraint(_one_of("catchup", CATCHUPS), name="catchup"),
        Index("ix_schedules_owner_created", "owner_id", text("created_at DESC"), text("id DESC")),
        Index("ix_schedules_created", text("created_at DESC"), text("id DESC")),
        # What the firing loop scans: enabled schedules by the time their next slot is due.
        Index("ix_schedules_due", "due_at", postgresql_where=text("enabled")),
        Index(
            "ix_schedules_buffered",
            "id",
            postgresql_where=text("buffered_slot IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    owner_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("clients.id", ondelete="RESTRICT")
    )
    task: Mapped[str] = mapped_column(String(200))
    args: Mapped[list[Any]] = mapped_column(JSONB, default=list)
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    cron: Mapped[str | None] = mapped_column(String(200))
    interval: Mapped[float | None] = mapped_column(Float)
    timezone: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str | None] = mapped_column(String(100))
    priority: Mapped[int | None] = mapped_column(SmallInteger)
    enabled: Mapped[bool] = mapped_column(Boolean)
    overlap: Mapped[str] = mapped_column(String(20))
    catchup: Mapped[str] = mapped_column(String(20))
    jitter: Mapped[float | None] = mapped_column(Float)
    start_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retry: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    timeout: Mapped[float | None] = mapped_column(Float)
    retention: Mapped[float | None] = mapped_column(Float)  # its tasks' (seconds once finished)
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(100)), default=list)
    # Interval slots are anchor_at + k * interval (start_at, else when the interval was set).
    anchor_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    next_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # next_run_at plus its jitter: when the firing loop takes it.
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # overlap buffer_one: the one slot waiting for the previous task to end.
    buffered_slot: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_task_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ScheduleRun(Base):
    """One slot of a schedule: the unique (schedule_id, slot) key is what makes a slot fire once
    however many scheduler processes run."""

    __tablename__ = "schedule_runs"
    __table_args__ = (
        UniqueConstraint("schedule_id", "slot", name="uq_schedule_runs_schedule_slot"),
        CheckConstraint(_one_of("status", RUN_STATUSES), name="status"),
        CheckConstraint(_one_of("kind", RUN_KINDS), name="kind"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    schedule_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("schedules.id", ondelete="CASCADE")
    )
    slot: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(20))
    task_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
