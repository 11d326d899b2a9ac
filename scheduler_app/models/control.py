"""Operators' stored controls: paused queues and workers, and workers' pool sizes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, Integer, String, func
from sqlalchemy.orm import Mapped, mapped_column

from scheduler_app.models.base import Base

PAUSE_SCOPES = ("queue", "worker")


class Pause(Base):
    """A paused queue (cluster-wide) or worker (by name); the claim refuses work while it exists."""

    __tablename__ = "pauses"
    __table_args__ = (CheckConstraint("scope IN ('queue', 'worker')", name="scope"),)

    scope: Mapped[str] = mapped_column(String(10), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    paused_by: Mapped[str | None] = mapped_column(String(255))
    paused_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WorkerSetting(Base):
    """The pool size a worker of this name runs with (applied live and at its next start)."""

    __tablename__ = "worker_settings"
    __table_args__ = (CheckConstraint("concurrency >= 1", name="concurrency"),)

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    concurrency: Mapped[int] = mapped_column(Integer)
    updated_by: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
