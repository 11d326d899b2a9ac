"""deliveries are sent by the schedulers' dispatcher: a due time, a claim, the round's attempts

Until 0010 every delivery had a ``notify.deliver`` task (``delivery_task_id``). From 0011 the
``deliveries`` row is its own queue: ``next_attempt_at`` (when it is due; pushed ahead by a
claim, so a dispatcher that dies lets it come due again), ``lease`` (the claim's token: only
the claimant records the attempt), and ``round_attempts`` / ``round_at`` (the attempts and the
start of the current round, which a redelivery restarts). Pending deliveries of 0010 are due
at once, and their ``notify.deliver`` tasks that had not ended are cancelled (with their
timeline event): nothing consumes the ``notifications`` queue any more.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("next_attempt_at", sa.DateTime(timezone=True)))
    op.add_column("deliveries", sa.Column("lease", sa.UUID()))
    op.add_column(
        "deliveries",
        sa.Column("round_attempts", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column("deliveries", sa.Column("round_at", sa.DateTime(timezone=True)))
    op.execute(
        "UPDATE deliveries SET next_attempt_at = clock_timestamp(), round_at = created_at, "
        "round_attempts = attempts WHERE status = 'pending'"
    )
    op.execute(
        "WITH moved AS (UPDATE tasks SET status = 'cancelled', finished_at = clock_timestamp() "
        "WHERE task = 'notify.deliver' AND status IN ('pending', 'scheduled', 'queued', "
        "'running', 'retrying') RETURNING id, attempts) "
        "INSERT INTO task_events (task_id, at, status, attempt, worker, detail) "
        "SELECT id, clock_timestamp(), 'cancelled', attempts, NULL, "
        "'schema 0011: the schedulers send deliveries' FROM moved"
    )
    op.drop_index("ix_deliveries_pending", table_name="deliveries")
    op.drop_index("ix_deliveries_delivery_task_id", table_name="deliveries")
    op.drop_column("deliveries", "delivery_task_id")
    op.create_index(
        "ix_deliveries_due", "deliveries", ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_due", table_name="deliveries")
    op.add_column("deliveries", sa.Column("delivery_task_id", sa.UUID()))
    op.create_index("ix_deliveries_delivery_task_id", "deliveries", ["delivery_task_id"])
    op.create_index(
        "ix_deliveries_pending", "deliveries", ["created_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    for column in ("round_at", "round_attempts", "lease", "next_attempt_at"):
        op.drop_column("deliveries", column)
