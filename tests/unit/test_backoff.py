"""The retry policy's arithmetic: each delay strategy, its cap, jitter, the retry window."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from scheduler_app import limits as L
from scheduler_app.services.tasks.backoff import retry_delay, retry_window_closed
from scheduler_app.task_types import task_type

ATTEMPTS = range(1, 9)


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        # backoff * 2**(n-1), capped at backoff_max
        ("exponential", [1.5, 3, 6, 12, 20, 20, 20, 20]),
        # backoff * n, capped
        ("linear", [1.5, 3, 4.5, 6, 7.5, 9, 10.5, 12]),
        # backoff, whatever the cap
        ("fixed", [1.5] * 8),
    ],
)
def test_each_strategy_gives_its_delays(strategy, expected):
    assert [retry_delay(n, 1.5, 20, False, strategy=strategy) for n in ATTEMPTS] == expected


def test_linear_is_capped_too():
    assert [retry_delay(n, 2, 5, False, strategy="linear") for n in range(1, 5)] == [2, 4, 5, 5]


def test_default_strategy_is_exponential():
    assert [retry_delay(n, 1, 8, False) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]


def test_exponential_does_not_overflow_at_the_largest_attempt():
    assert retry_delay(L.MAX_RETRIES_MAX + 1, L.BACKOFF_MAX, L.BACKOFF_CAP_MAX, False) == (
        L.BACKOFF_CAP_MAX
    )
    assert retry_delay(5000, 1, 60, False) == 60


@pytest.mark.parametrize("strategy", L.RETRY_STRATEGIES)
def test_jitter_draws_between_zero_and_the_strategys_delay(strategy):
    rng = random.Random(11)
    for n in ATTEMPTS:
        cap = retry_delay(n, 0.5, 3, False, strategy=strategy)
        drawn = [retry_delay(n, 0.5, 3, True, rng, strategy=strategy) for _ in range(100)]
        assert all(0 <= d <= cap for d in drawn)
        assert len(set(drawn)) > 1


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError):
        retry_delay(1, 1, 1, False, strategy="random")


def test_retry_window_closes_at_max_retry_duration_since_the_first_start():
    first = datetime(2026, 12, 1, tzinfo=UTC)
    assert not retry_window_closed(first, first + timedelta(seconds=9.99), 10)
    assert retry_window_closed(first, first + timedelta(seconds=10), 10)
    assert not retry_window_closed(first, first + timedelta(days=999), None)
    assert not retry_window_closed(None, first, 10)


def test_task_type_defaults_carry_the_strategy_and_are_checked():
    @task_type("unit.linear", retry_strategy="linear", max_retry_duration=30, backoff=2)
    def linear() -> None:
        """A type with a linear default policy."""

    from scheduler_app.task_types import _REGISTRY

    described = _REGISTRY.pop("unit.linear").describe()["retry"]
    assert described == {"backoff": 2, "strategy": "linear", "max_retry_duration": 30}
    with pytest.raises(ValueError):
        task_type("unit.bad", retry_strategy="sometimes")
    with pytest.raises(ValueError):
        task_type("unit.bad", max_retry_duration=0)
