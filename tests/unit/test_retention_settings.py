"""Retention settings: defaults, per-queue entries, and the refusals of bad values."""

from __future__ import annotations

import pytest

from scheduler_app.config import ConfigError, load_settings, queue_retention
from scheduler_app.services.retention.policy import Retention
from scheduler_app.states import TaskStatus


def _settings(**overrides):
    return load_settings({"profile": "test", **overrides}, environ={})


def test_defaults_follow_the_design():
    retention = Retention.from_settings(_settings())
    assert retention.of(TaskStatus.SUCCEEDED) == 7 * 86400
    assert retention.of(TaskStatus.CANCELLED) == retention.of(TaskStatus.SKIPPED) == 7 * 86400
    # failed: as long as its dead letter
    assert retention.of(TaskStatus.FAILED) == retention.of(TaskStatus.UPSTREAM_FAILED) == 30 * 86400
    with pytest.raises(ValueError):
        retention.of(TaskStatus.RUNNING)


def test_queue_retention_from_the_environment():
    settings = load_settings(
        {"profile": "test"}, environ={"SCHEDULER_QUEUE_RETENTION": "low=3600, high=60"}
    )
    assert queue_retention(settings) == {"low": 3600.0, "high": 60.0}


@pytest.mark.parametrize(
    "overrides",
    [
        {"queue_retention": "nowhere=60"},
        {"queue_retention": "low"},
        {"queue_retention": "low=0"},
        {"queue_retention": "low=abc"},
        {"retention_succeeded": 0},
        {"retention_cancelled": 3651 * 86400},
        {"retention_failed": -1},
        {"prune_interval": 61},
        {"prune_batch": 0},
        {"prune_budget": 0},
    ],
)
def test_bad_retention_settings_are_refused(overrides):
    with pytest.raises(ConfigError):
        _settings(**overrides)
