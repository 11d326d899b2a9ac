"""scheduler_schedule_lag_seconds: each scheduled firing observes slot -> task created once."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import REGISTRY

from tests.integration.test_schedule_firing import (  # noqa: F401 - fixtures
    _interval,
    _tasks,
    clock,
    owner,
    service,
)


def _count() -> float:
    return REGISTRY.get_sample_value("scheduler_schedule_lag_seconds_count") or 0.0


def _sum() -> float:
    return REGISTRY.get_sample_value("scheduler_schedule_lag_seconds_sum") or 0.0


def test_each_firing_observes_its_lag_and_a_manual_trigger_none(app, service, owner, clock):  # noqa: F811
    schedule = _interval(service, owner, overlap="allow")
    start = clock.at
    clock.at = start + timedelta(minutes=3, seconds=7)  # three slots due, the last 7 s late
    before, before_sum = _count(), _sum()
    fired = service.runner.tick()
    assert fired == len(_tasks(app, schedule.id)) >= 1
    assert _count() - before == fired
    assert _sum() - before_sum >= 7.0
    count = _count()
    service.trigger(owner, schedule.id)
    assert _count() == count, "a manual firing has no slot to be late for"
