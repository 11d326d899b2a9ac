"""What the broker needs of a task row: one column list and one way to build its message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler_app.models import Task
from scheduler_app.services.broker.messages import Dispatch

# Every query that is going to publish a task selects (or returns) these columns.
DISPATCH_COLUMNS = (
    Task.id,
    Task.task,
    Task.queue,
    Task.priority,
    Task.run_at,
    Task.timeout,
    Task.request_id,
    Task.attempts,
)


def dispatch_of(task: Task | Mapping[str, Any]) -> Dispatch:
    """The broker message for the next attempt of a task (a row with DISPATCH_COLUMNS)."""
    get = task.get if isinstance(task, Mapping) else lambda k: getattr(task, k)
    return Dispatch(
        id=get("id"),
        task=get("task"),
        queue=get("queue"),
        priority=get("priority"),
        eta=get("run_at"),
        timeout=get("timeout"),
        request_id=get("request_id"),
        attempt=(get("attempts") or 0) + 1,
    )
