"""How long finished work is kept: the per-state defaults the settings give.

Overrides (a task's own ``retention``, its type's, its queue's) are resolved when the task is
accepted (services/tasks/submission.py) and stored on the row; the terminal move turns them into
``prune_after``. A task without one is kept for its final state's default, read here at pruning
time, so a change of the settings applies to tasks already finished.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler_app.config import Settings
from scheduler_app.states import TaskStatus

DAY = 86400.0


@dataclass(frozen=True)
class Retention:
    """Seconds a finished task (or workflow) is kept, by final state, when it has no override."""

    succeeded: float
    cancelled: float
    failed: float
    dead_letter: float  # a failed task is never pruned before its dead letter

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        dead_letter = settings.dlq_retention_days * DAY
        return cls(
            succeeded=settings.retention_succeeded,
            cancelled=settings.retention_cancelled,
            failed=settings.retention_failed or dead_letter,
            dead_letter=dead_letter,
        )

    def of(self, status: TaskStatus | str) -> float:
        """The default of a final state. skipped and upstream_failed are states only workflow
        nodes take, and nodes go with their workflow; should a task take them alone, it is kept
        as long as a cancelled or a failed one."""
        status = TaskStatus(status)
        if status in (TaskStatus.SUCCEEDED,):
            return self.succeeded
        if status in (TaskStatus.CANCELLED, TaskStatus.SKIPPED):
            return self.cancelled
        if status in (TaskStatus.FAILED, TaskStatus.UPSTREAM_FAILED):
            return self.failed
        raise ValueError(f"{status} is not a final state")
