"""retention: tasks.retention/prune_after, workflows.retention/prune_after, schedules.retention;
task_events partitioned by day

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 22:30:00

A task's ``retention`` is the override it was given (its own, its type's or its queue's);
``prune_after`` is its finish time plus that override, written by the terminal move. Tasks
without an override are kept for their terminal state's default (a setting), found through
``ix_tasks_finished``; those with one through ``ix_tasks_prune_after``. Both are partial
indexes, so a live task has no entry in either.

``task_events`` becomes a table partitioned by range of ``at`` (one partition a day, named
``task_events_pYYYYMMDD``, and ``task_events_default`` for anything no partition covers, so an
insert never fails): the existing rows are copied into daily partitions. Its primary key is
``(id, at)`` (a partitioned table's keys include the partition key) and it has no foreign key to
``tasks``: events leave with their partition (services/retention/partitions.py), not row by row.
The scheduler creates partitions ahead and drops old ones; Alembic owns only the parent.
"""

from datetime import timedelta

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_TERMINAL = "'succeeded', 'failed', 'cancelled', 'upstream_failed', 'skipped'"
_OPEN = "'pending', 'scheduled', 'queued', 'running', 'retrying'"


_EVENT_COLUMNS = "id, task_id, at, status, attempt, worker, detail"
_DAY_PARTITION = """
CREATE TABLE {name} PARTITION OF task_events
    FOR VALUES FROM ('{lo} 00:00:00+00') TO ('{hi} 00:00:00+00')
"""


def _partition_task_events() -> None:
    op.execute("ALTER TABLE task_events RENAME TO task_events_unpartitioned")
    op.execute("ALTER INDEX pk_task_events RENAME TO pk_task_events_unpartitioned")
    op.execute("ALTER INDEX ix_task_events_task_id RENAME TO ix_task_events_task_id_unpartitioned")
    op.execute(
        """
        CREATE TABLE task_events (
            id bigint NOT NULL DEFAULT nextval('task_events_id_seq'),
            task_id uuid NOT NULL,
            at timestamptz NOT NULL DEFAULT now(),
            status varchar(20) NOT NULL,
            attempt integer NOT NULL,
            worker varchar(255),
            detail text,
            CONSTRAINT pk_task_events PRIMARY KEY (id, at)
        ) PARTITION BY RANGE (at)
        """
    )
    op.execute("CREATE INDEX ix_task_events_task_id ON task_events (task_id)")
    op.execute("CREATE TABLE task_events_default PARTITION OF task_events DEFAULT")
    bind = op.get_bind()
    first, last = bind.execute(
        sa.text(
            "SELECT (date_trunc('day', min(at) AT TIME ZONE 'UTC'))::date,"
            " (now() AT TIME ZONE 'UTC')::date + 3 FROM task_events_unpartitioned"
        )
    ).one()
    today = bind.execute(sa.text("SELECT (now() AT TIME ZONE 'UTC')::date")).scalar()
    day = first or today
    while day <= last:
        following = day + timedelta(days=1)
        op.execute(_DAY_PARTITION.format(name=f"task_events_p{day:%Y%m%d}", lo=day, hi=following))
        day = following
    op.execute(
        f"INSERT INTO task_events ({_EVENT_COLUMNS})"
        f" SELECT {_EVENT_COLUMNS} FROM task_events_unpartitioned"
    )
    op.execute("ALTER SEQUENCE task_events_id_seq OWNED BY task_events.id")
    op.execute("DROP TABLE task_events_unpartitioned")


def _unpartition_task_events() -> None:
    op.execute("ALTER TABLE task_events RENAME TO task_events_partitioned")
    op.execute("ALTER INDEX pk_task_events RENAME TO pk_task_events_partitioned")
    op.execute("ALTER INDEX ix_task_events_task_id RENAME TO ix_task_events_task_id_partitioned")
    op.execute(
        """
        CREATE TABLE task_events (
            id bigint NOT NULL DEFAULT nextval('task_events_id_seq'),
            task_id uuid NOT NULL,
            at timestamptz NOT NULL DEFAULT now(),
            status varchar(20) NOT NULL,
            attempt integer NOT NULL,
            worker varchar(255),
            detail text,
            CONSTRAINT pk_task_events PRIMARY KEY (id),
            CONSTRAINT fk_task_events_task_id_tasks FOREIGN KEY (task_id)
                REFERENCES tasks (id) ON DELETE CASCADE
        )
        """
    )
    op.execute("CREATE INDEX ix_task_events_task_id ON task_events (task_id)")
    # Events whose task was pruned waited for their partition to be dropped: they go now.
    op.execute(
        f"INSERT INTO task_events ({_EVENT_COLUMNS}) SELECT {_EVENT_COLUMNS}"
        " FROM task_events_partitioned e WHERE EXISTS (SELECT 1 FROM tasks t WHERE t.id = e.task_id)"
    )
    op.execute("ALTER SEQUENCE task_events_id_seq OWNED BY task_events.id")
    op.execute("DROP TABLE task_events_partitioned")  # its partitions with it


def upgrade() -> None:
    _partition_task_events()
    # What the pruner removed, by queue, type and final state: /metrics' task counters are the
    # ledger's rows plus these, so they keep rising when tasks leave.
    op.create_table(
        "pruned_tasks",
        sa.Column("queue", sa.String(length=255), nullable=False),
        sa.Column("task", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("tasks", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("retries", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("queue", "task", "status", name=op.f("pk_pruned_tasks")),
    )
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
    _unpartition_task_events()
    op.drop_table("pruned_tasks")
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
