"""Schedules fired by real scheduler processes: on time, changed live, two schedulers at once."""

from __future__ import annotations

import itertools
import os
import signal
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from scheduler_app.models import Task
from scheduler_app.services.schedules.firing import UNGUARDED_ENV
from tests.support import Process, scheduler_argv, wait_until

# Negative control of test_two_schedulers_never_double_a_slot_and_survive_one_killed: with
# SCHEDULES_NEGATIVE_CONTROL=1 the test drops the unique slot key and the schedulers' row lock
# (UNGUARDED_ENV); it then fails, finding slots fired twice.
NEGATIVE_CONTROL = os.environ.get("SCHEDULES_NEGATIVE_CONTROL") == "1"


class Api:
    """The stack's API as a submitter."""

    def __init__(self, stack) -> None:
        self.stack = stack
        self.http = stack.app.test_client()
        client, secret = stack.ext.clients.create("schedules", "submitter")
        token = self.http.post(
            "/api/v1/auth/token", json={"client_id": client.client_id, "client_secret": secret}
        ).json["access_token"]
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, status: int, **body) -> dict:
        kwargs = {"json": body} if body else {}
        response = getattr(self.http, method)(path, headers=self.headers, **kwargs)
        assert response.status_code == status, response.get_data()[:500]
        return response.json if response.get_data() else {}

    def tasks(self, schedule_id: str) -> list[Task]:
        with self.stack.ext.tasks.sessions() as session:
            query = select(Task).where(Task.schedule_id == schedule_id).order_by(Task.run_at)
            return list(session.scalars(query))

    def count(self, schedule_id: str) -> int:
        with self.stack.ext.tasks.sessions() as session:
            return session.scalar(
                select(func.count()).select_from(Task).where(Task.schedule_id == schedule_id)
            )


@pytest.fixture
def api(stack) -> Api:
    return Api(stack)


def _every_second(api: Api, **extra) -> dict:
    body = {"name": "tick", "task": "demo.echo", "interval": 1, "overlap": "allow", **extra}
    return api.call("post", "/api/v1/schedules", 201, **body)


def test_interval_schedule_fires_on_time_and_its_tasks_run(stack, api):
    stack.scheduler()
    stack.worker("default", 1)
    schedule = _every_second(api, kwargs={"hello": "world"})
    wait_until(
        lambda: sum(t.status == "succeeded" for t in api.tasks(schedule["id"])) >= 3,
        30,
        0.1,
        message="three firings to succeed",
    )
    tasks = api.tasks(schedule["id"])[:3]
    anchor = datetime.fromisoformat(schedule["next_run_at"]) - timedelta(seconds=1)
    for task in tasks:
        assert (task.run_at - anchor).total_seconds() % 1 == 0  # a slot of the schedule
        assert task.created_at - task.run_at < timedelta(seconds=3)  # fired on time
        assert task.result == {"args": [], "kwargs": {"hello": "world"}}
    steps = [(b.run_at - a.run_at).total_seconds() for a, b in itertools.pairwise(tasks)]
    assert steps == [1.0, 1.0]
    got = api.call("get", f"/api/v1/schedules/{schedule['id']}", 200)
    assert got["last_task_id"] is not None and got["last_run_at"] is not None


# Negative control of test_a_slot_fires_at_its_time_not_a_tick_later: with
# SCHEDULE_WAKE_NEGATIVE_CONTROL=1 the scheduler looks for due slots only every
# schedule_interval (SCHEDULER_TEST_REMOVE=schedule_wake); the test then fails on late slots.
WAKE_CONTROL = os.environ.get("SCHEDULE_WAKE_NEGATIVE_CONTROL") == "1"


def test_a_slot_fires_at_its_time_not_a_tick_later(stack, api):
    """With the firing loop's period at 5 s, a schedule every second still fires each slot
    within a second of its time, one task per slot: the loop wakes when the earliest schedule
    is due. (The first slot may be late: the schedule was created while the loop slept.)
    """
    env = {"SCHEDULER_SCHEDULE_INTERVAL": "5"}
    if WAKE_CONTROL:
        env["SCHEDULER_TEST_REMOVE"] = "schedule_wake"
    stack.scheduler(**env)
    schedule = _every_second(api, queue="low")  # nothing consumes low: tasks stay queued
    wait_until(lambda: api.count(schedule["id"]) >= 5, 30, 0.1, message="five firings")
    tasks = api.tasks(schedule["id"])[1:5]
    lags = [round((t.created_at - t.run_at).total_seconds(), 3) for t in tasks]
    assert max(lags) < 1.0, f"slots fired late: {lags} s after their time"
    steps = [(b.run_at - a.run_at).total_seconds() for a, b in itertools.pairwise(tasks)]
    assert steps == [1.0, 1.0, 1.0], f"slots skipped: {[t.run_at for t in tasks]}"


def _stays(api: Api, schedule_id: str, seconds: float = 2.5) -> int:
    before = api.count(schedule_id)
    time.sleep(seconds)
    assert api.count(schedule_id) == before, "fired while it should not"
    return before


def _grows(api: Api, schedule_id: str, than: int) -> None:
    wait_until(lambda: api.count(schedule_id) > than, 15, 0.1, message="another firing")


def test_pause_resume_patch_and_delete_apply_without_restarting(stack, api):
    stack.scheduler()
    schedule = _every_second(api, queue="low")  # nothing consumes low: tasks stay queued
    url = f"/api/v1/schedules/{schedule['id']}"
    _grows(api, schedule["id"], 1)
    api.call("post", url + "/pause", 200)
    paused = _stays(api, schedule["id"])
    api.call("post", url + "/resume", 200)
    _grows(api, schedule["id"], paused)
    api.call("patch", url, 200, interval=3600)
    hourly = _stays(api, schedule["id"])
    api.call("patch", url, 200, interval=1)
    _grows(api, schedule["id"], hourly)
    api.call("delete", url, 204)
    _stays(api, schedule["id"])


def _scheduler(stack, **env: str) -> Process:
    proc = Process("scheduler", scheduler_argv(), {**stack.env, **env}, stack.logdir).start()
    stack.processes.append(proc)
    proc.wait_for_log("scheduler started", 30)
    return proc


def test_two_schedulers_never_double_a_slot_and_survive_one_killed(stack, api):
    """Two scheduler processes fire one schedule every second; one is killed mid-run. Every
    slot from the first to the last fired exactly once (none doubled, none lost).

    Negative control: ``SCHEDULES_NEGATIVE_CONTROL=1 pytest -k two_schedulers_never`` drops
    the unique slot key and the row lock: the test then fails on slots fired twice.
    """
    env = {}
    if NEGATIVE_CONTROL:
        with stack.ext.engine.begin() as conn:
            conn.execute(
                text("ALTER TABLE schedule_runs DROP CONSTRAINT uq_schedule_runs_schedule_slot")
            )
        env[UNGUARDED_ENV] = "1"
    first, _second = _scheduler(stack, **env), _scheduler(stack, **env)
    schedule = _every_second(api, queue="low")
    wait_until(lambda: api.count(schedule["id"]) >= 5, 30, 0.1, message="five firings")
    first.signal(signal.SIGKILL)
    first.process.wait(10)
    seen = api.count(schedule["id"])
    wait_until(lambda: api.count(schedule["id"]) >= seen + 4, 30, 0.1, message="the survivor")
    api.call("post", f"/api/v1/schedules/{schedule['id']}/pause", 200)
    slots = [t.run_at for t in api.tasks(schedule["id"])]
    doubled = sorted({s for s in slots if slots.count(s) > 1})
    assert not doubled, f"slots fired twice: {doubled}"
    steps = {(b - a).total_seconds() for a, b in itertools.pairwise(slots)}
    assert steps == {1.0}, f"slots lost: {slots}"
    runs = api.call("get", f"/api/v1/schedules/{schedule['id']}/runs?limit=1000", 200)["items"]
    assert sorted(r["task_id"] for r in runs) == sorted(
        str(t.id) for t in api.tasks(schedule["id"])
    )
