"""retention: tasks.retention/prune_after, workflows.retention/prune_after, schedules.retention

Revision ID: 0010
Revises: 0006 (the lead re-chains it at the merge)
Create Date: 2026-12-01 22:30:00

A task's ``retention`` is the override it was given (its own, its type's or its queue's);
``prune_after`` is its finish time plus that override, written by the terminal move. Tasks
without an override are kept for their terminal state's default (a setting), found through
``ix_tasks_finished``; those with one through ``ix_tasks_prune_after``. Both are partial
indexes, so a live task has no entry in either.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0006"
branch_labels = None
depends_on = None

_TERMINAL = "'succeeded', 'failed', 'cancelled', 'upstream_failed', 'skipped'"
_OPEN = "'pending', 'scheduled', 'queued', 'running', 'retrying'"


def upgrade() -> None:
    op.add_column("tasks", sa.Column("retention", sa.Float(), nullable=True))
    op.add_column("tasks", sa.Column("prune_after", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_tasks_finished",
        "tasks",
        ["status", "finished_at"],
        postgresql_where=sa.text(
            f"status IN ({_TERMINAL}) AND retention IS NULL AND workflow_id IS NULL"
        ),
    )
    op.create_index(
        "ix_tasks_prune_after",
        "tasks",
        ["prune_after"],
        postgresql_where=sa.text("prune_after IS NOT NULL AND workflow_id IS NULL"),
    )
    op.create_index(
        "ix_tasks_replay_open",
        "tasks",
        ["replay_of"],
        postgresql_where=sa.text(f"replay_of IS NOT NULL AND status IN ({_OPEN})"),
    )
    op.add_column("workflows", sa.Column("retention", sa.Float(), nullable=True))
    op.add_column("workflows", sa.Column("prune_after", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_workflows_finished",
        "workflows",
        ["status", "finished_at"],
        postgresql_where=sa.text("status <> 'running' AND retention IS NULL"),
    )
    op.create_index(
        "ix_workflows_prune_after",
        "workflows",
        ["prune_after"],
        postgresql_where=sa.text("prune_after IS NOT NULL"),
    )
    op.add_column("schedules", sa.Column("retention", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("schedules", "retention")
    op.drop_index("ix_workflows_prune_after", table_name="workflows")
    op.drop_index("ix_workflows_finished", table_name="workflows")
    op.drop_column("workflows", "prune_after")
    op.drop_column("workflows", "retention")
    op.drop_index("ix_tasks_replay_open", table_name="tasks")
    op.drop_index("ix_tasks_prune_after", table_name="tasks")
    op.drop_index("ix_tasks_finished", table_name="tasks")
    op.drop_column("tasks", "prune_after")
    op.drop_column("tasks", "retention")
