"""Workflows as the API sees them: submit, read, list, cancel, retry, draw."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select, text
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app.errors import Conflict, NotFound, ValidationFailed
from scheduler_app.models import Task, Workflow
from scheduler_app.models.base import utcnow
from scheduler_app.services.clients.principal import Principal
from scheduler_app.services.ledger.transitions import transition
from scheduler_app.services.ledger.unit import after_commit, unit_of_work
from scheduler_app.services.pagination import keyset_page
from scheduler_app.services.tasks.service import TaskService
from scheduler_app.services.tasks.submission import build_row, insert_tasks
from scheduler_app.services.workflows import advance
from scheduler_app.services.workflows.graph import graph_errors, mermaid
from scheduler_app.states import TaskStatus

# Node fields that are the workflow's, not the node task's.
_NODE_ONLY = ("id", "depends_on", "trigger_rule")
# What a retry starts again: these nodes, and the descendants of them that did not succeed.
_RETRIED = frozenset({TaskStatus.FAILED, TaskStatus.UPSTREAM_FAILED, TaskStatus.CANCELLED})
_PUBLISHED = frozenset(
    {TaskStatus.SCHEDULED, TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.RETRYING}
)


@dataclass
class WorkflowService:
    """Workflows over the task ledger; node tasks are built and published by ``tasks``."""

    tasks: TaskService

    @property
    def sessions(self) -> sessionmaker[Session]:
        """The ledger's sessions (the task service's)."""
        return self.tasks.sessions

    def submit(
        self, principal: Principal, body: Mapping[str, Any], *, request_id: str | None = None
    ) -> dict[str, Any]:
        """Validate the graph and every node task, commit them in one transaction, publish the
        roots; return the workflow. Raises ValidationFailed naming ``nodes.N.field``."""
        nodes = body["nodes"]
        errors = graph_errors(nodes)
        workflow_id = uuid.uuid4()
        now = utcnow()
        rows = []
        for index, node in enumerate(nodes):
            task_body = {k: v for k, v in node.items() if k not in _NODE_ONLY}
            try:
                row = build_row(
                    {**task_body, "workflow_id": workflow_id, "node_id": node["id"]},
                    self.tasks.types,
                    self.tasks.settings,
                    principal,
                    now,
                    request_id=request_id,
                    prefix=f"nodes.{index}.",
                )
            except ValidationFailed as exc:
                errors.update(exc.errors)
                continue
            if node.get("depends_on"):
                # Waits in the ledger for its parents (advance releases it); never published now.
                row.update(status=TaskStatus.PENDING.value, dispatched_at=None)
            rows.append(row)
        if errors:
            raise ValidationFailed("the workflow cannot be accepted", errors=errors)
        with unit_of_work(self.sessions) as session:
            session.execute(
                text(
                    "INSERT INTO workflows (id, name, status, owner_id, tags, created_at, "
                    "retention, notify) VALUES (:id, :name, 'running', :owner, :tags, :now, "
                    ":retention, CAST(:notify AS jsonb))"
                ),
                {
                    "notify": json.dumps(body["notify"]) if body.get("notify") else None,
                    "id": str(workflow_id),
                    "name": body["name"],
                    "owner": str(principal.id),
                    "tags": list(body.get("tags") or []),
                    "now": now,
                    "retention": body.get("retention"),
                },
            )
            accepted = insert_tasks(session, rows)
            _insert_graph(session, workflow_id, nodes, [row["id"] for row in rows])
            after_commit(session, lambda: self.tasks.publish(accepted))
        return {
            "id": workflow_id,
            "name": body["name"],
            "status": "running",
            "nodes": {
                row["node_id"]: {"task_id": row["id"], "status": row["status"]} for row in rows
            },
            "created_at": now,
            "finished_at": None,
            "tags": list(body.get("tags") or []),
            "owner_id": principal.id,
        }

    def get(self, principal: Principal, workflow_id: uuid.UUID) -> dict[str, Any]:
        """The workflow and its nodes' tasks; raises NotFound (unknown or not yours)."""
        with self.sessions() as session:
            workflow = self._visible(session, principal, workflow_id)
            return _present(workflow, _nodes(session, workflow_id))

    def list(
        self, principal: Principal, filters: Mapping[str, Any], limit: int, cursor: str | None
    ) -> tuple[list[Workflow], str | None]:
        """One page of workflows (without their nodes), newest first, and the next cursor."""
        return keyset_page(
            self.sessions,
            _filtered(select(Workflow), principal, filters),
            Workflow.created_at,
            Workflow.id,
            limit,
            cursor,
        )

    def graph(self, principal: Principal, workflow_id: uuid.UUID) -> str:
        """The workflow as a Mermaid flowchart coloured by node status; raises NotFound."""
        with self.sessions() as session:
            self._visible(session, principal, workflow_id)
            nodes = _nodes(session, workflow_id)
            edges = _edges(session, workflow_id)
        return mermaid([(n.node_id, n.status) for n in nodes], edges)

    def cancel(self, principal: Principal, workflow_id: uuid.UUID) -> dict[str, Any]:
        """Cancel every unfinished node (a running attempt is terminated) and the workflow.

        Raises NotFound, or Conflict when the workflow has finished.
        """
        revoke: list[tuple[uuid.UUID, bool]] = []
        with unit_of_work(self.sessions) as session:
            workflow = self._visible(session, principal, workflow_id, lock=True)
            if workflow.status != "running":
                raise Conflict(f"workflow is already {workflow.status}")
            nodes = _nodes(session, workflow_id)
            now = utcnow()
            # Every node task is named: the guard skips finished ones, and a node released
            # while this runs is locked by its releaser and cancelled once that commits.
            moved = transition(
                session,
                [n.task_id for n in nodes],
                TaskStatus.CANCELLED,
                values={"finished_at": now},
                detail="cancelled with its workflow",
                run={"status": "cancelled", "finished_at": now},
            )
            moved_ids = {row.id for row in moved}
            revoke = [
                (n.task_id, n.status == TaskStatus.RUNNING)
                for n in nodes
                if n.task_id in moved_ids and n.status in _PUBLISHED
            ]
            session.execute(
                text(
                    "UPDATE workflows SET status = 'cancelled', finished_at = :now, "
                    "prune_after = :now + retention * interval '1 second' "
                    "WHERE id = :id AND status = 'running'"
                ),
                {"id": str(workflow_id), "now": now},
            )
            advance.workflows_ended(session, [workflow_id])
            dispatcher = self.tasks.dispatcher

            def _revoke() -> None:
                for task_id, terminate in revoke:
                    dispatcher.revoke(task_id, terminate=terminate)

            after_commit(session, _revoke)
        return self.get(principal, workflow_id)

    def retry(self, principal: Principal, workflow_id: uuid.UUID) -> dict[str, Any]:
        """Run again what did not succeed, keeping what did: each failed, upstream_failed or
        cancelled node (and every descendant of one that did not succeed) gets a new task
        (``replay_of`` the old one), and the workflow runs again.

        Raises NotFound, or Conflict while it runs or when nothing is left to retry.
        """
        with unit_of_work(self.sessions) as session:
            workflow = self._visible(session, principal, workflow_id, lock=True)
            if workflow.status == "running":
                raise Conflict("workflow is still running")
            nodes = {n.node_id: n for n in _nodes(session, workflow_id)}
            edges = _edges(session, workflow_id)
            children: dict[str, list[str]] = defaultdict(list)
            has_parents = set()
            for parent, child in edges:
                children[parent].append(child)
                has_parents.add(child)
            redo = [n for n, node in nodes.items() if node.status in _RETRIED]
            chosen, stack = set(redo), list(redo)
            while stack:  # the descendants that did not succeed are decided again
                for child in children[stack.pop()]:
                    if child not in chosen and nodes[child].status != TaskStatus.SUCCEEDED:
                        chosen.add(child)
                        stack.append(child)
            if not chosen:
                raise Conflict(f"workflow {workflow.status}: nothing to retry")
            old = _tasks(session, [nodes[n].task_id for n in chosen])
            now = utcnow()
            rows = []
            for node_id in sorted(chosen):
                task = old[nodes[node_id].task_id]
                row = build_row(_again(task), self.tasks.types, self.tasks.settings, principal, now)
                if node_id in has_parents:
                    row.update(status=TaskStatus.PENDING.value, dispatched_at=None)
                rows.append(row)
            accepted = insert_tasks(session, rows)
            session.execute(
                text(
                    "UPDATE workflow_nodes AS n SET task_id = CAST(m.task_id AS uuid) "
                    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
                    "AS m(node_id text, task_id text) "
                    "WHERE n.workflow_id = :id AND n.node_id = m.node_id"
                ),
                {
                    "id": str(workflow_id),
                    "rows": json.dumps(
                        [{"node_id": r["node_id"], "task_id": str(r["id"])} for r in rows]
                    ),
                },
            )
            session.execute(
                text(
                    "UPDATE workflows SET status = 'running', finished_at = NULL, "
                    "prune_after = NULL WHERE id = :id"
                ),
                {"id": str(workflow_id)},
            )
            # New nodes whose parents all stay succeeded are released now.
            advance.recount(session, workflow_id)
            advance.evaluate(session, [r["id"] for r in rows if r["node_id"] in has_parents])
            advance.settle(session, [workflow_id])
            after_commit(session, lambda: self.tasks.publish(accepted))
        return self.get(principal, workflow_id)

    def _visible(
        self, session: Session, principal: Principal, workflow_id: uuid.UUID, lock: bool = False
    ) -> Workflow:
        query = select(Workflow).where(Workflow.id == workflow_id)
        if lock:
            query = query.with_for_update()
        workflow = session.scalars(query).one_or_none()
        if workflow is None or not (principal.sees_everything or workflow.owner_id == principal.id):
            raise NotFound(f"workflow {workflow_id} not found")
        return workflow


def _insert_graph(
    session: Session,
    workflow_id: uuid.UUID,
    nodes: Sequence[Mapping[str, Any]],
    task_ids: Sequence[uuid.UUID],
) -> None:
    """The nodes and edges, each one multi-row statement however many there are."""
    wid = str(workflow_id)
    node_rows = [
        {
            "workflow_id": wid,
            "node_id": node["id"],
            "task_id": str(task_id),
            "trigger_rule": node.get("trigger_rule") or "all_success",
            "parents": len(dict.fromkeys(node.get("depends_on") or [])),
            **{f"parents_{state}": 0 for state in advance.ENDED},
            "counted": False,
        }
        for node, task_id in zip(nodes, task_ids, strict=True)
    ]
    edge_rows = [
        {"workflow_id": wid, "parent": parent, "child": node["id"]}
        for node in nodes
        for parent in dict.fromkeys(node.get("depends_on") or [])
    ]
    for table, items in (("workflow_nodes", node_rows), ("workflow_edges", edge_rows)):
        if items:
            session.execute(
                text(
                    f"INSERT INTO {table} SELECT * FROM "
                    f"jsonb_populate_recordset(NULL::{table}, CAST(:rows AS jsonb))"
                ),
                {"rows": json.dumps(items)},
            )


def _nodes(session: Session, workflow_id: uuid.UUID) -> list[Any]:
    return list(
        session.execute(
            text(
                "SELECT n.node_id, n.task_id, t.status FROM workflow_nodes n "
                "JOIN tasks t ON t.id = n.task_id WHERE n.workflow_id = :id ORDER BY n.node_id"
            ),
            {"id": str(workflow_id)},
        ).all()
    )


def _edges(session: Session, workflow_id: uuid.UUID) -> list[tuple[str, str]]:
    return [
        (row.parent, row.child)
        for row in session.execute(
            text(
                "SELECT parent, child FROM workflow_edges WHERE workflow_id = :id "
                "ORDER BY parent, child"
            ),
            {"id": str(workflow_id)},
        )
    ]


def _tasks(session: Session, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Any]:
    return {task.id: task for task in session.scalars(select(Task).where(Task.id.in_(ids)))}


def _again(task: Any) -> dict[str, Any]:
    """The submission body of a new attempt of a node's task."""
    kwargs = {k: v for k, v in (task.kwargs or {}).items() if k != "parents"}
    return {
        "task": task.task,
        "args": task.args,
        "kwargs": kwargs,
        "queue": task.queue,
        "priority": task.priority,
        "retry": {
            "max_retries": task.max_retries,
            "backoff": task.backoff,
            "backoff_max": task.backoff_max,
            "jitter": task.jitter,
            "strategy": task.retry_strategy,
            "max_retry_duration": task.max_retry_duration,
        },
        "timeout": task.timeout,
        "tags": task.tags,
        "workflow_id": task.workflow_id,
        "node_id": task.node_id,
        "replay_of": task.id,
    }


def _present(workflow: Workflow, nodes: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": workflow.id,
        "name": workflow.name,
        "status": workflow.status,
        "nodes": {n.node_id: {"task_id": n.task_id, "status": n.status} for n in nodes},
        "created_at": workflow.created_at,
        "finished_at": workflow.finished_at,
        "tags": workflow.tags,
        "owner_id": workflow.owner_id,
    }


def _filtered(query: Select, principal: Principal, filters: Mapping[str, Any]) -> Select:
    if not principal.sees_everything:
        query = query.where(Workflow.owner_id == principal.id)
    if filters.get("status"):
        query = query.where(Workflow.status.in_(filters["status"]))
    if filters.get("tag"):
        query = query.where(Workflow.tags.contains([filters["tag"]]))
    if filters.get("created_after"):
        query = query.where(Workflow.created_at > filters["created_after"])
    if filters.get("created_before"):
        query = query.where(Workflow.created_at < filters["created_before"])
    return query
