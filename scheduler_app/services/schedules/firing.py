"""The firing loop: turns due slots of schedules into tasks, each slot exactly once.

A slot fires in a transaction that inserts its ``schedule_runs`` row (unique per schedule and
slot), inserts its task through the task service's rules, and moves the schedule on to its next
slot; the task is published after the commit. A tick advances up to
``SCHEDULES_PER_TRANSACTION`` due schedules in one transaction (one commit for all of them).
Several scheduler processes may run the loop: each takes a due schedule with ``FOR UPDATE SKIP
LOCKED`` (so they share the work), and should two of them ever act on the same slot (a stale
read), the unique key lets only one commit a firing. A process killed mid-firing leaves
nothing: its transaction rolls back and the slots are still due for the others.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, inspect, or_, select, text
from sqlalchemy.orm import Session

from scheduler_app.config import Settings
from scheduler_app.errors import ValidationFailed
from scheduler_app.models import Client, Schedule, Task
from scheduler_app.models.base import utcnow
from scheduler_app.services.clients.principal import Principal, Role
from scheduler_app.services.ledger.unit import after_commit, unit_of_work
from scheduler_app.services.metrics.process import observe_schedule_lag
from scheduler_app.services.schedules.slots import Timing, jitter_of
from scheduler_app.services.tasks.service import TaskService
from scheduler_app.services.tasks.submission import insert_tasks
from scheduler_app.states import TERMINAL

log = logging.getLogger(__name__)

# Negative control of the exactly-once tests: drops the row lock and holds each firing's
# transaction open a moment, so two schedulers race on the same slot (the tests also drop the
# unique key). Never set it outside those tests.
UNGUARDED_ENV = "SCHEDULES_UNGUARDED_NEGATIVE_CONTROL"
# A due slot fired within this many seconds of its time (plus its jitter) is on time; an older
# one was missed (the scheduler was down) and the schedule's catchup policy decides.
ON_TIME_GRACE = 30.0
# At most this many slots of one schedule fire in one transaction (catchup "all" goes on next tick).
MAX_SLOTS_PER_TICK = 100
# Due schedules advanced in one transaction of a tick.
SCHEDULES_PER_TRANSACTION = 50

# A chunk's fired slots in one statement (``_settle``); a slot recorded already returns nothing.
_RUNS_INSERT = text(
    """
    INSERT INTO schedule_runs (schedule_id, slot, status, kind, task_id, created_at)
    SELECT schedule_id, slot, 'fired', kind, task_id, created_at
    FROM jsonb_to_recordset(CAST(:runs AS jsonb))
      AS r (schedule_id uuid, slot timestamptz, kind varchar, task_id uuid, created_at timestamptz)
    ON CONFLICT DO NOTHING
    RETURNING task_id
    """
)
# What a tick changes on a schedule, written for a whole chunk in one statement (``_write``).
ADVANCED = ("next_run_at", "due_at", "last_run_at", "last_task_id", "buffered_slot")
_ADVANCED_SET = frozenset(ADVANCED)
_ADVANCE = text(
    f"""
    UPDATE schedules SET {", ".join(f"{c} = r.{c}" for c in ADVANCED)}
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r (id uuid, next_run_at timestamptz,
      due_at timestamptz, last_run_at timestamptz, last_task_id uuid, buffered_slot timestamptz)
    WHERE schedules.id = r.id
    """
)


def _json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))


_RUN_INSERT = text(
    """
    INSERT INTO schedule_runs (schedule_id, slot, status, kind, task_id, detail, created_at)
    VALUES (:schedule_id, :slot, :status, :kind, :task_id, :detail, :now)
    ON CONFLICT DO NOTHING
    RETURNING id
    """
)


def timing_of(schedule: Schedule) -> Timing:
    """The slot computation of a schedule."""
    return Timing(
        cron=schedule.cron,
        interval=schedule.interval,
        timezone=schedule.timezone,
        anchor=schedule.anchor_at,
        start_at=schedule.start_at,
        end_at=schedule.end_at,
    )


def replan(schedule: Schedule, after: datetime) -> None:
    """Point the schedule at its first slot after ``after`` (none while it is disabled)."""
    slot = timing_of(schedule).next_after(after) if schedule.enabled else None
    schedule.next_run_at = slot
    schedule.due_at = slot + jitter_of(schedule.id, slot, schedule.jitter) if slot else None


def task_body(schedule: Schedule, slot: datetime) -> dict[str, Any]:
    """The submission a firing of ``slot`` makes (validated like any submitted task)."""
    body: dict[str, Any] = {
        "task": schedule.task,
        "args": list(schedule.args or []),
        "kwargs": dict(schedule.kwargs or {}),
        "tags": list(schedule.tags or []),
        "run_at": slot,
        "schedule_id": schedule.id,
    }
    for name in ("queue", "priority", "retry", "timeout", "retention"):
        if getattr(schedule, name) is not None:
            body[name] = getattr(schedule, name)
    return body


def _log_fired(schedule: Schedule, slot: datetime, kind: str) -> None:
    log.info(
        "schedule fired",
        extra={"schedule_id": str(schedule.id), "slot": slot.isoformat(), "kind": kind},
    )


@dataclass
class _Firing:
    """A slot fired in a chunk, its slot's row not inserted yet."""

    schedule: Schedule
    slot: datetime
    kind: str
    task_id: uuid.UUID
    rows: list[dict[str, Any]]
    now: datetime
    before: tuple[datetime | None, uuid.UUID | None]  # the schedule's last run and task before


@dataclass
class _Chunk:
    """What one transaction of a tick read, and the tasks its firings created."""

    schedules: list[Schedule]
    active: set[uuid.UUID]  # owners that are neither disabled nor deleted
    unfinished: set[uuid.UUID]  # previous tasks not finished (and the ones fired here)
    firings: list[_Firing] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)


@dataclass
class ScheduleRunner:
    """Fires due slots; ``tick`` is the scheduler process's job, ``fire`` also serves trigger."""

    tasks: TaskService
    settings: Settings
    clock: Callable[[], datetime] = utcnow
    unguarded: bool = field(default_factory=lambda: os.environ.get(UNGUARDED_ENV) == "1")

    def tick(self, now: datetime | None = None) -> int:
        """Fire every due slot (and release buffered ones); return how many tasks were created."""
        now = now or self.clock()
        with self.tasks.sessions() as session:
            ids = session.scalars(
                select(Schedule.id)
                .where(
                    or_(
                        Schedule.enabled & (Schedule.due_at <= now),
                        Schedule.buffered_slot.is_not(None),
                    )
                )
                .order_by(Schedule.due_at)
                .limit(500)
            ).all()
        fired = 0
        # Many due schedules share a transaction (one commit, not one per firing); each keeps
        # its row lock until that commit, and a process killed meanwhile fires none of them.
        # What a firing reads (the schedules, their owners, their previous tasks) is read once
        # per transaction, and its tasks are inserted and published together at its end.
        for start in range(0, len(ids), SCHEDULES_PER_TRANSACTION):
            with unit_of_work(self.tasks.sessions) as session:
                chunk = self._chunk(session, ids[start : start + SCHEDULES_PER_TRANSACTION])
                for schedule in chunk.schedules:
                    fired += self._advance(session, schedule, now, chunk)
                    if self.unguarded:
                        time.sleep(0.3)  # the negative control: a slow scheduler, txn open
                fired -= self._settle(session, chunk)
                self._insert(session, chunk.rows, chunk.lags)
                self._write(session, chunk.schedules)
        return fired

    @staticmethod
    def _write(session: Session, schedules: list[Schedule]) -> None:
        """Write what the tick changed on its schedules in one statement, not one UPDATE each
        at the flush; a schedule changed in any other column is left to the flush."""
        rows = []
        for schedule in schedules:
            changed = inspect(schedule).committed_state.keys()  # the attributes set since load
            if changed and changed <= _ADVANCED_SET:
                rows.append({"id": schedule.id, **{c: getattr(schedule, c) for c in ADVANCED}})
                session.expunge(schedule)  # written: nothing left for the flush
        if rows:
            session.execute(_ADVANCE, {"rows": _json(rows)})

    def _settle(self, session: Session, chunk: _Chunk) -> int:
        """Insert the rows of the chunk's fired slots in one statement; a firing whose slot is
        in the ledger already (another scheduler fired it from a stale read) is dropped with its
        task. Returns how many were dropped."""
        if not chunk.firings:
            return 0
        runs = [
            {
                "schedule_id": f.schedule.id,
                "slot": f.slot,
                "kind": f.kind,
                "task_id": f.task_id,
                "created_at": f.now,
            }
            for f in chunk.firings
        ]
        recorded = {
            uuid.UUID(str(task_id))
            for task_id in session.execute(_RUNS_INSERT, {"runs": _json(runs)}).scalars()
        }
        kept = [f for f in chunk.firings if f.task_id in recorded]
        dropped = [f for f in chunk.firings if f.task_id not in recorded]
        for schedule in {id(f.schedule): f.schedule for f in dropped}.values():
            mine = [f for f in kept if f.schedule is schedule]
            if mine:
                schedule.last_run_at, schedule.last_task_id = mine[-1].slot, mine[-1].task_id
            else:  # as before its first firing in this chunk
                first = next(f for f in chunk.firings if f.schedule is schedule)
                schedule.last_run_at, schedule.last_task_id = first.before
        for firing in kept:
            chunk.rows += firing.rows
            chunk.lags.append((firing.now - firing.slot).total_seconds())  # none is manual
            _log_fired(firing.schedule, firing.slot, firing.kind)
        return len(dropped)

    def _chunk(self, session: Session, ids: Sequence[uuid.UUID]) -> _Chunk:
        """The schedules of one transaction, locked (those another process holds are skipped,
        deleted ones are gone), with their owners' states and their previous tasks'."""
        query = select(Schedule).where(Schedule.id.in_(ids)).order_by(Schedule.due_at)
        if not self.unguarded:
            query = query.with_for_update(skip_locked=True)
        schedules = list(session.scalars(query))
        owners = {s.owner_id for s in schedules}
        active = set(
            session.scalars(
                select(Client.id).where(
                    Client.id.in_(owners), Client.disabled.is_(False), Client.deleted_at.is_(None)
                )
            )
        )
        previous = [s.last_task_id for s in schedules if s.last_task_id is not None]
        unfinished = set(
            session.scalars(
                select(Task.id).where(Task.id.in_(previous), Task.status.not_in(TERMINAL))
            )
            if previous
            else ()
        )
        return _Chunk(schedules, active, unfinished)

    def _insert(self, session: Session, rows: list[dict[str, Any]], lags: list[float]) -> None:
        """Insert the firings' tasks; publish them and observe their lags after the commit."""
        if not rows:
            return
        accepted = insert_tasks(session, rows)
        after_commit(session, lambda: self.tasks.publish(accepted))
        if lags:
            after_commit(session, lambda: [observe_schedule_lag(lag) for lag in lags])

    def next_due(self) -> datetime | None:
        """When the earliest enabled schedule is due (its slot plus jitter), or None: one probe
        of ix_schedules_due. The scheduler's loop wakes then instead of on its next tick."""
        with self.tasks.sessions() as session:
            return session.scalar(select(func.min(Schedule.due_at)).where(Schedule.enabled))

    def _advance(self, session: Session, schedule: Schedule, now: datetime, chunk: _Chunk) -> int:
        fired = 0
        if schedule.buffered_slot is not None and not self._previous_unfinished(
            session, schedule, chunk
        ):
            fired += self._release_buffered(session, schedule, now, chunk)
        if not schedule.enabled or schedule.due_at is None or schedule.due_at > now:
            return fired
        for slot, kind in self._slots_to_fire(schedule, now):
            fired += self.fire(session, schedule, slot, kind, now, chunk)
        return fired

    def _slots_to_fire(self, schedule: Schedule, now: datetime) -> list[tuple[datetime, str]]:
        """The due slots the catchup policy fires, and the schedule moved past what is due."""
        timing = timing_of(schedule)
        window_start = now - timedelta(seconds=self.settings.catchup_window)
        latest = timing.last_until(now)
        if latest is None or latest < schedule.next_run_at:
            latest = schedule.next_run_at
        on_time = now - latest <= timedelta(seconds=ON_TIME_GRACE + (schedule.jitter or 0))
        chosen: list[datetime] = []
        resume_after = now
        if schedule.catchup == "all":
            first = max(schedule.next_run_at, window_start)
            chosen = list(
                timing.between(first - timedelta(microseconds=1), now, MAX_SLOTS_PER_TICK)
            )
            if len(chosen) == MAX_SLOTS_PER_TICK:
                resume_after = chosen[-1]  # the rest on the next tick
        elif on_time or (schedule.catchup == "last" and latest >= window_start):
            chosen = [latest]
        replan(schedule, resume_after)
        grace = timedelta(seconds=ON_TIME_GRACE + (schedule.jitter or 0))
        return [(slot, "scheduled" if now - slot <= grace else "catchup") for slot in chosen]

    def fire(
        self,
        session: Session,
        schedule: Schedule,
        slot: datetime,
        kind: str,
        now: datetime,
        chunk: _Chunk | None = None,
    ) -> int:
        """Fire one slot in the session's transaction: 1 when it created a task, else 0.

        A slot already in the ledger (another scheduler fired it) does nothing; overlap rules
        apply to scheduled firings, not to manual ones. With a tick's ``chunk`` the task is
        inserted with the chunk's others at the end of the transaction.
        """
        if kind != "manual" and not self._owner_active(session, schedule, chunk):
            # A disabled or deleted client's schedules stop acting for it, as its tokens do.
            detail = "the schedule's owner is disabled or deleted"
            self._record(session, schedule, slot, "skipped", kind, None, now, detail)
            return 0
        overlapping = (
            kind != "manual"
            and schedule.overlap != "allow"
            and self._previous_unfinished(session, schedule, chunk)
        )
        if overlapping:
            if schedule.overlap == "buffer_one" and schedule.buffered_slot is None:
                if self._record(session, schedule, slot, "buffered", kind, None, now):
                    schedule.buffered_slot = slot
                return 0
            detail = f"previous task {schedule.last_task_id} has not finished"
            self._record(session, schedule, slot, "skipped", kind, None, now, detail)
            return 0
        return self._create_task(session, schedule, slot, kind, now, chunk)

    def _create_task(
        self,
        session: Session,
        schedule: Schedule,
        slot: datetime,
        kind: str,
        now: datetime,
        chunk: _Chunk | None,
        *,
        buffered: bool = False,
    ) -> int:
        owner = Principal(schedule.owner_id, Role.SUBMITTER)
        try:
            rows = self.tasks.prepare(owner, [task_body(schedule, slot)])
        except ValidationFailed as exc:
            # The task type or a queue went away since the schedule was made: record why.
            detail = "; ".join(f"{k}: {' '.join(v)}" for k, v in (exc.errors or {}).items())
            if not buffered:
                self._record(session, schedule, slot, "skipped", kind, None, now, detail)
            return 0
        task_id = rows[0]["id"]
        if chunk is not None and not buffered:
            # The slot's row is inserted with the chunk's others (``_settle``): its unique key
            # still decides whether this firing counts; until then it counts as fired.
            before = (schedule.last_run_at, schedule.last_task_id)
            chunk.firings.append(_Firing(schedule, slot, kind, task_id, rows, now, before))
            chunk.unfinished.add(task_id)
            schedule.last_run_at = slot
            schedule.last_task_id = task_id
            return 1
        if buffered:
            claimed = session.execute(
                text(
                    "UPDATE schedule_runs SET status = 'fired', task_id = :task_id"
                    " WHERE schedule_id = :schedule_id AND slot = :slot AND status = 'buffered'"
                    " RETURNING id"
                ),
                {"task_id": task_id, "schedule_id": schedule.id, "slot": slot},
            ).first()
        else:
            claimed = self._record(session, schedule, slot, "fired", kind, task_id, now)
        if not claimed:
            return 0  # another scheduler has fired this slot
        # a manual firing's slot is its own time
        lags = [(now - slot).total_seconds()] if kind != "manual" and not buffered else []
        if chunk is None:
            self._insert(session, rows, lags)
        else:  # a buffered slot released by a tick: inserted with the chunk's tasks
            chunk.rows += rows
            chunk.unfinished.add(task_id)
        schedule.last_run_at = slot
        schedule.last_task_id = task_id
        _log_fired(schedule, slot, kind)
        return 1

    def _release_buffered(
        self, session: Session, schedule: Schedule, now: datetime, chunk: _Chunk
    ) -> int:
        slot = schedule.buffered_slot
        schedule.buffered_slot = None
        return self._create_task(session, schedule, slot, "scheduled", now, chunk, buffered=True)

    @staticmethod
    def _owner_active(session: Session, schedule: Schedule, chunk: _Chunk | None) -> bool:
        if chunk is not None:
            return schedule.owner_id in chunk.active
        owner = session.execute(
            select(Client.disabled, Client.deleted_at).where(Client.id == schedule.owner_id)
        ).first()
        return owner is not None and not owner.disabled and owner.deleted_at is None

    def _previous_unfinished(
        self, session: Session, schedule: Schedule, chunk: _Chunk | None
    ) -> bool:
        if schedule.last_task_id is None:
            return False
        if chunk is not None:  # read with the chunk, or fired in it (not inserted yet)
            return schedule.last_task_id in chunk.unfinished
        status = session.scalar(select(Task.status).where(Task.id == schedule.last_task_id))
        return status is not None and status not in TERMINAL

    @staticmethod
    def _record(
        session: Session,
        schedule: Schedule,
        slot: datetime,
        status: str,
        kind: str,
        task_id: uuid.UUID | None,
        now: datetime,
        detail: str | None = None,
    ) -> bool:
        """Insert the slot's ledger row; False when the slot is there already."""
        return (
            session.execute(
                _RUN_INSERT,
                {
                    "schedule_id": schedule.id,
                    "slot": slot,
                    "status": status,
                    "kind": kind,
                    "task_id": task_id,
                    "detail": detail,
                    "now": now,
                },
            ).first()
            is not None
        )
