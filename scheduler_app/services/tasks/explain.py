"""Why a task is not running (or not finished) right now, with the evidence for each reason.

Reasons, in the order they are given: ``finished`` (terminal: status, when, error type),
``running`` (worker, since), ``waiting_for_parents`` (a workflow node's unfinished parents),
``scheduled`` and ``retry_backoff`` (until when), ``queue_paused`` (by whom, since),
``workers_paused`` (every online worker of its queue is paused), ``no_worker`` (no online
worker consumes its queue) and ``queued`` (waiting for a free worker, with the queue's depth).
The platform has no rate limits on tasks (workers run with Celery's rate limits disabled), so
there is no ``rate_limited`` reason.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app.models import Run
from scheduler_app.models.base import utcnow
from scheduler_app.services.clients.principal import Principal
from scheduler_app.services.tasks.service import TaskService
from scheduler_app.services.workers.overview import OperationsView
from scheduler_app.states import TaskStatus

WAITING = frozenset({TaskStatus.SCHEDULED, TaskStatus.QUEUED, TaskStatus.RETRYING})

PARENTS_SQL = """
SELECT e.parent AS node_id, n.task_id, t.status
FROM workflow_edges e
JOIN workflow_nodes n ON n.workflow_id = e.workflow_id AND n.node_id = e.parent
LEFT JOIN tasks t ON t.id = n.task_id
WHERE e.workflow_id = :workflow_id AND e.child = :child
ORDER BY e.parent
"""


@dataclass
class TaskExplainer:
    """``GET /tasks/{id}/explain``: owner-scoped like ``GET /tasks/{id}``."""

    sessions: sessionmaker[Session]
    tasks: TaskService
    operations: OperationsView

    def explain(self, principal: Principal, task_id: uuid.UUID) -> dict[str, Any]:
        """The task's status and the reasons it is where it is; raises NotFound."""
        task = self.tasks.get(principal, task_id)
        status = TaskStatus(task.status)
        reasons: list[dict[str, Any]] = []
        if status.terminal:
            reasons.append(
                {
                    "code": "finished",
                    "message": f"the task has finished ({status.value}); it will not run again",
                    "status": status.value,
                    "finished_at": task.finished_at,
                    "error_type": task.error_type,
                }
            )
        elif status is TaskStatus.RUNNING:
            reasons.append(self._running(task))
        elif status is TaskStatus.PENDING:
            reasons.append(self._parents(task))
        if status in WAITING:
            reasons += self._waiting(task, status)
        return {"status": status.value, "reasons": reasons}

    def _running(self, task: Any) -> dict[str, Any]:
        with self.sessions() as session:
            run = session.execute(
                select(Run.worker, Run.started_at).where(
                    Run.task_id == task.id, Run.attempt == task.attempts
                )
            ).first()
        worker = run.worker if run else None
        return {
            "code": "running",
            "message": f"attempt {task.attempts} is running on {worker or 'a worker'}",
            "worker": worker,
            "since": run.started_at if run else task.started_at,
            "attempt": task.attempts,
        }

    def _parents(self, task: Any) -> dict[str, Any]:
        with self.sessions() as session:
            rows = session.execute(
                text(PARENTS_SQL), {"workflow_id": task.workflow_id, "child": task.node_id}
            ).all()
        waiting = [
            {"node_id": r.node_id, "task_id": r.task_id, "status": r.status}
            for r in rows
            if r.status is None or not TaskStatus(r.status).terminal
        ]
        names = ", ".join(p["node_id"] for p in waiting) or "none left"
        return {
            "code": "waiting_for_parents",
            "message": f"waiting for its parents to finish: {names}",
            "parents": waiting,
        }

    def _waiting(self, task: Any, status: TaskStatus) -> list[dict[str, Any]]:
        reasons: list[dict[str, Any]] = []
        now = utcnow()
        if status is not TaskStatus.QUEUED and task.run_at and task.run_at > now:
            if status is TaskStatus.RETRYING:
                reasons.append(
                    {
                        "code": "retry_backoff",
                        "message": f"attempt {task.attempts} failed ({task.error_type}); "
                        f"the next one waits until {task.run_at.isoformat()}",
                        "until": task.run_at,
                        "attempt": task.attempts,
                        "error_type": task.error_type,
                    }
                )
            else:
                reasons.append(
                    {
                        "code": "scheduled",
                        "message": f"scheduled to run at {task.run_at.isoformat()}",
                        "until": task.run_at,
                    }
                )
        [queue] = self.operations.queues(task.queue)
        if queue["paused"]:
            reasons.append(
                {
                    "code": "queue_paused",
                    "message": f"queue {task.queue} is paused",
                    "queue": task.queue,
                    "paused_by": queue["paused_by"],
                    "since": queue["paused_at"],
                }
            )
        if queue["workers"] == 0:
            reasons.append(
                {
                    "code": "no_worker",
                    "message": f"no online worker consumes queue {task.queue}",
                    "queue": task.queue,
                }
            )
        elif queue["unpaused_workers"] == 0:
            reasons.append(
                {
                    "code": "workers_paused",
                    "message": f"every online worker of queue {task.queue} is paused",
                    "queue": task.queue,
                    "workers": [
                        w["name"]
                        for w in self.operations.workers()
                        if w["status"] == "paused" and task.queue in w["queues"]
                    ],
                }
            )
        if not reasons:
            reasons.append(
                {
                    "code": "queued",
                    "message": f"waiting for a free worker of queue {task.queue}",
                    "queue": task.queue,
                    "depth": queue["depth"],
                }
            )
        return reasons
