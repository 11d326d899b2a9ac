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
