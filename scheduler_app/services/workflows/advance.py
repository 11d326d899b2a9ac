"""Releasing workflow nodes: the consumer of the outcome seam that advances a workflow.

It runs in the transaction that consumes a parent's outcome, so a node is released in the same
transaction that hands over its last needed parent's end, exactly once: the seam hands each
outcome over once, and only a ``pending`` node moves.

Each node keeps how many of its parents ended in each state (``workflow_nodes.parents_*``): a
parent's end is added to its children's counts once (``counted`` marks it, in the same
statement), so deciding a child reads one row, not all its parents, and a fan-in of N parents
costs N small updates instead of N reads of N parents. Two parents ending at once serialise on
the child's counts row (locked in a fixed order): the second waits for the first to commit and
adds to its counts, so one of them sees every parent ended.

Nodes that can no longer run end ``upstream_failed`` or ``skipped`` in the same transaction, and
so do their descendants (the loop below); their own outcomes reach this consumer again later and
find nothing left to do but the workflow's status.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from scheduler_app.models.base import utcnow
from scheduler_app.services.broker.dispatcher import Dispatcher
from scheduler_app.services.ledger.outcomes import Outcome, on_outcome
from scheduler_app.services.ledger.transitions import transition
from scheduler_app.services.ledger.unit import after_commit
from scheduler_app.services.tasks.dispatches import DISPATCH_COLUMNS, dispatch_of
from scheduler_app.services.workflows.rules import Decision, decide
from scheduler_app.states import TERMINAL, TaskStatus

log = logging.getLogger(__name__)

# The parents (edge, node, task) of the nodes whose task ids are :ids. Each step is a lateral
# subquery the planner may not flatten (OFFSET 0), so it is always an index lookup from the
# child outwards: on tables whose statistics are stale (a fresh deployment's first big
# workflow) the planner otherwise scanned every node of the workflow once per edge.
_PARENTS = (
    "workflow_nodes c, "
    "LATERAL (SELECT e.parent FROM workflow_edges e WHERE e.workflow_id = c.workflow_id"
    " AND e.child = c.node_id OFFSET 0) AS e, "
    "LATERAL (SELECT p.task_id FROM workflow_nodes p WHERE p.workflow_id = c.workflow_id"
    " AND p.node_id = e.parent OFFSET 0) AS p "
    "JOIN tasks pt ON pt.id = p.task_id "
    "WHERE c.task_id = ANY(CAST(:ids AS uuid[]))"
)
_OPEN_SQL = ", ".join(f"'{s.value}'" for s in sorted(set(TaskStatus) - TERMINAL))
# The terminal states a parent's end is counted in (one column each on workflow_nodes).
ENDED = tuple(s.value for s in sorted(TERMINAL))
_ENDED_SQL = ", ".join(f"'{s}'" for s in ENDED)
_COUNTS = ", ".join(f"parents_{s}" for s in ENDED)
# SCHEDULER_TEST_REMOVE=workflow_counted: a parent's end is added to its children's counts each
# time it is handed over (the negative control of tests/e2e/test_workflow_recovery.py).
_UNGUARDED_ENV = "SCHEDULER_TEST_REMOVE"


class _Publisher:
    """The dispatcher of this process (the API, a worker, the scheduler binds its own).

    Unbound, released nodes are still committed as queued with ``dispatched_at`` set: the
    reconciler publishes them once their message is seen missing.
    """

    dispatcher: Dispatcher | None = None


def _text_ids(ids: Iterable[uuid.UUID]) -> list[str]:
    return [str(i) for i in ids]


def bind_dispatcher(dispatcher: Dispatcher) -> None:
    """Publish the nodes this process releases with ``dispatcher`` (after their commit)."""
    _Publisher.dispatcher = dispatcher


def bound_dispatcher() -> Dispatcher | None:
    """This process's dispatcher (None until the process binds one)."""
    return _Publisher.dispatcher


# Consumers of "a workflow ended": each runs in the transaction that ends the workflows
# (ids given), e.g. the notifiers writing its deliveries.
WorkflowEndHook = Callable[[Session, Sequence[uuid.UUID]], None]
_WORKFLOW_END_HOOKS: dict[str, WorkflowEndHook] = {}


def on_workflow_end(hook: WorkflowEndHook) -> WorkflowEndHook:
    """Register ``hook(session, workflow_ids)`` for workflows that have just ended."""
    _WORKFLOW_END_HOOKS[f"{hook.__module__}.{hook.__qualname__}"] = hook
    return hook


def workflows_ended(session: Session, workflow_ids: Sequence[uuid.UUID]) -> None:
    """Hand workflows that this transaction ended to the registered hooks."""
    if workflow_ids:
        for hook in _WORKFLOW_END_HOOKS.values():
            hook(session, workflow_ids)


@on_outcome("workflows.advance", wants="workflow_id IS NOT NULL", columns=("workflow_id",))
def advance(session: Session, outcomes: Sequence[Outcome]) -> None:
    """Decide the children of the ended nodes, then the status of their workflows."""
    ended = [o.task_id for o in outcomes]
    workflows = session.scalars(
        text(
            "SELECT DISTINCT workflow_id FROM workflow_nodes "
            "WHERE task_id = ANY(CAST(:ids AS uuid[]))"
        ),
        {"ids": _text_ids(ended)},
    ).all()
    if not workflows:
        return  # a node's task replaced by a retry: the new task is the node now
    count_ends(session, ended)
    evaluate(session, _children(session, ended))
    settle(session, workflows)


def count_ends(session: Session, task_ids: Sequence[uuid.UUID]) -> None:
    """Add the ends of these node tasks (the terminal ones not added yet) to their children's
    counts; the children's count rows are locked in a fixed order first (no deadlock)."""
    guard = "" if _unguarded() else " AND NOT p.counted"
    ended = session.execute(
        text(
            "UPDATE workflow_nodes p SET counted = true FROM tasks t "
            "WHERE p.task_id = ANY(CAST(:ids AS uuid[])) AND t.id = p.task_id "
            f"AND t.status IN ({_ENDED_SQL}){guard} "
            "RETURNING p.workflow_id, p.node_id, t.status"
        ),
        {"ids": _text_ids(task_ids)},
    ).all()
    if not ended:
        return
    status_of = {(str(row.workflow_id), row.node_id): row.status for row in ended}
    edges = session.execute(
        text(
            "SELECT e.workflow_id, e.parent, e.child FROM workflow_edges e "
            "JOIN unnest(CAST(:wids AS uuid[]), CAST(:nodes AS text[])) AS p(wid, node) "
            "ON e.workflow_id = p.wid AND e.parent = p.node"
        ),
        {"wids": [w for w, _ in status_of], "nodes": [n for _, n in status_of]},
    ).all()
    if not edges:
        return
    added: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(ENDED, 0))
    for edge in edges:
        wid = str(edge.workflow_id)
        added[(wid, edge.child)][status_of[(wid, edge.parent)]] += 1
    rows = [{"workflow_id": w, "child": c, **counts} for (w, c), counts in added.items()]
    session.execute(
        text(
            "SELECT 1 FROM workflow_nodes c "
            "JOIN unnest(CAST(:wids AS uuid[]), CAST(:nodes AS text[])) AS m(wid, node) "
            "ON c.workflow_id = m.wid AND c.node_id = m.node "
            "ORDER BY c.workflow_id, c.node_id FOR UPDATE OF c"
        ),
        {"wids": [r["workflow_id"] for r in rows], "nodes": [r["child"] for r in rows]},
    )
    sets = ", ".join(f"parents_{s} = c.parents_{s} + m.{s}" for s in ENDED)
    types = ", ".join(f"{s} integer" for s in ENDED)
    session.execute(
        text(
            f"UPDATE workflow_nodes c SET {sets} "
            f"FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS m(workflow_id uuid, child text, "
            f"{types}) WHERE c.workflow_id = m.workflow_id AND c.node_id = m.child"
        ),
        {"rows": json.dumps(rows)},
    )


def recount(session: Session, workflow_id: uuid.UUID) -> None:
    """Every node's counts from its parents' current states (after a retry changed them)."""
    assigned = ", ".join(f"parents_{s} = coalesce(x.{s}, 0)" for s in ENDED)
    counts = ", ".join(f"count(*) FILTER (WHERE pt.status = '{s}') AS {s}" for s in ENDED)
    params = {"id": str(workflow_id)}
    session.execute(
        text(
            f"UPDATE workflow_nodes n SET counted = t.status IN ({_ENDED_SQL}) FROM tasks t "
            "WHERE n.workflow_id = :id AND t.id = n.task_id"
        ),
        params,
    )
    session.execute(
        text(
            f"UPDATE workflow_nodes c SET {assigned} FROM workflow_nodes n "
            f"LEFT JOIN (SELECT e.child, {counts} FROM workflow_edges e "
            "JOIN workflow_nodes p ON p.workflow_id = e.workflow_id AND p.node_id = e.parent "
            "JOIN tasks pt ON pt.id = p.task_id WHERE e.workflow_id = :id GROUP BY e.child) x "
            "ON x.child = n.node_id "
            "WHERE n.workflow_id = :id AND c.workflow_id = n.workflow_id AND c.node_id = n.node_id"
        ),
        params,
    )


def _unguarded() -> bool:
    return "workflow_counted" in os.environ.get(_UNGUARDED_ENV, "").split(",")


def _children(session: Session, parents: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    return list(
        session.scalars(
            text(
                "SELECT DISTINCT c.task_id FROM workflow_nodes p, "
                "LATERAL (SELECT e.child FROM workflow_edges e WHERE e.workflow_id = p.workflow_id"
                " AND e.parent = p.node_id OFFSET 0) AS e, "
                "LATERAL (SELECT c.task_id FROM workflow_nodes c"
                " WHERE c.workflow_id = p.workflow_id AND c.node_id = e.child OFFSET 0) AS c "
                "WHERE p.task_id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": _text_ids(parents)},
        )
    )


def evaluate(session: Session, candidates: Iterable[uuid.UUID]) -> int:
    """Release, fail or skip the pending ``candidates`` whose rule is decided; descendants of
    the ones that end follow in the same transaction. Returns how many nodes were released."""
    released = 0
    frontier = list(candidates)
    while frontier:
        # Lock first, then read the parents in a new statement: it sees every parent end that
        # committed before the lock was granted (READ COMMITTED takes a snapshot per statement).
        locked = session.scalars(
            text(
                "SELECT id FROM tasks WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'pending' "
                "ORDER BY id FOR UPDATE"
            ),
            {"ids": _text_ids(frontier)},
        ).all()
        if not locked:
            break
        # How many parents ended in each state: one row per child, read after the counts of
        # this transaction's ends were added (and those committed before them).
        rows = session.execute(
            text(
                f"SELECT task_id, trigger_rule, parents, {_COUNTS} FROM workflow_nodes "
                "WHERE task_id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": _text_ids(locked)},
        ).all()
        decided: dict[Decision, list[uuid.UUID]] = defaultdict(list)
        for row in rows:
            counts = {s: getattr(row, f"parents_{s}") for s in ENDED}
            counts[TaskStatus.PENDING.value] = max(0, row.parents - sum(counts.values()))
            decided[decide(row.trigger_rule, counts)].append(row.task_id)
        released += _release(session, decided[Decision.RELEASE])
        now = utcnow()
        frontier = []
        for decision, status in (
            (Decision.UPSTREAM_FAILED, TaskStatus.UPSTREAM_FAILED),
            (Decision.SKIPPED, TaskStatus.SKIPPED),
        ):
            moved = transition(
                session,
                decided[decision],
                status,
                values={"finished_at": now},
                detail=f"{status.value}: its trigger rule can no longer be met",
            )
            frontier += [row.id for row in moved]
        if frontier:
            count_ends(session, frontier)
            frontier = _children(session, frontier)
    return released


def _release(session: Session, children: list[uuid.UUID]) -> int:
    if not children:
        return 0
    now = utcnow()
    inputs: dict[uuid.UUID, dict[str, Any]] = {child: {"parents": {}} for child in children}
    for row in session.execute(
        text(f"SELECT c.task_id AS child, e.parent AS node_id, pt.result FROM {_PARENTS}"),
        {"ids": _text_ids(children)},
    ):
        inputs[row.child]["parents"][row.node_id] = row.result
    rows = transition(
        session,
        children,
        TaskStatus.QUEUED,
        values={"dispatched_at": now, "run_at": now},
        merge={"kwargs": inputs},
        detail="released: its parents satisfy its trigger rule",
        returning=DISPATCH_COLUMNS,
    )
    dispatches = [dispatch_of(row._mapping) for row in rows]
    dispatcher = _Publisher.dispatcher
    if dispatches and dispatcher is not None:
        after_commit(session, lambda: dispatcher.publish(dispatches))
    return len(rows)


def settle(session: Session, workflows: Sequence[uuid.UUID]) -> None:
    """Finish the running ``workflows`` that have nothing left to run."""
    locked = session.scalars(
        text(
            "SELECT id FROM workflows WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'running' "
            "ORDER BY id FOR UPDATE"
        ),
        {"ids": _text_ids(workflows)},
    ).all()
    ended = []
    for workflow_id in locked:
        # One probe of a partial index (ix_tasks_workflow_open): a node's current task is its
        # only one that can be unfinished (a retry replaces finished tasks only).
        if session.scalar(
            text(
                "SELECT EXISTS (SELECT 1 FROM tasks WHERE workflow_id = :id AND workflow_id IS "
                f"NOT NULL AND status IN ({_OPEN_SQL}))"
            ),
            {"id": str(workflow_id)},
        ):
            continue
        counts = session.execute(
            text(
                "SELECT count(*) FILTER (WHERE t.status IN ('failed', 'upstream_failed')) AS bad, "
                "count(*) FILTER (WHERE t.status = 'cancelled') AS cancelled "
                "FROM workflow_nodes n JOIN tasks t ON t.id = n.task_id "
                "WHERE n.workflow_id = :id"
            ),
            {"id": workflow_id},
        ).one()
        status = "failed" if counts.bad else "cancelled" if counts.cancelled else "succeeded"
        session.execute(
            text(
                "UPDATE workflows SET status = :status, finished_at = clock_timestamp(), "
                "prune_after = clock_timestamp() + retention * interval '1 second' "
                "WHERE id = :id AND status = 'running'"
            ),
            {"status": status, "id": workflow_id},
        )
        ended.append(workflow_id)
    workflows_ended(session, ended)
