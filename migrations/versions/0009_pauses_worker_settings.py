"""pauses and worker_settings: stored pauses of queues and workers, stored pool sizes

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 22:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Tiny (one row per paused queue or worker), read by every claim: its primary key is the
    # only index the claim's NOT EXISTS needs.
    op.create_table(
        "pauses",
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("paused_by", sa.String(length=255), nullable=True),
        sa.Column(
            "paused_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint("scope IN ('queue', 'worker')", name=op.f("ck_pauses_scope")),
        sa.PrimaryKeyConstraint("scope", "name", name=op.f("pk_pauses")),
    )
    op.create_table(
        "worker_settings",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(length=255), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint("concurrency >= 1", name=op.f("ck_worker_settings_concurrency")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_worker_settings")),
    )


def downgrade() -> None:
    op.drop_table("worker_settings")
    op.drop_table("pauses")
