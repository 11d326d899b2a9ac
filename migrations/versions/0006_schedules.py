"""schedules and schedule_runs: recurring firings and their ledger of slots

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 20:40:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
# Chained onto 0004 so that it applies in this branch on its own; at the merge it follows 0005.
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("owner_id", sa.UUID(), nullable=False),
        sa.Column("task", sa.String(length=200), nullable=False),
        sa.Column("args", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("kwargs", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("cron", sa.String(length=200), nullable=True),
        sa.Column("interval", sa.Float(), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=100), nullable=True),
        sa.Column("priority", sa.SmallInteger(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("overlap", sa.String(length=20), nullable=False),
        sa.Column("catchup", sa.String(length=20), nullable=False),
        sa.Column("jitter", sa.Float(), nullable=True),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retry", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("timeout", sa.Float(), nullable=True),
        sa.Column("tags", postgresql.ARRAY(sa.String(length=100)), nullable=False),
        sa.Column("anchor_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("buffered_slot", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_task_id", sa.UUID(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint(
            "(cron IS NULL) <> (interval IS NULL)", name=op.f("ck_schedules_cron_or_interval")
        ),
        sa.CheckConstraint(
            "overlap IN ('allow', 'skip', 'buffer_one')", name=op.f("ck_schedules_overlap")
        ),
        sa.CheckConstraint("catchup IN ('none', 'last', 'all')", name=op.f("ck_schedules_catchup")),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["clients.id"],
            name=op.f("fk_schedules_owner_id_clients"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
    )
    op.create_index(
        "ix_schedules_owner_created",
        "schedules",
        ["owner_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.create_index(
        "ix_schedules_created", "schedules", [sa.text("created_at DESC"), sa.text("id DESC")]
    )
    op.create_index(
        "ix_schedules_due", "schedules", ["due_at"], postgresql_where=sa.text("enabled")
    )
    op.create_index(
        "ix_schedules_buffered",
        "schedules",
        ["id"],
        postgresql_where=sa.text("buffered_slot IS NOT NULL"),
    )
    op.create_table(
        "schedule_runs",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("schedule_id", sa.UUID(), nullable=False),
        sa.Column("slot", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("task_id", sa.UUID(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint(
            "status IN ('fired', 'skipped', 'buffered')", name=op.f("ck_schedule_runs_status")
        ),
        sa.CheckConstraint(
            "kind IN ('scheduled', 'catchup', 'manual')", name=op.f("ck_schedule_runs_kind")
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedules.id"],
            name=op.f("fk_schedule_runs_schedule_id_schedules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_runs")),
        sa.UniqueConstraint("schedule_id", "slot", name="uq_schedule_runs_schedule_slot"),
    )


def downgrade() -> None:
    op.drop_table("schedule_runs")
    op.drop_index("ix_schedules_buffered", table_name="schedules")
    op.drop_index("ix_schedules_due", table_name="schedules")
    op.drop_index("ix_schedules_created", table_name="schedules")
    op.drop_index("ix_schedules_owner_created", table_name="schedules")
    op.drop_table("schedules")
