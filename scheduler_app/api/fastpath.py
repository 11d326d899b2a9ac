"""Fast paths for the task schemas' common cases, each exactly equal to what marshmallow returns.

A batch of 1000 tasks spent more time in marshmallow (load and dump) than in the database. The
schemas stay the single source of validation, errors and the OpenAPI document: ``load_task_body``
answers only bodies made of simple fields whose values are plainly valid, and returns None for
anything else (an unknown key, a wrong type, a value near a bound, a field with nested rules), so
that marshmallow decides and words the error. ``present_task`` writes the fields ``TaskSchema``
declares, with the same conversions. tests/unit/test_fastpath.py holds both to marshmallow's
answers.
"""

from __future__ import annotations

import math
from typing import Any

from marshmallow import ValidationError

from scheduler_app import limits as L
from scheduler_app.api.fields import check_json_value, encodable
from scheduler_app.models import Task

_SIMPLE_KEYS = frozenset(
    {"task", "args", "kwargs", "queue", "priority", "delay", "timeout", "idempotency_key", "tags"}
)


def _text(value: Any, longest: int) -> bool:
    """A str of 1..longest characters without control characters (the ``Text`` field's rules)."""
    return (
        type(value) is str
        and 0 < len(value) <= longest
        and (value.isprintable() or not any(ord(ch) < 32 for ch in value))
        and encodable(value)
    )


def _number(value: Any) -> bool:
    """An int or a finite float (bool is neither; the caller checks the range)."""
    return type(value) is int or (type(value) is float and math.isfinite(value))


def _json_ok(value: Any) -> bool:
    try:
        check_json_value(value)
    except ValidationError:
        return False
    return True


def load_task_body(data: Any) -> dict[str, Any] | None:
    """What ``TaskCreateSchema().load(data)`` returns, for simple valid bodies; else None."""
    if type(data) is not dict or not data.keys() <= _SIMPLE_KEYS:
        return None
    task = data.get("task")
    if not _text(task, L.TASK_NAME_MAX):
        return None
    out: dict[str, Any] = {"task": task}
    args = data.get("args", [])
    kwargs = data.get("kwargs", {})
    if type(args) is not list or type(kwargs) is not dict:
        return None
    if (args or kwargs) and not (_json_ok(args) and _json_ok(kwargs)):
        return None
    out["args"] = list(args)
    out["kwargs"] = dict(kwargs)
    if "queue" in data:
        if not _text(data["queue"], L.QUEUE_NAME_MAX):
            return None
        out["queue"] = data["queue"]
    priority = data.get("priority", L.PRIORITY_DEFAULT)
    if type(priority) is not int or not L.PRIORITY_MIN <= priority <= L.PRIORITY_MAX:
        return None
    out["priority"] = priority
    if "delay" in data:
        delay = data["delay"]
        if not _number(delay) or not 0 <= delay <= L.DELAY_MAX:
            return None
        out["delay"] = float(delay)
    if "timeout" in data:
        timeout = data["timeout"]
        if not _number(timeout) or not 0 < timeout <= L.TIMEOUT_MAX:
            return None
        out["timeout"] = float(timeout)
    if "idempotency_key" in data:
        if not _text(data["idempotency_key"], L.IDEMPOTENCY_KEY_MAX):
            return None
        out["idempotency_key"] = data["idempotency_key"]
    tags = data.get("tags", [])
    if (
        type(tags) is not list
        or len(tags) > L.TAGS_MAX
        or not all(_text(tag, L.TAG_MAX) for tag in tags)
    ):
        return None
    out["tags"] = list(tags)
    return out


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


_READ = tuple(column.name for column in Task.__table__.columns)


def present_task(task: Any) -> dict[str, Any]:
    """``TaskSchema().dump(task)`` for a ``Task`` or a row dict holding its columns."""
    t = task if isinstance(task, dict) else {name: getattr(task, name) for name in _READ}
    priority, attempts, max_retries = t["priority"], t["attempts"], t["max_retries"]
    tags = t["tags"]
    return {
        "id": _str(t["id"]),
        "task": _str(t["task"]),
        "args": t["args"],
        "kwargs": t["kwargs"],
        "queue": _str(t["queue"]),
        "priority": None if priority is None else int(priority),
        "status": _str(t["status"]),
        "attempts": None if attempts is None else int(attempts),
        "max_retries": None if max_retries is None else int(max_retries),
        "retry": {
            "max_retries": max_retries,
            "backoff": t["backoff"],
            "backoff_max": t["backoff_max"],
            "jitter": t["jitter"],
            "strategy": _str(t["retry_strategy"]),
            "max_retry_duration": _float(t["max_retry_duration"]),
        },
        "timeout": _float(t["timeout"]),
        "run_at": _iso(t["run_at"]),
        "expires_at": _iso(t["expires_at"]),
        "created_at": _iso(t["created_at"]),
        "started_at": _iso(t["started_at"]),
        "finished_at": _iso(t["finished_at"]),
        "result": t["result"],
        "error": (
            {"type": t["error_type"], "message": t["error_message"]} if t["error_type"] else None
        ),
        "owner": _str(t["owner_id"]),
        "idempotency_key": _str(t["idempotency_key"]),
        "notify": t["notify"],
        "workflow_id": _str(t["workflow_id"]),
        "node_id": _str(t["node_id"]),
        "schedule_id": _str(t["schedule_id"]),
        "replay_of": _str(t["replay_of"]),
        "tags": None if tags is None else [str(tag) for tag in tags],
        "retention": _float(t["retention"]),
    }
