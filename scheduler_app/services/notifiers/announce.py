"""Writing deliveries where an outcome is recorded: in the transaction that consumes it.

``notifiers.announce`` is a deferred consumer of the outcome seam: the end of a task that
asked for notifications (``notify``), or whose owner has an enabled endpoint, is handed to it
by the scheduler's sweep, in batches, and it writes one ``deliveries`` row per target in the
transaction that consumes the outcomes: an event is announced if and only if the task ended,
once. The row is its own queue entry (due at once); the dispatcher (``dispatch``) sends it.
A workflow's end reaches :func:`workflows_ended` from the transaction that ends the workflow.

The condition the seam evaluates on every terminal move is cheap for a task without
``notify``: one probe of a partial index over enabled endpoints (usually empty). A task with
it costs the worker one more row in its success statement, nothing after.
"""

from __future__ import annotations

import threading
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
from scheduler_app.services.tasks.submission import _rows_json
from scheduler_app.services.workflows import advance
from scheduler_app.states import TaskStatus

# Set after a commit that wrote deliveries: this process's dispatcher looks at once.
WRITTEN = threading.Event()
TASK_EVENTS = {
    TaskStatus.SUCCEEDED: "task.succeeded",
    TaskStatus.FAILED: "task.failed",
    TaskStatus.CANCELLED: "task.cancelled",
}
WORKFLOW_EVENTS = {s: f"workflow.{s}" for s in ("succeeded", "failed", "cancelled")}
EVENT_TYPES = (*TASK_EVENTS.values(), *WORKFLOW_EVENTS.values())

WANTS = (
    "notify IS NOT NULL OR EXISTS (SELECT 1 FROM webhook_endpoints e "
    "WHERE e.owner_id = moved.owner_id AND e.enabled)"
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


@on_outcome("notifiers.announce", wants=WANTS, columns=("notify", "owner_id"), deferred=True)
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
    """Insert a delivery per target of each event, due at once (one statement)."""
    now = utcnow()
    deliveries = []
    for event in events:
        payload = _rows_json(event.body)
        for channel, target, endpoint_id in _targets(event, endpoints.get(event.owner_id, ())):
            delivery_id = uuid.uuid4()
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
                    "round_attempts": 0,
                    "webhook_id": f"msg_{delivery_id.hex}",
                    "payload": payload,
                    "created_at": now,
                    "round_at": now,
                    "next_attempt_at": now,
                }
            )
    if not deliveries:
        return 0
    session.execute(_WRITE_SQL, {"rows": _rows_json(deliveries)})
    after_commit(session, WRITTEN.set)
    return len(deliveries)


_DELIVERY_COLUMNS = (
    "id, owner_id, task_id, workflow_id, type, channel, target, endpoint_id, status, attempts, "
    "round_attempts, webhook_id, payload, created_at, round_at, next_attempt_at"
)
_WRITE_SQL = text(
    f"INSERT INTO deliveries ({_DELIVERY_COLUMNS}) SELECT {_DELIVERY_COLUMNS} "
    "FROM jsonb_populate_recordset(NULL::deliveries, CAST(:rows AS jsonb))"
)
