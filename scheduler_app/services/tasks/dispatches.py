"""What the broker needs of a task row: one column list and one way to build its message."""

from __future__ import annotations

import reprlib
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
    # Shown by Flower (the message's argsrepr/kwargsrepr); the body carries only the id.
    Task.args,
    Task.kwargs,
)

# Celery's own bound on argsrepr/kwargsrepr (amqp.argsrepr_maxsize); reprlib bounds the work.
REPR_MAX = 1024
_SCALARS = frozenset({int, float, bool, type(None)})
_REPR = reprlib.Repr()
_REPR.maxlevel = 4
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 16
_REPR.maxstring = _REPR.maxother = 256
_REPR.maxlong = 64


def display(value: Any) -> str | None:
    """A bounded repr of a task's args or kwargs for the message headers (None: unknown)."""
    if value is None:
        return None
    if not value:
        return "{}" if isinstance(value, dict) else "[]"
    items = value.values() if isinstance(value, dict) else value
    if len(value) <= 8 and all(
        type(x) in _SCALARS or (type(x) is str and len(x) <= 128) for x in items
    ):
        return repr(value)[:REPR_MAX]  # small and flat: repr is the cheap bounded one
    return _REPR.repr(value)[:REPR_MAX]


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
        argsrepr=display(get("args")),
        kwargsrepr=display(get("kwargs")),
    )
