"""retry delay strategies (tasks.retry_strategy, tasks.max_retry_duration); per-node counts of
ended parents (workflow_nodes.parents, parents_<state>, counted)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 22:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


_ENDED = ("succeeded", "failed", "cancelled", "upstream_failed", "skipped")


def upgrade() -> None:
    # A constant default: PostgreSQL adds the column without rewriting the table.
    op.add_column(
        "tasks",
        sa.Column(
            "retry_strategy",
            sa.String(length=20),
            server_default="exponential",
            nullable=False,
        ),
    )
    op.add_column("tasks", sa.Column("max_retry_duration", sa.Float(), nullable=True))
    op.create_check_constraint(
        op.f("ck_tasks_retry_strategy"),
        "tasks",
        "retry_strategy IN ('exponential', 'linear', 'fixed')",
    )
    op.add_column(
        "workflow_nodes",
        sa.Column("parents", sa.Integer(), server_default="0", nullable=False),
    )
    for state in _ENDED:
        op.add_column(
            "workflow_nodes",
            sa.Column(f"parents_{state}", sa.Integer(), server_default="0", nullable=False),
        )
    op.add_column(
        "workflow_nodes",
        sa.Column("counted", sa.Boolean(), server_default="false", nullable=False),
    )
    # Existing workflows: the counts from the parents' states now (as advance.recount does).
    ended = ", ".join(f"'{s}'" for s in _ENDED)
    counts = ", ".join(
        f"count(*) FILTER (WHERE pt.status = '{s}') AS parents_{s}" for s in _ENDED
    )
    assigned = ", ".join(f"parents_{s} = x.parents_{s}" for s in _ENDED)
    op.execute(
        f"UPDATE workflow_nodes n SET counted = t.status IN ({ended}) "
        "FROM tasks t WHERE t.id = n.task_id"
    )
    op.execute(
        f"UPDATE workflow_nodes c SET parents = x.parents, {assigned} FROM ("
        f"SELECT e.workflow_id, e.child, count(*) AS parents, {counts} "
        "FROM workflow_edges e JOIN workflow_nodes p ON p.workflow_id = e.workflow_id "
        "AND p.node_id = e.parent JOIN tasks pt ON pt.id = p.task_id "
        "GROUP BY e.workflow_id, e.child) AS x "
        "WHERE c.workflow_id = x.workflow_id AND c.node_id = x.child"
    )


def downgrade() -> None:
    for column in ("counted", "parents", *(f"parents_{s}" for s in _ENDED)):
        op.drop_column("workflow_nodes", column)
    op.drop_constraint(op.f("ck_tasks_retry_strategy"), "tasks", type_="check")
    op.drop_column("tasks", "max_retry_duration")
    op.drop_column("tasks", "retry_strategy")
