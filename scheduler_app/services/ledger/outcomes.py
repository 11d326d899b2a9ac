"""The one seam for "a task ended": consumers register here and see each outcome exactly once.

Every terminal transition (``ledger.transitions``) writes, in the same statement that ends the
task, one ``task_outcomes`` row naming the consumers that want it. That row is the promise: it
commits or rolls back with the end of the task, so no outcome is announced for a task that did
not end, and none is lost by a process that dies right after. ``drain`` hands the rows to their
consumers and deletes them in one transaction, so each consumer sees each outcome once:

- right after the commit, in the process that ended the task (an after-commit hook);
- and by the scheduler's sweep, for rows whose process died before its hook ran.

A *deferred* consumer (``on_outcome(..., deferred=True)``) is left to the sweep alone: the
process that ended the task does not hand its rows over, and the sweep takes them at once, in
batches. The notifier is one: announcing an end is not the ending worker's business, and a
sweep writes the deliveries of hundreds of ends in one statement where the worker would spend
a transaction on each.

A consumer says which tasks it wants with a SQL condition over the task's columns (``wants``),
evaluated in the ending statement itself: a task nobody wants writes no row, so the worker's
fast path stays one round trip. Consumers are registered with :func:`on_outcome` by the
platform's own domains (workflows, notifiers) and by any module of the ``task_modules`` setting.
"""

from __future__ import annotations

import importlib
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app.services.ledger.unit import unit_of_work
from scheduler_app.states import TaskStatus

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[a-z][a-z0-9_.]{0,99}$")
# A consumer that raised is offered the row again after this long, doubling up to the cap.
RETRY_FIRST, RETRY_CAP = 1.0, 300.0
# How long an outcome row waits for the process that wrote it before the scheduler's sweep
# takes it (that process died, or its hand-over failed).
SWEEP_AFTER = 1.0


class OutcomeError(Exception):
    """A consumer cannot be registered as given."""


@dataclass(frozen=True)
class Outcome:
    """A task reached a terminal state (one row of ``task_outcomes``)."""

    id: int
    task_id: uuid.UUID
    status: TaskStatus
    attempt: int
    at: datetime


Handler = Callable[[Session, Sequence[Outcome]], None]


@dataclass(frozen=True)
class Consumer:
    """``handle`` runs in the transaction that deletes the outcomes it is given."""

    name: str
    wants: str
    columns: tuple[str, ...]
    handle: Handler
    deferred: bool = False


class OutcomeSeam:
    """The registration point, and the SQL every terminal transition carries for it."""

    def __init__(self) -> None:
        self._consumers: dict[str, Consumer] = {}
        self.version = 0

    @property
    def consumers(self) -> tuple[Consumer, ...]:
        return tuple(self._consumers.values())

    def register(
        self,
        name: str,
        *,
        wants: str = "TRUE",
        columns: Sequence[str] = (),
        deferred: bool = False,
    ) -> Callable[[Handler], Handler]:
        """Decorator: ``handle(session, outcomes)`` for every outcome of a task matching ``wants``.

        ``wants`` is a SQL condition over the columns named in ``columns`` of the ended task
        (e.g. ``"workflow_id IS NOT NULL"``). ``deferred``: only the scheduler's sweep hands
        these over (see the module's docstring). Registering a name again replaces the consumer.
        """
        if not _NAME.match(name):
            raise OutcomeError(f"consumer name {name!r} must match {_NAME.pattern}")
        for column in columns:
            if not column.isidentifier():
                raise OutcomeError(f"column {column!r} is not a column name")

        def decorate(handle: Handler) -> Handler:
            self._consumers[name] = Consumer(name, wants, tuple(columns), handle, deferred)
            self.version += 1
            return handle

        return decorate

    def unregister(self, name: str) -> None:
        """Forget a consumer (tests)."""
        if self._consumers.pop(name, None) is not None:
            self.version += 1

    def columns(self) -> tuple[str, ...]:
        """Columns of the ended task that the consumers' conditions read."""
        return tuple(dict.fromkeys(c for consumer in self.consumers for c in consumer.columns))

    def immediate(self) -> list[str]:
        """Names of the consumers that the ending process hands over to right after commit."""
        return [c.name for c in self._consumers.values() if not c.deferred]

    def record_sql(self, to: TaskStatus) -> str | None:
        """The CTE that records ``to`` for the rows of ``moved``; None when nobody listens.

        It returns the outcome's id only where an immediate consumer wants it: that id is what
        the ending process hands over after its commit (a NULL leaves the row to the sweep).
        """
        if not self._consumers:
            return None
        wanted = ", ".join(
            f"CASE WHEN ({c.wants}) THEN '{c.name}' END" for c in self._consumers.values()
        )
        immediate = _array(self.immediate())
        return f"""outcome AS (
    INSERT INTO task_outcomes (task_id, status, attempt, at, consumers)
    SELECT id, '{to.value}', attempts, clock_timestamp(), wanted FROM (
        SELECT id, attempts, array_remove(ARRAY[{wanted}]::varchar[], NULL) AS wanted FROM moved
    ) AS interest
    WHERE cardinality(wanted) > 0
    RETURNING CASE WHEN consumers && {immediate} THEN id END AS id, task_id
)"""

    def drain(
        self,
        sessions: sessionmaker[Session],
        ids: Sequence[int] | None = None,
        limit: int = 500,
        *,
        deferred: bool = False,
    ) -> int:
        """Hand pending outcomes (these ``ids``, or the oldest due ones) to their consumers.

        ``deferred``: only the rows that deferred consumers alone want, however fresh (the
        notifier's thread takes those); otherwise, without ``ids``, the rows left for
        SWEEP_AFTER seconds (their process died, or no deferred sweep took them).

        Rows another process is draining are skipped, not waited for. A consumer that raises
        rolls back its batch; the rows are then tried one by one so that one bad row cannot
        hold back the others, and a row that still fails waits (backing off) for a later sweep.
        Returns how many outcomes were consumed.
        """
        if ids is not None and not ids:
            return 0
        try:
            with unit_of_work(sessions) as session:
                return self._consume(session, self._take(session, ids, limit, deferred))
        except Exception:
            log.exception("outcome consumer failed; retrying the batch row by row")
        with sessions() as session:
            pending = [row.id for row in self._take(session, ids, limit, deferred)]
            session.rollback()
        done = 0
        for row_id in pending:
            try:
                with unit_of_work(sessions) as session:
                    done += self._consume(session, self._take(session, [row_id], 1))
            except Exception as exc:
                log.exception("outcome consumer failed", extra={"outcome_id": row_id})
                self._postpone(sessions, row_id, exc)
        return done

    def _take(
        self, session: Session, ids: Sequence[int] | None, limit: int, deferred: bool = False
    ) -> list[Any]:
        # A sweep leaves fresh rows to the process that wrote them (it hands them over right
        # after its commit): it takes only those left for SWEEP_AFTER seconds. The deferred
        # sweep takes at once the rows that only deferred consumers want.
        if ids is not None:
            chosen = "id = ANY(:ids)"
        elif deferred:
            chosen = f"NOT consumers && {_array(self.immediate())}"
        else:
            chosen = f"at < clock_timestamp() - interval '{SWEEP_AFTER} seconds'"
        return session.execute(
            text(
                "SELECT id, task_id, status, attempt, at, consumers FROM task_outcomes "
                f"WHERE {chosen} AND (not_before IS NULL OR not_before <= clock_timestamp()) "
                "ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED"
            ),
            {"ids": list(ids or []), "limit": limit},
        ).all()

    def _consume(self, session: Session, rows: Sequence[Any]) -> int:
        if not rows:
            return 0
        known = self._consumers
        for consumer in known.values():
            mine = [_outcome(row) for row in rows if consumer.name in row.consumers]
            if mine:
                consumer.handle(session, mine)
        finished = [row.id for row in rows if set(row.consumers) <= known.keys()]
        # A row also wanted by a consumer this process does not know waits for one that does.
        for row in rows:
            if row.id not in finished:
                left = [name for name in row.consumers if name not in known]
                session.execute(
                    text("UPDATE task_outcomes SET consumers = :left WHERE id = :id"),
                    {"left": left, "id": row.id},
                )
        if finished:
            session.execute(
                text("DELETE FROM task_outcomes WHERE id = ANY(:ids)"), {"ids": finished}
            )
        return len(rows)

    def _postpone(self, sessions: sessionmaker[Session], row_id: int, exc: Exception) -> None:
        try:
            with unit_of_work(sessions) as session:
                session.execute(
                    text(
                        "UPDATE task_outcomes SET attempts = attempts + 1, last_error = :error, "
                        "not_before = clock_timestamp() + make_interval(secs => "
                        "least(:cap, :first * power(2, attempts))) WHERE id = :id"
                    ),
                    {
                        "error": f"{type(exc).__name__}: {exc}"[:2000],
                        "cap": RETRY_CAP,
                        "first": RETRY_FIRST,
                        "id": row_id,
                    },
                )
        except Exception:
            log.exception("could not postpone an outcome", extra={"outcome_id": row_id})


def _array(names: Sequence[str]) -> str:
    # Consumer names match _NAME (no quotes), so they can be SQL literals.
    return "ARRAY[{}]::varchar[]".format(", ".join(f"'{n}'" for n in names))


def _outcome(row: Any) -> Outcome:
    return Outcome(row.id, row.task_id, TaskStatus(row.status), row.attempt, row.at)


# The platform's one seam; consumers register on import of the module that defines them.
SEAM = OutcomeSeam()
on_outcome = SEAM.register

# The platform's own consumers. Every process that ends tasks (API, worker, scheduler) must
# know them, or its terminal moves would not record the outcome they want: load_task_modules,
# which each of them calls, loads these too.
PLATFORM_CONSUMERS = (
    "scheduler_app.services.workflows.advance",
    "scheduler_app.services.notifiers.announce",
)


def load_platform_consumers() -> None:
    """Import the platform's consumer modules so that they register."""
    for module in PLATFORM_CONSUMERS:
        importlib.import_module(module)
