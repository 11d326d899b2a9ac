"""The partitions of ``task_events``: one a day, created ahead, dropped once past retention.

Alembic owns the parent table (migration 0010); the scheduler owns its partitions. An event
whose day has no partition (the scheduler was down for days) lands in ``task_events_default``,
so an insert never fails; a day whose rows are already in the default partition gets no
partition of its own (they stay there and leave row by row with their tasks).

A day is dropped when it ended longer ago than the shortest default retention (plus a day). By
then the pruner has removed most tasks whose events it holds; those still kept (failed ones
with their dead letter, an override of their own, a schedule's last task, a long-kept
workflow…) have their events moved to the default partition first, in the same short
transaction as the DETACH and the DROP, and leave from there row by row with their task. Past
``RESCUE_MAX`` such rows the drop waits (the move would hold the parent's lock too long), at
the latest until the longest default retention has passed too.
Every DDL statement waits at most ``LOCK_TIMEOUT`` for its lock, so it never queues the hot
path's inserts behind a long query: it tries again at the next pass.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app.config import Settings
from scheduler_app.models.base import utcnow
from scheduler_app.services.ledger.unit import unit_of_work
from scheduler_app.services.retention.policy import Retention
from scheduler_app.services.retention.pruner import count_pruned

log = logging.getLogger(__name__)

PARENT = "task_events"
DEFAULT = f"{PARENT}_default"
AHEAD_DAYS = 3  # partitions exist for today and the next three days
RESCUE_MAX = 50_000
LOCK_TIMEOUT = "2s"
PARTITION_LOCK = 0x5C4ED0A8  # pg advisory lock: one scheduler manages partitions at a time
_NAME = re.compile(rf"^{PARENT}_p(\d{{8}})$")


def is_partition(name: str) -> bool:
    """Whether a table name is one of task_events' partitions (not Alembic's to manage)."""
    return bool(_NAME.match(name)) or name == DEFAULT


def partition_name(day: date) -> str:
    return f"{PARENT}_p{day:%Y%m%d}"


@dataclass(frozen=True)
class Partition:
    name: str
    day: date

    @property
    def ends(self) -> datetime:
        return datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC) + timedelta(days=1)


class Partitions:
    """Creates the coming days' partitions and drops the ones past retention."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self.sessions = sessions
        retention = Retention.from_settings(settings)
        shortest = min(retention.succeeded, retention.cancelled, retention.failed)
        self.keep = timedelta(seconds=shortest) + timedelta(days=1)

    def existing(self) -> list[Partition]:
        """The daily partitions attached now, oldest first."""
        with self.sessions() as session:
            names = session.scalars(
                text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                    " WHERE i.inhparent = CAST(:parent AS regclass)"
                ),
                {"parent": PARENT},
            )
            found = []
            for name in names:
                match = _NAME.match(name)
                if match:
                    found.append(Partition(name, datetime.strptime(match[1], "%Y%m%d").date()))
        return sorted(found, key=lambda p: p.day)

    def run(self, now: datetime | None = None) -> Counter[str]:
        """:meth:`maintain` if no other scheduler is at it (pg advisory lock)."""
        with self.sessions.kw["bind"].connect() as conn:
            locked = conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": PARTITION_LOCK})
            conn.commit()
            if not locked:
                return Counter()
            try:
                return self.maintain(now or utcnow())
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PARTITION_LOCK})
                conn.commit()

    def maintain(self, now: datetime) -> Counter[str]:
        """Create the partitions of today and the days ahead, drop those past retention.

        ``now`` is the clock (injected by tests). Returns counts: ``created``, ``dropped``,
        ``moved`` (kept tasks' events rescued to the default partition) and ``task_events``
        (rows removed with the dropped partitions, as estimated by ANALYZE).
        """
        done: Counter[str] = Counter()
        have = {p.day for p in self.existing()}
        today = now.date()
        for offset in range(AHEAD_DAYS + 1):
            day = today + timedelta(days=offset)
            if day not in have and self._create(day):
                done["created"] += 1
        for partition in self.existing():
            if partition.ends <= now - self.keep:
                done += self._drop(partition)
        return done

    def _create(self, day: date) -> bool:
        name = partition_name(day)
        lo, hi = f"{day} 00:00:00+00", f"{day + timedelta(days=1)} 00:00:00+00"
        try:
            with unit_of_work(self.sessions) as session:
                session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
                if session.scalar(
                    text(f"SELECT EXISTS (SELECT 1 FROM {DEFAULT} WHERE at >= :lo AND at < :hi)"),
                    {"lo": lo, "hi": hi},
                ):
                    log.warning("events of %s are in the default partition: no partition", day)
                    return False
                # Made apart then attached: ATTACH takes a lighter lock on the parent than
                # CREATE ... PARTITION OF, which would block the inserts of every transition.
                session.execute(
                    text(
                        f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING"
                        " CONSTRAINTS)"
                    )
                )
                session.execute(
                    text(
                        f"ALTER TABLE {PARENT} ATTACH PARTITION {name}"
                        f" FOR VALUES FROM ('{lo}') TO ('{hi}')"
                    )
                )
            log.info("partition created", extra={"partition": name})
            return True
        except OperationalError as exc:  # the lock was not granted in time: next pass
            log.warning("partition %s not created: %s", name, exc.orig)
            return False

    def _drop(self, partition: Partition) -> Counter[str]:
        name = partition.name
        # Events of tasks still in the ledger: every event of a task comes at or after its
        # creation, so they are among the tasks created before the partition's end.
        kept = (
            f"SELECT e.* FROM {name} e WHERE e.task_id IN"
            " (SELECT t.id FROM tasks t WHERE t.created_at < :ends)"
        )
        with self.sessions() as session:
            session.execute(text(f"ANALYZE {name}"))
            session.commit()
            estimate = int(
                session.scalar(
                    text(
                        "SELECT greatest(reltuples, 0) FROM pg_class"
                        " WHERE oid = CAST(:n AS regclass)"
                    ),
                    {"n": name},
                )
                or 0
            )
            survivors = session.scalar(
                text(f"SELECT count(*) FROM ({kept}) k"), {"ends": partition.ends}
            )
        if survivors > RESCUE_MAX:
            log.warning(
                "partition %s kept: %s events of tasks still kept (more than %s to move)",
                name,
                survivors,
                RESCUE_MAX,
            )
            return Counter()
        try:
            with unit_of_work(self.sessions) as session:
                session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
                session.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {name}"))
                # No partition covers these days now: the rows go to the default partition.
                moved = session.execute(
                    text(f"INSERT INTO {PARENT} {kept}"), {"ends": partition.ends}
                ).rowcount
                session.execute(text(f"DROP TABLE {name}"))
                removed = max(0, max(estimate, moved) - moved)
                count_pruned(session, Counter(task_events=removed))
        except OperationalError as exc:
            log.warning("partition %s not dropped: %s", name, exc.orig)
            return Counter()
        log.info("partition dropped", extra={"partition": name, "moved": moved})
        return Counter(dropped=1, moved=moved, task_events=removed)
