"""Named counters in the ledger (used by demo.flaky and by tests that count side effects)."""

from __future__ import annotations

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from scheduler_app.models.base import Base


class Counter(Base):
    __tablename__ = "counters"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
