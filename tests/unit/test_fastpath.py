"""The schemas' fast paths answer exactly what marshmallow answers, or step aside."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError

from scheduler_app import limits as L
from scheduler_app.api.fastpath import load_task_body, present_task
from scheduler_app.api.task_schemas import TaskBatchSchema, TaskCreateSchema, TaskSchema
from scheduler_app.models import Task
from scheduler_app.services.tasks.submission import NewTask


def marshmallow_load(body):
    """What the schema itself answers (its fast path bypassed)."""
    try:
        return Schema.load(TaskCreateSchema(), body)
    except ValidationError as exc:
        return exc


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.sampled_from(["\x00", "a\x00b", "ok"]),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
# Strings and numbers on each side of every bound the schemas hold (scheduler_app/limits.py).
TEXT_BOUNDS = (L.QUEUE_NAME_MAX, L.TAG_MAX, L.TASK_NAME_MAX, L.IDEMPOTENCY_KEY_MAX)
NUMBER_BOUNDS = (L.PRIORITY_MIN, L.PRIORITY_MAX, L.TIMEOUT_MAX, L.DELAY_MAX)
texts = st.one_of(
    st.text(max_size=3),
    *(st.text(min_size=n - 1, max_size=n + 1) for n in TEXT_BOUNDS),
    st.sampled_from(["demo.echo", "", " ", "a\tb", "a\x1fb", "é.ü", "a\x7fb", "\u2028"]),
)
numbers = st.one_of(
    st.integers(-5, 12),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [0, 0.0, -0.0, True, False]
        + [v for n in NUMBER_BOUNDS for v in (*L.around(n), *L.around(float(n)))]
    ),
)
values = st.one_of(texts, numbers, json_value, st.lists(texts, max_size=L.TAGS_MAX + 2))
SIMPLE_KEYS = ["task", "args", "kwargs", "queue", "priority", "delay", "timeout", "tags"]
keys = st.sampled_from(
    [*SIMPLE_KEYS, "idempotency_key", "run_at", "retry", "notify", "expires_at", "unknown"]
)
bodies = st.one_of(
    st.dictionaries(keys, values, max_size=9),
    st.fixed_dictionaries(
        {"task": texts},
        optional={
            "args": json_value,
            "kwargs": json_value,
            "priority": numbers,
            "delay": numbers,
            "timeout": numbers,
            "tags": st.lists(texts, max_size=L.TAGS_MAX + 2),
            "queue": texts,
            "idempotency_key": texts,
        },
    ),
    json_value,
)


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(bodies)
def test_fast_load_equals_marshmallow_whenever_it_answers(body):
    fast = load_task_body(body)
    if fast is not None:
        assert fast == marshmallow_load(body)


SIMPLE = [
    {"task": "demo.echo"},
    {"task": "demo.echo", "args": [1, "two", None, {"x": [1.5]}], "queue": "high"},
    {"task": "demo.sum", "kwargs": {"a": 1}, "priority": 0, "delay": 0, "tags": ["a", "b"]},
    {"task": "x.y", "priority": 9, "delay": 2.5, "timeout": 30, "idempotency_key": "k-1"},
    {"task": "é.ü", "delay": L.DELAY_MAX, "timeout": L.TIMEOUT_MAX, "tags": ["t"] * L.TAGS_MAX},
]


@pytest.mark.parametrize("body", SIMPLE)
def test_fast_load_takes_the_common_bodies(body):
    fast = load_task_body(body)
    assert fast is not None  # the fast path is really used for them
    assert fast == marshmallow_load(body)
    assert TaskCreateSchema().load(body) == fast


@pytest.mark.parametrize(
    "body",
    [
        {"task": "demo.echo", "priority": True},
        {"task": "demo.echo", "priority": 10},
        {"task": "demo.echo", "delay": -1},
        {"task": "demo.echo", "delay": float("nan")},
        {"task": "demo.echo", "timeout": 0},
        {"task": "demo.echo", "args": ["\x00"]},
        {"task": "a\x01b"},
        {"task": "demo.echo", "tags": ["t"] * (L.TAGS_MAX + 1)},
        {"task": "demo.echo", "surprise": 1},
        {"task": "demo.echo", "run_at": "2030-01-01T00:00:00Z"},
    ],
)
def test_anything_unusual_is_left_to_marshmallow(body):
    assert load_task_body(body) is None


def test_batch_fast_path_all_or_nothing():
    good = {"tasks": SIMPLE}
    assert TaskBatchSchema().load(good) == Schema.load(TaskBatchSchema(), good)
    bad = {"tasks": [*SIMPLE, {"task": "demo.echo", "priority": 10}]}
    with pytest.raises(ValidationError) as caught:
        TaskBatchSchema().load(bad)
    assert caught.value.messages == {
        "tasks": {
            len(SIMPLE): {
                "priority": ["Must be greater than or equal to 0 and less than or equal to 9."]
            }
        }
    }


NOW = datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)


def _columns(**changes):
    row = {
        "id": uuid.uuid4(),
        "task": "demo.echo",
        "args": [1, {"a": None}],
        "kwargs": {"k": "v"},
        "queue": "default",
        "priority": 5,
        "status": "queued",
        "attempts": 0,
        "max_retries": 3,
        "backoff": 1.0,
        "backoff_max": 60.0,
        "jitter": True,
        "retry_strategy": "exponential",
        "max_retry_duration": None,
        "timeout": None,
        "run_at": NOW,
        "expires_at": None,
        "dispatched_at": NOW,
        "created_at": NOW,
        "started_at": None,
        "finished_at": None,
        "result": None,
        "error_type": None,
        "error_message": None,
        "owner_id": uuid.uuid4(),
        "idempotency_key": None,
        "request_hash": None,
        "notify": None,
        "tags": [],
        "request_id": "r1",
        "workflow_id": None,
        "node_id": None,
        "schedule_id": None,
        "replay_of": None,
        "retention": None,
        "prune_after": None,
    }
    row.update(changes)
    return row


VARIANTS = [
    {},
    {"status": "succeeded", "attempts": 1, "started_at": NOW, "finished_at": NOW, "result": 3},
    {"status": "failed", "error_type": "ValueError", "error_message": "bad", "timeout": 5},
    {"timeout": 2.5, "expires_at": NOW + timedelta(days=1), "tags": ["a", "b"]},
    {"idempotency_key": "k", "notify": {"webhook": "http://x"}, "workflow_id": uuid.uuid4()},
    {"node_id": "n1", "schedule_id": uuid.uuid4(), "replay_of": uuid.uuid4(), "result": [1]},
    {"result": {"nested": {"x": 1}}, "priority": 0, "error_type": "", "error_message": "x"},
    {"retry_strategy": "linear", "max_retry_duration": 90},
    {"retention": 3600.0, "prune_after": NOW, "status": "cancelled", "finished_at": NOW},
]


@pytest.mark.parametrize("changes", VARIANTS)
def test_present_task_equals_marshmallow_for_orm_tasks_and_new_rows(changes):
    columns = _columns(**changes)
    orm = Task(**columns)
    row = NewTask(columns)
    reference = Schema.dump(TaskSchema(), orm)
    assert present_task(orm) == reference
    assert present_task(row) == reference
    assert TaskSchema().dump(orm) == reference
    assert TaskSchema(many=True).dump([orm, row]) == [reference, reference]
