"""Task types only the tests register (via the task_modules setting): side effects we can count."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from scheduler_app.task_types import TaskContext, task_type


class CountedFailure(Exception):
    """Raised by test.count while it still has failures to go."""


@task_type("test.count")
def count(key: str, seconds: float = 0.0, failures: int = 0, *, ctx: TaskContext, **_: Any) -> int:
    """Count each start and each completion of ``key`` in the ledger; optionally sleep and fail."""
    started = ctx.counters.incr(f"started:{key}")
    time.sleep(float(seconds))
    if started <= int(failures):
        raise CountedFailure(f"failure {started} of {failures}")
    return ctx.counters.incr(f"completed:{key}")


@task_type("test.crash")
def crash(**_: Any) -> None:
    """Kill the process running it, as a segfault or the OOM killer would."""
    os.kill(os.getpid(), signal.SIGKILL)


@task_type("test.stubborn")
def stubborn(seconds: float = 30.0, **_: Any) -> None:
    """Ignore the soft time limit (and any other interruption) until the hard limit kills it."""
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except BaseException:
            continue


@task_type("test.patient", max_retries=7, backoff=3.0, backoff_max=60.0, jitter=False)
def patient(**_: Any) -> str:
    """A type with its own default retry policy."""
    return "ok"
