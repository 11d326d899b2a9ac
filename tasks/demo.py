"""Demo and test task types, always registered (DESIGN.md section 5)."""

from __future__ import annotations

import time
from typing import Any

from scheduler_app.task_types import TaskContext, task_type


class DemoFailure(Exception):
    """The error demo.fail and demo.flaky raise."""


@task_type("demo.echo", parameters={"*args, **kwargs": "anything JSON; returned as given"})
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Return the arguments it was called with."""
    return {"args": list(args), "kwargs": kwargs}


@task_type("demo.sleep", parameters={"seconds": "number of seconds to sleep (default 1)"})
def sleep(seconds: float = 1.0, **_: Any) -> dict[str, float]:
    """Sleep for the given number of seconds."""
    seconds = float(seconds)
    if seconds < 0:
        raise ValueError("seconds must not be negative")
    time.sleep(seconds)
    return {"slept": seconds}


@task_type("demo.fail", parameters={"message": "the error message (optional)"})
def fail(message: str = "demo.fail always fails", **_: Any) -> None:
    """Always raise DemoFailure."""
    raise DemoFailure(message)


@task_type(
    "demo.flaky",
    parameters={
        "failures": "how many times to fail before succeeding",
        "key": "counter key (default: the task id, so a replay with the same key continues)",
    },
)
def flaky(failures: int = 1, key: str | None = None, *, ctx: TaskContext, **_: Any) -> int:
    """Fail until it has failed `failures` times for its key, then return how many times it ran."""
    runs = ctx.counters.incr(f"demo.flaky:{key or ctx.task_id}")
    if runs <= int(failures):
        raise DemoFailure(f"flaky failure {runs} of {failures}")
    return runs


@task_type(
    "demo.sum",
    parameters={"values": "numbers to add", "parents": "set by workflows: parents' results"},
)
def sum_values(
    values: list[float] | None = None, parents: dict[str, Any] | None = None, **_: Any
) -> float:
    """Sum `values` plus the numeric results of the parents."""
    total = sum(float(v) for v in values or [])
    for result in (parents or {}).values():
        if isinstance(result, (int, float)) and not isinstance(result, bool):
            total += result
    return int(total) if float(total).is_integer() else total
