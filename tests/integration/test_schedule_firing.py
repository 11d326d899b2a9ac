"""The firing rules on the real ledger, on an injected clock: cron slots (DST), catch-up after
downtime, overlap, and the unique slot key that makes a slot fire once."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from scheduler_app.models import ScheduleRun, Task
from scheduler_app.services.clients.principal import Principal, Role
from scheduler_app.services.ledger.unit import unit_of_work
from scheduler_app.services.schedules.firing import ScheduleRunner
from scheduler_app.services.schedules.service import ScheduleService
from scheduler_app.services.schedules.slots import jitter_of
from tests.support import TestDatabase, app_for, settings_for

# Negative control of the tests that use the slot_key fixture: set it to 1 and
# the fixture drops the unique (schedule_id, slot) key first; each then fails (two tasks).
NEGATIVE_CONTROL = os.environ.get("SCHEDULES_NEGATIVE_CONTROL") == "1"


# A database of this module's own: its clocks are days in the past, and a real scheduler on
# the session's database (the ``scheduler`` fixture of another file in this process) would fire
# these schedules by the wall clock between the ticks the tests make.
@pytest.fixture(scope="module")
def database() -> Iterator[TestDatabase]:
    db = TestDatabase()
    db.create()
    yield db
    db.drop()


@pytest.fixture(scope="module")
def settings(database, redis_server):
    return settings_for(database.url, redis_server.url)


@pytest.fixture(scope="module")
def app(settings):
    application = app_for(settings)
    yield application
    application.extensions["scheduler"].engine.dispose()


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def owner(app) -> Principal:
    client, _ = app.extensions["scheduler"].clients.create(
        f"sch-{uuid.uuid4().hex[:6]}", "submitter"
    )
    return Principal(client.id, Role.SUBMITTER)


@pytest.fixture
def clock() -> Clock:
    # In the past, so the tasks are due at once; a distinct minute per test.
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=5)
    return Clock(base - timedelta(minutes=uuid.uuid4().int % 10_000))


@pytest.fixture
def service(app, settings, clock) -> ScheduleService:
    return ScheduleService(ScheduleRunner(app.extensions["scheduler"].tasks, settings, clock=clock))


def _tasks(app, schedule_id) -> list[Task]:
    with app.extensions["scheduler"].tasks.sessions() as session:
        query = select(Task).where(Task.schedule_id == schedule_id).order_by(Task.run_at)
        return list(session.scalars(query))


def _runs(app, schedule_id) -> list[ScheduleRun]:
    with app.extensions["scheduler"].tasks.sessions() as session:
        query = select(ScheduleRun).where(ScheduleRun.schedule_id == schedule_id)
        return list(session.scalars(query.order_by(ScheduleRun.slot)))


def _interval(service, owner, **extra):
    body = {"name": "every minute", "task": "demo.echo", "queue": "low", "interval": 60, **extra}
    return service.create(owner, body)


def test_cron_fires_each_slot_once_with_the_slot_as_run_at(app, service, owner, clock):
    t0 = clock.at.replace(minute=0)
    clock.at = t0
    schedule = service.create(
        owner,
        {
            "name": "c",
            "task": "demo.echo",
            "queue": "low",
            "cron": "*/5 * * * *",
            "overlap": "allow",
        },
    )
    assert schedule.next_run_at == t0 + timedelta(minutes=5)
    runner = service.runner
    for minutes in (4, 5, 5, 6, 10, 10.5):
        runner.tick(t0 + timedelta(minutes=minutes, seconds=1))
    tasks = _tasks(app, schedule.id)
    assert [t.run_at for t in tasks] == [t0 + timedelta(minutes=5), t0 + timedelta(minutes=10)]
    assert all(t.status == "queued" and t.queue == "low" for t in tasks)
    assert service.get(owner, schedule.id).last_task_id == tasks[-1].id
    assert [r.kind for r in _runs(app, schedule.id)] == ["scheduled", "scheduled"]


def test_daily_0230_berlin_fires_once_a_day_across_spring_forward(app, service, owner, clock):
    start = datetime(2026, 3, 28, 0, 0, tzinfo=UTC)
    clock.at = start
    schedule = service.create(
        owner,
        {
            "name": "nightly",
            "task": "demo.echo",
            "queue": "low",
            "cron": "30 2 * * *",
            "timezone": "Europe/Berlin",
            "overlap": "allow",
        },
    )
    for step in range(0, 3 * 24 * 4):  # every 15 minutes for three days
        service.runner.tick(start + timedelta(minutes=15 * step, seconds=1))
    assert [t.run_at for t in _tasks(app, schedule.id)] == [
        datetime(2026, 3, 28, 1, 30, tzinfo=UTC),  # 02:30 CET
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),  # 02:30 does not exist: 03:30 CEST
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST
    ]


@pytest.mark.parametrize(
    ("catchup", "expected"),
    [("none", []), ("last", [720]), ("all", list(range(120, 721, 60)))],
)
def test_catchup_after_downtime_follows_the_policy(app, service, owner, clock, catchup, expected):
    t0 = clock.at
    schedule = _interval(service, owner, catchup=catchup, overlap="allow")
    service.runner.tick(t0 + timedelta(seconds=61))  # on time
    service.runner.tick(t0 + timedelta(seconds=760))  # back after ten minutes down
    fired = [(t.run_at - t0).total_seconds() for t in _tasks(app, schedule.id)]
    assert fired == [60, *expected]
    kinds = [r.kind for r in _runs(app, schedule.id)]
    assert kinds == ["scheduled"] + ["catchup"] * len(expected)
    assert service.get(owner, schedule.id).next_run_at == t0 + timedelta(seconds=780)


def test_catchup_all_stops_at_the_catchup_window(app, service, owner, clock, settings):
    t0 = clock.at
    schedule = _interval(service, owner, catchup="all", overlap="allow")
    service.runner.tick(t0 + timedelta(seconds=61))
    back = t0 + timedelta(seconds=7300)  # two hours down; the window is an hour
    service.runner.tick(back)
    fired = [t.run_at for t in _tasks(app, schedule.id)][1:]
    assert fired[0] >= back - timedelta(seconds=settings.catchup_window)
    assert len(fired) == settings.catchup_window // 60


def test_overlap_skip_records_the_skipped_slot_until_the_previous_task_ends(
    app, service, owner, clock
):
    t0 = clock.at
    schedule = _interval(service, owner)  # overlap defaults to skip
    runner = service.runner
    runner.tick(t0 + timedelta(seconds=61))
    runner.tick(t0 + timedelta(seconds=121))
    [first] = _tasks(app, schedule.id)
    runs = _runs(app, schedule.id)
    assert [(r.status, r.task_id) for r in runs] == [("fired", first.id), ("skipped", None)]
    assert str(first.id) in runs[1].detail
    app.extensions["scheduler"].tasks.cancel(owner, first.id)
    runner.tick(t0 + timedelta(seconds=181))
    assert [(t.run_at - t0).total_seconds() for t in _tasks(app, schedule.id)] == [60, 180]


def test_overlap_buffer_one_keeps_one_slot_until_the_previous_task_ends(app, service, owner, clock):
    t0 = clock.at
    schedule = _interval(service, owner, overlap="buffer_one")
    runner = service.runner
    for seconds in (61, 121, 181):
        runner.tick(t0 + timedelta(seconds=seconds))
    assert [r.status for r in _runs(app, schedule.id)] == ["fired", "buffered", "skipped"]
    [first] = _tasks(app, schedule.id)
    app.extensions["scheduler"].tasks.cancel(owner, first.id)
    runner.tick(t0 + timedelta(seconds=182))
    assert [(t.run_at - t0).total_seconds() for t in _tasks(app, schedule.id)] == [60, 120]
    assert [r.status for r in _runs(app, schedule.id)] == ["fired", "fired", "skipped"]


def test_jitter_delays_the_firing_not_the_slot(app, service, owner, clock):
    t0 = clock.at
    schedule = _interval(service, owner, jitter=30)
    slot = t0 + timedelta(seconds=60)
    due = slot + jitter_of(schedule.id, slot, 30)
    service.runner.tick(due - timedelta(milliseconds=1))
    assert _tasks(app, schedule.id) == []
    service.runner.tick(due)
    assert [t.run_at for t in _tasks(app, schedule.id)] == [slot]


def test_schedules_of_a_disabled_owner_are_skipped(app, service, owner, clock):
    t0 = clock.at
    schedule = _interval(service, owner, overlap="allow")
    clients = app.extensions["scheduler"].clients
    with clients.sessions() as session, session.begin():
        session.execute(text("UPDATE clients SET disabled = true WHERE id = :id"), {"id": owner.id})
    service.runner.tick(t0 + timedelta(seconds=61))
    assert _tasks(app, schedule.id) == []
    [run] = _runs(app, schedule.id)
    assert run.status == "skipped" and "owner" in run.detail


def test_paused_schedule_does_not_fire_and_resume_does_not_catch_up(app, service, owner, clock):
    t0 = clock.at
    schedule = _interval(service, owner, overlap="allow")
    service.set_enabled(owner, schedule.id, False)
    service.runner.tick(t0 + timedelta(seconds=300))
    assert _tasks(app, schedule.id) == []
    clock.at = t0 + timedelta(seconds=300)
    resumed = service.set_enabled(owner, schedule.id, True)
    assert resumed.next_run_at == t0 + timedelta(seconds=360)
    service.runner.tick(t0 + timedelta(seconds=361))
    assert [(t.run_at - t0).total_seconds() for t in _tasks(app, schedule.id)] == [360]


def test_patch_applies_to_the_next_firing(app, service, owner, clock):
    t0 = clock.at
    schedule = _interval(service, owner, overlap="allow")
    clock.at = t0 + timedelta(seconds=30)
    changed = service.update(owner, schedule.id, {"interval": 3600})
    assert changed.next_run_at == t0 + timedelta(seconds=30 + 3600)
    service.runner.tick(t0 + timedelta(seconds=600))
    assert _tasks(app, schedule.id) == []


def test_two_schedulers_acting_on_one_slot_create_one_task(app, service, owner, clock, slot_key):
    """Two scheduler processes that both read the schedule before either fired (a stale read)
    each try to fire the slot: the unique (schedule_id, slot) key lets one of them commit.

    Negative control: ``SCHEDULES_NEGATIVE_CONTROL=1 pytest -k two_schedulers_acting`` drops
    the key first, and this test fails with two tasks for the slot.
    """
    t0 = clock.at
    schedule = _interval(service, owner, overlap="allow")
    slot = schedule.next_run_at
    now = t0 + timedelta(seconds=61)
    sessions = service.sessions
    from scheduler_app.models import Schedule

    with unit_of_work(sessions) as late:
        stale = late.get(Schedule, schedule.id)  # read before the other one fires
        with unit_of_work(sessions) as first:
            fired = service.runner.fire(
                first, first.get(Schedule, schedule.id), slot, "scheduled", now
            )
        assert fired == 1
        again = service.runner.fire(late, stale, slot, "scheduled", now)
    assert again == 0
    with sessions() as session:
        count = session.scalar(
            select(func.count()).select_from(Task).where(Task.schedule_id == schedule.id)
        )
    assert count == 1


@pytest.fixture
def slot_key(app) -> Iterator[None]:
    """The unique (schedule_id, slot) key; dropped for the test under NEGATIVE_CONTROL."""
    engine = app.extensions["scheduler"].engine
    if not NEGATIVE_CONTROL:
        yield
        return
    with engine.begin() as conn:
        conn.execute(
            text("ALTER TABLE schedule_runs DROP CONSTRAINT uq_schedule_runs_schedule_slot")
        )
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM schedule_runs"))
            conn.execute(
                text(
                    "ALTER TABLE schedule_runs ADD CONSTRAINT uq_schedule_runs_schedule_slot"
                    " UNIQUE (schedule_id, slot)"
                )
            )


def test_a_tick_drops_the_firing_of_a_slot_another_scheduler_recorded(
    app, service, owner, clock, slot_key
):
    """A tick inserts its firings' slot rows together at the end of its transaction: a slot
    another scheduler recorded meanwhile (it fired from a stale read) creates no second task,
    and leaves its schedule's last task as it was; the tick's other firings still count.

    Negative control: ``SCHEDULES_NEGATIVE_CONTROL=1 pytest -k another_scheduler_recorded``
    drops the unique slot key first; the test then fails with two tasks for the slot.
    """
    taken = _interval(service, owner, overlap="allow")
    other = _interval(service, owner, overlap="allow")
    slot = taken.next_run_at
    with unit_of_work(service.sessions) as session:  # the other scheduler's firing of it
        session.add(
            ScheduleRun(
                schedule_id=taken.id, slot=slot, status="fired", kind="scheduled", task_id=None
            )
        )
    service.runner.tick(slot + timedelta(seconds=1))  # (other tests' schedules may fire too)
    assert _tasks(app, taken.id) == []
    assert [t.run_at for t in _tasks(app, other.id)] == [other.next_run_at]
    assert [r.slot for r in _runs(app, taken.id)] == [slot]
    with service.sessions() as session:
        from scheduler_app.models import Schedule

        after = session.get(Schedule, taken.id)
        assert after.last_task_id is None and after.last_run_at is None
        assert after.next_run_at == slot + timedelta(seconds=60)
