"""Writing deliveries where an outcome is recorded: in the transaction that ends the task.

Two consumers of the outcome seam. ``notifiers.announce`` takes the end of a task that asked
for notifications (``notify``) or whose owner has an enabled endpoint, and writes one delivery
per target with the ``notify.deliver`` task that sends it, in the transaction that consumes
the outcome: an event is announced if and only if the task ended, once. ``notifiers.settle``
takes the end of those delivery tasks and closes their delivery (failed when the task gave up).
A workflow's end reaches :func:`workflows_ended` from the transaction that ends the workflow.

The condition the seam evaluates on every terminal move is cheap for a task without
``notify``: one probe of a partial index over enabled endpoints (usually empty).
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from scheduler_app.models.base import utcnow
from scheduler_app.services.ledger.outcomes import Outcome, on_outcome
from scheduler_app.services.ledger.unit import after_commit
from scheduler_app.services.tasks.dispatches import dispatch_of
from scheduler_app.services.tasks.submission import (
    INSERT_SQL,
    TASK_COLUMNS,
    Accepted,
    NewTask,
    _rows_json,
)
from scheduler_app.services.workflows import advance
from scheduler_app.states import TaskStatus

DELIVER_TASK = "notify.deliver"
# The queue of delivery tasks (a worker consumes it like any other: see the queues setting).
QUEUE = "notifications"
# A delivery task's row: the delivering worker decides retries and give-up from its own
# settings (webhook_max_attempts, webhook_retry_window), so the row only bounds them.
MAX_ATTEMPTS_BOUND = 100
DELIVERY_TASK_TIMEOUT = 660.0  # above the longest call webhook_timeout allows, twice
TASK_EVENTS = {
    TaskStatus.SUCCEEDED: "task.succeeded",
    TaskStatus.FAILED: "task.failed",
    TaskStatus.CANCELLED: "task.cancelled",
}
WORKFLOW_EVENTS = {s: f"workflow.{s}" for s in ("succeeded", "failed", "cancelled")}
EVENT_TYPES = (*TASK_EVENTS.values(), *WORKFLOW_EVENTS.values())

# Tasks of the notifier itself announce nothing (an endpoint would otherwise hear of its own
# deliveries, forever).
WANTS = (
    f"task <> '{DELIVER_TASK}' AND (notify IS NOT NULL OR EXISTS (SELECT 1 FROM "
    "webhook_endpoints e WHERE e.owner_id = moved.owner_id AND e.enabled))"
)


def _ids(values: Iterable[Any]) -> list[str]:
    return [str(v) for v in values]


def _present_task(row: Mapping[str, Any]) -> dict[str, Any]:
    # The resource exactly as GET /api/v1/tasks/{id} writes it: its one serialiser lives with
    # the API schema (TaskSchema.dump is present_task), and a copy here would drift from it.
    from scheduler_app.api.fastpath import present_task

    return present_task(row)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@on_outcome("notifiers.announce", wants=WANTS, columns=("task", "notify", "owner_id"))
def announce(session: Session, outcomes: Sequence[Outcome]) -> None:
    """Write the deliveries of the tasks that ended succeeded, failed or cancelled."""
    ended = {o.task_id: o for o in outcomes if o.status in TASK_EVENTS}
    if not ended:
        return
    # The ended tasks and their owners' enabled endpoints, in one round trip.
    rows = session.execute(_TASKS_SQL, {"ids": _ids(ended)}).mappings().all()
    endpoints: dict[uuid.UUID, list[Any]] = {
        row["owner_id"]: [_Endpoint.of(e) for e in row["endpoints"] or ()] for row in rows
    }
    events = []
    for row in rows:
        outcome = ended[row["id"]]
        kind = TASK_EVENTS[outcome.status]
        data = _present_task(row)
        events.append(
            _Event(
                kind,
                outcome.status.value,
                row["owner_id"],
                row["notify"],
                {"type": kind, "timestamp": _iso(outcome.at), "data": data},
                task_id=row["id"],
            )
        )
    write(session, events, endpoints)


_TASKS_SQL = text(
    "SELECT t.*, (SELECT json_agg(json_build_object('id', e.id, 'url', e.url, 'events', "
    "e.events) ORDER BY e.created_at) FROM webhook_endpoints e WHERE e.enabled AND "
    "e.owner_id = t.owner_id) AS endpoints FROM tasks t WHERE t.id = ANY(CAST(:ids AS uuid[]))"
)


class _Endpoint:
    """An enabled endpoint, as the targets need it."""

    __slots__ = ("events", "id", "url")

    def __init__(self, id: Any, url: str, events: list[str] | None) -> None:
        self.id, self.url, self.events = id, url, events

    @classmethod
    def of(cls, found: Mapping[str, Any]) -> _Endpoint:
        return cls(uuid.UUID(str(found["id"])), found["url"], found["events"])


def workflows_ended(session: Session, workflow_ids: Sequence[uuid.UUID]) -> None:
    """Write the deliveries of workflows that have just ended (in the ending transaction)."""
    if not workflow_ids:
        return
    found = session.execute(
        text(
            "SELECT w.id, w.name, w.status, w.owner_id, w.tags, w.created_at, w.finished_at, "
            "w.notify FROM workflows w WHERE w.id = ANY(CAST(:ids AS uuid[])) "
            "AND w.status <> 'running' AND (w.notify IS NOT NULL OR EXISTS (SELECT 1 FROM "
            "webhook_endpoints e WHERE e.owner_id = w.owner_id AND e.enabled))"
        ),
        {"ids": _ids(workflow_ids)},
    ).all()
    if not found:
        return
    nodes: dict[uuid.UUID, dict[str, Any]] = defaultdict(dict)
    for node in session.execute(
        text(
            "SELECT n.workflow_id, n.node_id, n.task_id, t.status FROM workflow_nodes n "
            "JOIN tasks t ON t.id = n.task_id WHERE n.workflow_id = ANY(CAST(:ids AS uuid[])) "
            "ORDER BY n.node_id"
        ),
        {"ids": _ids(w.id for w in found)},
    ):
        nodes[node.workflow_id][node.node_id] = {
            "task_id": str(node.task_id),
            "status": node.status,
        }
    endpoints = _endpoints(session, {w.owner_id for w in found})
    now = utcnow()
    events = []
    for w in found:
        kind = WORKFLOW_EVENTS[w.status]
        data = {
            # As GET /api/v1/workflows/{id} writes it (WorkflowSchema).
            "id": str(w.id),
            "name": w.name,
            "status": w.status,
            "created_at": _iso(w.created_at),
            "finished_at": _iso(w.finished_at),
            "tags": list(w.tags or []),
            "owner": str(w.owner_id),
            "nodes": nodes[w.id],
        }
        events.append(
            _Event(
                kind,
                w.status,
                w.owner_id,
                w.notify,
                {"type": kind, "timestamp": _iso(w.finished_at or now), "data": data},
                workflow_id=w.id,
            )
        )
    write(session, events, endpoints)


advance.on_workflow_end(workflows_ended)


class _Event:
    """One event and who asked for it (the resource's own ``notify``)."""

    __slots__ = ("body", "kind", "notify", "outcome", "owner_id", "task_id", "workflow_id")

    def __init__(
        self,
        kind: str,
        outcome: str,
        owner_id: uuid.UUID,
        notify: Mapping[str, Any] | None,
        body: dict[str, Any],
        *,
        task_id: uuid.UUID | None = None,
        workflow_id: uuid.UUID | None = None,
    ) -> None:
        self.kind, self.outcome, self.owner_id, self.notify = kind, outcome, owner_id, notify
        self.body, self.task_id, self.workflow_id = body, task_id, workflow_id


def _endpoints(session: Session, owners: set[uuid.UUID]) -> dict[uuid.UUID, list[Any]]:
    found: dict[uuid.UUID, list[Any]] = defaultdict(list)
    if not owners:
        return found
    for endpoint in session.execute(
        text(
            "SELECT id, owner_id, url, events FROM webhook_endpoints "
            "WHERE enabled AND owner_id = ANY(CAST(:owners AS uuid[])) ORDER BY created_at"
        ),
        {"owners": _ids(owners)},
    ):
        found[endpoint.owner_id].append(endpoint)
    return found


def _targets(event: _Event, endpoints: Sequence[Any]) -> list[tuple[str, str, uuid.UUID | None]]:
    """(channel, target, endpoint id) of every delivery the event makes."""
    targets: list[tuple[str, str, uuid.UUID | None]] = []
    notify = event.notify or {}
    if event.outcome in (notify.get("on") or ()):
        if notify.get("webhook"):
            targets.append(("webhook", notify["webhook"], None))
        if notify.get("email"):
            targets.append(("email", notify["email"], None))
    for endpoint in endpoints:
        if endpoint.events is None or event.kind in endpoint.events:
            targets.append(("webhook", endpoint.url, endpoint.id))
    return targets


def write(
    session: Session, events: Sequence[_Event], endpoints: Mapping[uuid.UUID, Sequence[Any]]
) -> int:
    """Insert a delivery and its delivery task per target of each event; publish after commit."""
    now = utcnow()
    deliveries, tasks = [], []
    for event in events:
        payload = json.dumps(event.body, separators=(",", ":"), ensure_ascii=False)
        for channel, target, endpoint_id in _targets(event, endpoints.get(event.owner_id, ())):
            delivery_id = uuid.uuid4()
            task = delivery_task_row(delivery_id, event.owner_id, now)
            tasks.append(task)
            deliveries.append(
                {
                    "id": str(delivery_id),
                    "owner_id": str(event.owner_id),
                    "task_id": _ids([event.task_id])[0] if event.task_id else None,
                    "workflow_id": str(event.workflow_id) if event.workflow_id else None,
                    "type": event.kind,
                    "channel": channel,
                    "target": target,
                    "endpoint_id": str(endpoint_id) if endpoint_id else None,
                    "status": "pending",
                    "attempts": 0,
                    "webhook_id": f"msg_{delivery_id.hex}",
                    "payload": payload,
                    "delivery_task_id": str(task["id"]),
                    "created_at": now,
                }
            )
    if not deliveries:
        return 0
    # The deliveries and their tasks (with the tasks' creation events) in one statement.
    rows = [{name: row[name] for name in TASK_COLUMNS} for row in tasks]
    payload = {"deliveries": _rows_json(deliveries), "rows": _rows_json(rows)}
    inserted = session.connection().exec_driver_sql(_WRITE_SQL, payload).all()
    if len(inserted) != len(tasks):
        raise RuntimeError("delivery task ids collided with existing tasks")
    publish_after_commit(session, [Accepted(NewTask(row), replayed=False) for row in tasks])
    return len(deliveries)


_DELIVERY_COLUMNS = (
    "id, owner_id, task_id, workflow_id, type, channel, target, endpoint_id, status, attempts, "
    "webhook_id, payload, delivery_task_id, created_at"
)
# Delivery tasks are new ids without idempotency keys: nothing of the submission's conflict
# handling applies, only its statement (INSERT_SQL), which the deliveries join as a CTE.
_WRITE_SQL = (
    "WITH delivered AS (\n"
    f"    INSERT INTO deliveries ({_DELIVERY_COLUMNS})\n"
    f"    SELECT {_DELIVERY_COLUMNS} FROM jsonb_populate_recordset(NULL::deliveries, "
    "%(deliveries)s::jsonb)\n),\n" + INSERT_SQL.strip().removeprefix("WITH ")
)


def delivery_task_row(delivery_id: uuid.UUID, owner_id: uuid.UUID, now: datetime) -> dict:
    """The tasks row of a ``notify.deliver`` attempt series for one delivery."""
    return {
        "id": uuid.uuid4(),
        "task": DELIVER_TASK,
        "args": [],
        "kwargs": {"delivery_id": str(delivery_id)},
        "queue": QUEUE,
        "priority": 5,
        "status": TaskStatus.QUEUED.value,
        "attempts": 0,
        "max_retries": MAX_ATTEMPTS_BOUND - 1,
        "backoff": 1.0,
        "backoff_max": 3600.0,
        "jitter": True,
        # Its retries follow the delivery's own policy (RetryLaterError): these are bounds.
        "retry_strategy": "exponential",
        "max_retry_duration": None,
        "retention": None,
        "timeout": DELIVERY_TASK_TIMEOUT,
        "run_at": now,
        "expires_at": None,
        "dispatched_at": now,
        "created_at": now,
        "owner_id": owner_id,
        "idempotency_key": None,
        "request_hash": None,
        "notify": None,
        "tags": ["notification"],
        "request_id": None,
        "workflow_id": None,
        "node_id": None,
        "schedule_id": None,
        "replay_of": None,
    }


def publish_after_commit(session: Session, accepted: Sequence[Any]) -> None:
    """Publish the delivery tasks once their transaction commits (unbound: the reconciler)."""
    dispatcher = advance.bound_dispatcher()
    dispatches = [dispatch_of(a.task) for a in accepted]
    if dispatches and dispatcher is not None:
        after_commit(session, lambda: dispatcher.publish(dispatches))


# A delivered delivery is closed by its own attempt: only the other ends write an outcome.
@on_outcome(
    "notifiers.settle",
    wants=f"task = '{DELIVER_TASK}' AND status <> 'succeeded'",
    columns=("task", "status"),
)
def settle(session: Session, outcomes: Sequence[Outcome]) -> None:
    """A delivery task that ended without delivering (cancelled, lost past its bound) fails
    its delivery. The task itself records the failures it decides (and counts them against
    its endpoint); this closes the ones it could not."""
    gone = [o.task_id for o in outcomes if o.status is not TaskStatus.SUCCEEDED]
    if gone:
        session.execute(
            text(
                "UPDATE deliveries SET status = 'failed', last_error = coalesce(last_error, "
                "'the delivery task ended ' || :why) WHERE delivery_task_id = ANY("
                "CAST(:ids AS uuid[])) AND status = 'pending'"
            ),
            {"ids": _ids(gone), "why": "without delivering"},
        )
