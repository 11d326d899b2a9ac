"""Schedules as the API sees them: create, read, list, change, delete, pause, resume, trigger."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from scheduler_app.errors import Conflict, NotFound, ValidationFailed
from scheduler_app.models import Schedule, ScheduleRun, Task
from scheduler_app.services.clients.principal import Principal
from scheduler_app.services.ledger.unit import unit_of_work
from scheduler_app.services.pagination import keyset_page, text_bytes
from scheduler_app.services.schedules.firing import ScheduleRunner, replan, task_body
from scheduler_app.services.schedules.slots import SlotError, expand_cron, zone

# Errors that come from a combination of fields (a call that does not bind the task type's
# signature): in a PATCH they join the change with stored values (a 409).
JOINED = frozenset({"args", "kwargs"})
# Fields whose change moves the schedule's next slot.
TIMING_FIELDS = frozenset({"cron", "interval", "timezone", "start_at", "end_at", "jitter"})
DEFAULTS: dict[str, Any] = {
    "args": [],
    "kwargs": {},
    "timezone": "UTC",
    "enabled": True,
    "overlap": "skip",
    "catchup": "last",
    "tags": [],
}
STORED = (
    "name",
    "task",
    "args",
    "kwargs",
    "cron",
    "interval",
    "timezone",
    "queue",
    "priority",
    "enabled",
    "overlap",
    "catchup",
    "jitter",
    "start_at",
    "end_at",
    "retry",
    "timeout",
    "retention",
    "tags",
)


@dataclass(frozen=True)
class RunView:
    """One slot of a schedule, with the status of the task it created."""

    slot: datetime
    status: str
    kind: str
    task_id: uuid.UUID | None
    task_status: str | None
    detail: str | None
    created_at: datetime


@dataclass
class ScheduleService:
    """Owner-scoped schedules over the ledger; the firing rules live in ``ScheduleRunner``."""

    runner: ScheduleRunner

    @property
    def sessions(self):
        return self.runner.tasks.sessions

    def create(self, principal: Principal, body: Mapping[str, Any]) -> Schedule:
        """A new schedule pointing at its first slot; raises ValidationFailed naming fields."""
        values = {**DEFAULTS, **{k: v for k, v in body.items() if v is not None}}
        now = self.runner.clock()
        with unit_of_work(self.sessions) as session:
            schedule = Schedule(id=uuid.uuid4(), owner_id=principal.id, created_at=now)
            for name in STORED:
                setattr(schedule, name, values.get(name))
            schedule.anchor_at = schedule.start_at or now
            schedule.updated_at = now
            self._validate(principal, schedule, now)
            replan(schedule, now)
            session.add(schedule)
        return self.get(principal, schedule.id)

    def get(self, principal: Principal, schedule_id: uuid.UUID) -> Schedule:
        """The schedule, if the principal may see it; raises NotFound otherwise."""
        with self.sessions() as session:
            return self._visible(session, principal, schedule_id)

    def list(
        self, principal: Principal, filters: Mapping[str, Any], limit: int, cursor: str | None
    ) -> tuple[list[Schedule], str | None]:
        """One page of schedules, newest first, and the next page's cursor (or None)."""
        return keyset_page(
            self.sessions,
            _filtered(select(Schedule), principal, filters),
            Schedule.created_at,
            Schedule.id,
            limit,
            cursor,
            size=text_bytes(Schedule.args, Schedule.kwargs),
            max_bytes=self.runner.settings.max_page_bytes,
        )

    def update(
        self, principal: Principal, schedule_id: uuid.UUID, changes: Mapping[str, Any]
    ) -> Schedule:
        """Change a schedule; its next slot is recomputed in the same transaction.

        Giving ``cron`` replaces an ``interval`` and the other way round. Raises NotFound,
        ValidationFailed (a field that is invalid, or an ``end_at`` before the resulting
        ``start_at``) or Conflict (arguments the stored task type cannot take).
        """
        now = self.runner.clock()
        with unit_of_work(self.sessions) as session:
            schedule = self._visible(session, principal, schedule_id, lock=True)
            if changes.get("cron") is not None:
                schedule.interval = None
            if changes.get("interval") is not None:
                schedule.cron = None
            for name, value in changes.items():
                if value is None and name in DEFAULTS:
                    value = DEFAULTS[name]  # null restores the default
                setattr(schedule, name, value)
            if {"interval", "start_at"} & set(changes):
                schedule.anchor_at = schedule.start_at or now
            schedule.updated_at = now
            self._validate(principal, schedule, now, patch=True)
            if (TIMING_FIELDS | {"enabled"}) & set(changes):
                replan(schedule, now)
        return self.get(principal, schedule_id)

    def delete(self, principal: Principal, schedule_id: uuid.UUID) -> None:
        """Delete a schedule and its slots' ledger (its tasks stay); raises NotFound."""
        with unit_of_work(self.sessions) as session:
            session.delete(self._visible(session, principal, schedule_id, lock=True))

    def set_enabled(self, principal: Principal, schedule_id: uuid.UUID, enabled: bool) -> Schedule:
        """Pause or resume; a resumed schedule goes on from its next slot after now (no
        catch-up of the pause). Raises NotFound."""
        return self.update(principal, schedule_id, {"enabled": enabled})

    def trigger(self, principal: Principal, schedule_id: uuid.UUID) -> RunView:
        """Fire once now, paused or not, recorded as a manual firing; raises NotFound."""
        now = self.runner.clock()
        with unit_of_work(self.sessions) as session:
            schedule = self._visible(session, principal, schedule_id, lock=True)
            if not self.runner.fire(session, schedule, now, "manual", now):
                raise ValidationFailed(
                    "the schedule's task cannot be submitted",
                    errors={"task": ["the task type or its queue is no longer known"]},
                )
        return self.runs(principal, schedule_id, 1, until=now)[0]

    def runs(
        self,
        principal: Principal,
        schedule_id: uuid.UUID,
        limit: int,
        until: datetime | None = None,
    ) -> list[RunView]:
        """The schedule's most recent slots (skipped ones included), newest first."""
        with self.sessions() as session:
            self._visible(session, principal, schedule_id)
            query = (
                select(ScheduleRun, Task.status)
                .outerjoin(Task, Task.id == ScheduleRun.task_id)
                .where(ScheduleRun.schedule_id == schedule_id)
                .order_by(ScheduleRun.slot.desc())
                .limit(limit)
            )
            if until is not None:
                query = query.where(ScheduleRun.slot <= until)
            return [
                RunView(
                    slot=run.slot,
                    status=run.status,
                    kind=run.kind,
                    task_id=run.task_id,
                    task_status=status,
                    detail=run.detail,
                    created_at=run.created_at,
                )
                for run, status in session.execute(query)
            ]

    def _validate(
        self, principal: Principal, schedule: Schedule, now: datetime, patch: bool = False
    ) -> None:
        """Every rule of a schedule, and every rule of the task it submits (TaskService's).

        In a change, the rules that join a new value with stored ones (which the API document
        cannot state) are a conflict with the stored schedule, not an invalid field.
        """
        errors: dict[str, list[str]] = {}
        if (schedule.cron is None) == (schedule.interval is None):
            errors["cron"] = ["give cron or interval, exactly one of them"]
        if schedule.cron is not None:
            try:
                expand_cron(schedule.cron)
            except SlotError as exc:
                errors["cron"] = [str(exc)]
        if schedule.interval is not None and schedule.interval < 1:
            errors["interval"] = ["must be at least 1 second"]
        try:
            zone(schedule.timezone)
        except SlotError as exc:
            errors["timezone"] = [str(exc)]
        # A window that ends before it starts could never fire: refused, in a change too
        # (whichever of the two the change gave). The document cannot state this rule.
        if schedule.start_at and schedule.end_at and schedule.end_at < schedule.start_at:
            errors["end_at"] = ["must not be before start_at"]
        try:
            self.runner.tasks.prepare(principal, [task_body(schedule, now)])
        except ValidationFailed as exc:
            errors.update(exc.errors or {})
        joined = {k: v for k, v in errors.items() if k in JOINED or k.startswith("kwargs.")}
        if patch and joined and joined == errors:
            raise Conflict("the change does not fit the stored schedule", errors=errors)
        if errors:
            raise ValidationFailed("the schedule cannot be accepted", errors=errors)

    def _visible(
        self, session: Session, principal: Principal, schedule_id: uuid.UUID, lock: bool = False
    ) -> Schedule:
        query = select(Schedule).where(Schedule.id == schedule_id)
        if lock:
            query = query.with_for_update()  # the firing loop skips it meanwhile
        schedule = session.scalars(query).first()
        if schedule is None or not (principal.sees_everything or schedule.owner_id == principal.id):
            raise NotFound(f"schedule {schedule_id} not found")
        return schedule


def _filtered(query: Select, principal: Principal, filters: Mapping[str, Any]) -> Select:
    if not principal.sees_everything:
        query = query.where(Schedule.owner_id == principal.id)
    if filters.get("enabled") is not None:
        query = query.where(Schedule.enabled == filters["enabled"])
    if filters.get("task") is not None:
        query = query.where(Schedule.task == filters["task"])
    return query
