"""A node's counts of ended parents on the real ledger: each parent's end is added once.

A parent's end handed over twice (a duplicate hand-over of its outcome, e.g. the scheduler's
sweep racing the process that ended it) must not count twice: the join below would then be
released while one of its parents still runs, and run before it has all its inputs.

Negative control: SCHEDULER_TEST_REMOVE=workflow_counted adds an end each time it is handed over;
test_a_parent_end_handed_over_twice_counts_once then fails (the join is released early).
"""

from __future__ import annotations

import uuid

from sqlalchemy import text

from scheduler_app.models.base import utcnow
from scheduler_app.services.ledger.outcomes import Outcome
from scheduler_app.services.ledger.transitions import transition
from scheduler_app.services.ledger.unit import unit_of_work
from scheduler_app.services.workflows import advance
from scheduler_app.states import TaskStatus
from tests.workflow_support import get, node, submit


def _end(app, task_id: str, status: TaskStatus = TaskStatus.SUCCEEDED) -> None:
    """Run and end a node's task in-process (queue "low" has no worker); its outcome is handed
    to the workflow consumer after the commit, as a worker's would be."""
    now = utcnow()
    with unit_of_work(app.extensions["scheduler"].tasks.sessions) as session:
        assert transition(session, uuid.UUID(task_id), TaskStatus.RUNNING, values={"attempts": 1})
        if status is TaskStatus.SUCCEEDED:
            values = {"finished_at": now, "result": "1"}
        else:
            values = {"finished_at": now, "error_type": "E", "error_message": "m"}
        assert transition(session, uuid.UUID(task_id), status, values=values)


def _hand_over_again(app, task_id: str) -> None:
    """The workflow consumer handed the same end once more."""
    with unit_of_work(app.extensions["scheduler"].tasks.sessions) as session:
        advance.advance(
            session, [Outcome(0, uuid.UUID(task_id), TaskStatus.SUCCEEDED, 1, utcnow())]
        )


def _counts(app, workflow_id: str, node_id: str) -> tuple:
    with app.extensions["scheduler"].tasks.sessions() as session:
        return tuple(
            session.execute(
                text(
                    "SELECT parents, parents_succeeded, parents_failed FROM workflow_nodes "
                    "WHERE workflow_id = :w AND node_id = :n"
                ),
                {"w": workflow_id, "n": node_id},
            ).one()
        )


def _releases(app, task_id: str) -> int:
    with app.extensions["scheduler"].tasks.sessions() as session:
        return session.scalar(
            text(
                "SELECT count(*) FROM task_events WHERE task_id = :id AND detail LIKE 'released%'"
            ),
            {"id": task_id},
        )


def test_a_parent_end_handed_over_twice_counts_once(app, api, submitter):
    wf = submit(
        api,
        submitter,
        [
            node("a", "demo.sum", queue="low"),
            node("b", "demo.sum", queue="low"),
            node("join", "demo.sum", "a", "b", queue="low"),
        ],
    )
    ids = {n: wf["nodes"][n]["task_id"] for n in ("a", "b", "join")}
    assert _counts(app, wf["id"], "join") == (2, 0, 0)
    _end(app, ids["a"])
    _hand_over_again(app, ids["a"])
    _hand_over_again(app, ids["a"])
    assert get(api, submitter, wf["id"])["nodes"]["join"]["status"] == "pending"
    assert _counts(app, wf["id"], "join") == (2, 1, 0)
    _end(app, ids["b"])
    _hand_over_again(app, ids["b"])
    join = get(api, submitter, wf["id"])["nodes"]["join"]
    assert join["status"] == "queued"
    assert _counts(app, wf["id"], "join") == (2, 2, 0)
    assert _releases(app, ids["join"]) == 1
    task = api.get(f"/api/v1/tasks/{ids['join']}", headers=submitter).json
    assert task["kwargs"]["parents"] == {"a": 1, "b": 1}


def test_a_failed_parent_counts_and_propagates_down_a_chain(app, api, submitter):
    """a fails: b (all_success) ends upstream_failed at once, its end is counted for c in the
    same transaction, and c follows; then the workflow has failed."""
    wf = submit(
        api,
        submitter,
        [
            node("a", "demo.sum", queue="low"),
            node("b", "demo.sum", "a", queue="low"),
            node("c", "demo.sum", "b", queue="low"),
            node("d", "demo.sum", "b", queue="low", trigger_rule="all_done"),
        ],
    )
    _end(app, wf["nodes"]["a"]["task_id"], TaskStatus.FAILED)
    done = get(api, submitter, wf["id"])
    assert {n: s["status"] for n, s in done["nodes"].items()} == {
        "a": "failed",
        "b": "upstream_failed",
        "c": "upstream_failed",
        "d": "queued",
    }
    assert _counts(app, wf["id"], "b") == (1, 0, 1)
