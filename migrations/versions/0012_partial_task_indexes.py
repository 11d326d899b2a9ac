"""tasks: the indexes of optional columns hold only the rows that have a value

Every status change of a task is a new row version (``status`` is indexed, so no change is a HOT
update) and writes an entry into every index of ``tasks`` whose predicate it matches. Four of
them indexed every task although most have no value there: the unique (owner, idempotency key)
constraint, ``workflow_id``, ``schedule_id`` and the GIN index of ``tags``. They become partial
(``IS NOT NULL``; ``cardinality(tags) > 0``), so a plain task's insert and each of its moves
write four index entries fewer. The queries that use them select only rows with a value (an
equality on the column implies ``IS NOT NULL``; the tag filter adds ``cardinality(tags) > 0``),
and the submission's ``ON CONFLICT DO NOTHING`` names no constraint, so it applies the unique
index as it did the constraint.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # the constraint's index has the name the partial index takes: build under a new name first
    op.create_index(
        "uq_tasks_owner_idempotency",
        "tasks",
        ["owner_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.drop_constraint("uq_tasks_owner_idempotency_key", "tasks", type_="unique")
    op.execute("ALTER INDEX uq_tasks_owner_idempotency RENAME TO uq_tasks_owner_idempotency_key")
    for column in ("workflow_id", "schedule_id"):
        op.drop_index(f"ix_tasks_{column}", table_name="tasks")
        op.create_index(
            f"ix_tasks_{column}",
            "tasks",
            [column],
            postgresql_where=sa.text(f"{column} IS NOT NULL"),
        )
    op.drop_index("ix_tasks_tags", table_name="tasks")
    op.create_index(
        "ix_tasks_tags",
        "tasks",
        ["tags"],
        postgresql_using="gin",
        postgresql_where=sa.text("cardinality(tags) > 0"),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_tags", table_name="tasks")
    op.create_index("ix_tasks_tags", "tasks", ["tags"], postgresql_using="gin")
    for column in ("workflow_id", "schedule_id"):
        op.drop_index(f"ix_tasks_{column}", table_name="tasks")
        op.create_index(f"ix_tasks_{column}", "tasks", [column])
    op.drop_index("uq_tasks_owner_idempotency_key", table_name="tasks")
    op.create_unique_constraint(
        "uq_tasks_owner_idempotency_key", "tasks", ["owner_id", "idempotency_key"]
    )
