"""Task states and the transitions allowed between them."""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    """The life of a task (DESIGN.md section 3)."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UPSTREAM_FAILED = "upstream_failed"
    SKIPPED = "skipped"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {
        TaskStatus.SUCCEEDED,
        TaskStatus.FAILED,
        TaskStatus.CANCELLED,
        TaskStatus.UPSTREAM_FAILED,
        TaskStatus.SKIPPED,
    }
)

S = TaskStatus
# target -> the states it may be entered from. A terminal state is never a source.
ALLOWED_SOURCES: dict[TaskStatus, frozenset[TaskStatus]] = {
    S.SCHEDULED: frozenset({S.PENDING}),
    S.QUEUED: frozenset({S.PENDING, S.SCHEDULED, S.RETRYING}),
    # a short delay rides a broker ETA while the task stays scheduled: it may start from there
    S.RUNNING: frozenset({S.SCHEDULED, S.QUEUED, S.RETRYING}),
    S.RETRYING: frozenset({S.RUNNING}),
    S.SUCCEEDED: frozenset({S.RUNNING}),
    S.FAILED: frozenset({S.PENDING, S.SCHEDULED, S.QUEUED, S.RUNNING, S.RETRYING}),
    S.CANCELLED: frozenset({S.PENDING, S.SCHEDULED, S.QUEUED, S.RUNNING, S.RETRYING}),
    S.UPSTREAM_FAILED: frozenset({S.PENDING}),
    # a workflow node whose trigger rule can no longer be met for another reason than a failure
    S.SKIPPED: frozenset({S.PENDING}),
}

# The states a worker may claim a task from (a published task waiting for a worker).
CLAIMABLE = ALLOWED_SOURCES[S.RUNNING]

assert not any(TERMINAL & sources for sources in ALLOWED_SOURCES.values())
