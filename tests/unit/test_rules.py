"""Pure rules: backoff, the transition table, idempotency hashing, task type call checks."""

from __future__ import annotations

import random

import pytest

from scheduler_app.services.tasks.backoff import retry_delay
from scheduler_app.services.tasks.submission import request_hash
from scheduler_app.states import ALLOWED_SOURCES, TERMINAL, TaskStatus
from scheduler_app.task_types import load_task_modules


def test_backoff_doubles_up_to_the_cap():
    delays = [retry_delay(n, 1, 8, jitter=False) for n in range(1, 7)]
    assert delays == [1, 2, 4, 8, 8, 8]


def test_full_jitter_stays_between_zero_and_the_cap():
    rng = random.Random(7)
    for attempt in range(1, 10):
        cap = min(8, 0.5 * 2 ** (attempt - 1))
        assert all(0 <= retry_delay(attempt, 0.5, 8, True, rng) <= cap for _ in range(200))


def test_no_transition_leaves_a_terminal_state():
    for target, sources in ALLOWED_SOURCES.items():
        assert not (sources & TERMINAL), target
    assert TaskStatus.RUNNING in ALLOWED_SOURCES[TaskStatus.SUCCEEDED]
    assert TaskStatus.QUEUED not in ALLOWED_SOURCES[TaskStatus.SUCCEEDED]


def test_request_hash_ignores_key_order_and_the_key_itself():
    a = {"task": "demo.echo", "args": [1], "kwargs": {"x": 1, "y": 2}, "idempotency_key": "k1"}
    b = {"kwargs": {"y": 2, "x": 1}, "args": [1], "task": "demo.echo", "idempotency_key": "k2"}
    assert request_hash(a) == request_hash(b)
    assert request_hash(a) != request_hash({**a, "args": [2]})


@pytest.fixture(scope="module")
def types():
    return load_task_modules(["tasks.demo", "tasks.http"])


def test_call_that_cannot_bind_is_refused_before_it_is_queued(types):
    assert types["demo.fail"].check_call(["a", "b", "c"], {})  # too many positional arguments
    assert types["demo.echo"].check_call([1, 2], {"any": "thing"}) == {}
    assert "kwargs.ctx" in types["demo.flaky"].check_call([], {"ctx": 1})


def test_http_request_validates_its_url_and_method(types):
    check = types["http.request"].check_call
    assert check([], {"url": "https://example.test/x"}) == {}
    assert "kwargs.url" in check([], {"url": "ftp://example.test"})
    assert "url" in check([], {})["kwargs"][0]
    assert "kwargs.method" in check([], {"url": "http://h/", "method": "BREW"})
