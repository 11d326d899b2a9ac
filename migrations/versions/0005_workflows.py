"""workflows: workflows, workflow_nodes, workflow_edges; tasks may be skipped

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 20:40:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_BEFORE = (
    "'pending', 'scheduled', 'queued', 'running', 'retrying', 'succeeded', 'failed', "
    "'cancelled', 'upstream_failed'"
)
_AFTER = _BEFORE + ", 'skipped'"
_OPEN = (
    "workflow_id IS NOT NULL AND status IN ('pending', 'scheduled', 'queued', 'running', 'retrying')"
)


def upgrade() -> None:
    op.drop_constraint(op.f("ck_tasks_status"), "tasks", type_="check")
    op.create_check_constraint(op.f("ck_tasks_status"), "tasks", f"status IN ({_AFTER})")
    op.create_index(
        "ix_tasks_workflow_open",
        "tasks",
        ["workflow_id"],
        postgresql_where=sa.text(_OPEN),
    )
    op.create_table(
        "workflows",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("owner_id", sa.UUID(), nullable=False),
        sa.Column("tags", postgresql.ARRAY(sa.String(length=100)), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed', 'cancelled')",
            name=op.f("ck_workflows_status"),
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["clients.id"],
            name=op.f("fk_workflows_owner_id_clients"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
    )
    op.create_index(
        "ix_workflows_created",
        "workflows",
        [sa.literal_column("created_at DESC"), sa.literal_column("id DESC")],
    )
    op.create_index(
        "ix_workflows_owner_created",
        "workflows",
        ["owner_id", sa.literal_column("created_at DESC"), sa.literal_column("id DESC")],
    )
    op.create_index("ix_workflows_tags", "workflows", ["tags"], postgresql_using="gin")
    op.create_table(
        "workflow_nodes",
        sa.Column("workflow_id", sa.UUID(), nullable=False),
        sa.Column("node_id", sa.String(length=100), nullable=False),
        sa.Column("task_id", sa.UUID(), nullable=False),
        sa.Column("trigger_rule", sa.String(length=20), nullable=False),
        sa.CheckConstraint(
            "trigger_rule IN ('all_success', 'all_done', 'one_success', 'one_failed', "
            "'none_failed')",
            name=op.f("ck_workflow_nodes_trigger_rule"),
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_workflow_nodes_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workflow_id", "node_id", name=op.f("pk_workflow_nodes")),
        sa.UniqueConstraint("task_id", name=op.f("uq_workflow_nodes_task_id")),
    )
    op.create_table(
        "workflow_edges",
        sa.Column("workflow_id", sa.UUID(), nullable=False),
        sa.Column("parent", sa.String(length=100), nullable=False),
        sa.Column("child", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_workflow_edges_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workflow_id", "parent", "child", name=op.f("pk_workflow_edges")),
    )
    op.create_index("ix_workflow_edges_child", "workflow_edges", ["workflow_id", "child"])


def downgrade() -> None:
    op.drop_index("ix_workflow_edges_child", table_name="workflow_edges")
    op.drop_table("workflow_edges")
    op.drop_table("workflow_nodes")
    op.drop_index("ix_workflows_tags", table_name="workflows", postgresql_using="gin")
    op.drop_index("ix_workflows_owner_created", table_name="workflows")
    op.drop_index("ix_workflows_created", table_name="workflows")
    op.drop_table("workflows")
    op.drop_index("ix_tasks_workflow_open", table_name="tasks", postgresql_where=sa.text(_OPEN))
    op.execute("UPDATE tasks SET status = 'cancelled' WHERE status = 'skipped'")
    op.drop_constraint(op.f("ck_tasks_status"), "tasks", type_="check")
    op.create_check_constraint(op.f("ck_tasks_status"), "tasks", f"status IN ({_BEFORE})")
