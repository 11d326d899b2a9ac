"""Named counters in the ledger (used by demo.flaky and by tests that count side effects)."""

from __future__ import annotations

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from scheduler_app.models.base import Base


class Counter(Base):
    __tablename__ = "counters"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class PrunedTasks(Base):
    """Tasks the pruner removed, by queue, type and final state (and the retries they had)."""

    __tablename__ = "pruned_tasks"

    queue: Mapped[str] = mapped_column(String(255), primary_key=True)
    task: Mapped[str] = mapped_column(String(255), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), primary_key=True)
    tasks: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    retries: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
