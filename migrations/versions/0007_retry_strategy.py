"""retry delay strategies: tasks.retry_strategy and tasks.max_retry_duration

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


def downgrade() -> None:
    op.drop_constraint(op.f("ck_tasks_retry_strategy"), "tasks", type_="check")
    op.drop_column("tasks", "max_retry_duration")
    op.drop_column("tasks", "retry_strategy")
