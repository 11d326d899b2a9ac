"""Named counters kept in the ledger, so they survive broker loss and worker restarts."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app.models import Counter
from scheduler_app.services.ledger.unit import unit_of_work


@dataclass
class CounterStore:
    sessions: sessionmaker[Session]

    def incr(self, key: str, by: int = 1) -> int:
        """Add ``by`` to the counter (created at 0) and return its new value; commits at once."""
        stmt = (
            insert(Counter)
            .values(key=key, value=by)
            .on_conflict_do_update(index_elements=[Counter.key], set_={"value": Counter.value + by})
            .returning(Counter.value)
        )
        with unit_of_work(self.sessions) as session:
            return int(session.scalar(stmt))

    def get(self, key: str) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(Counter.value).where(Counter.key == key)) or 0)
