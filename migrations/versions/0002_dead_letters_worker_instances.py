"""dead letters, worker instances

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 14:12:23.280343
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('worker_instances',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('queues', postgresql.ARRAY(sa.String(length=100)), nullable=False),
    sa.Column('concurrency', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('stopped_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('active', postgresql.ARRAY(sa.UUID()), server_default='{}', nullable=False),
    sa.Column('processed', sa.Integer(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_worker_instances'))
    )
    op.create_index(op.f('ix_worker_instances_name'), 'worker_instances', ['name'], unique=False)
    op.create_table('dead_letters',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('task_id', sa.UUID(), nullable=False),
    sa.Column('owner_id', sa.UUID(), nullable=False),
    sa.Column('task', sa.String(length=200), nullable=False),
    sa.Column('args', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('kwargs', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('queue', sa.String(length=100), nullable=False),
    sa.Column('error_type', sa.String(length=200), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('traceback', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('worker', sa.String(length=255), nullable=True),
    sa.Column('failed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('replayed_task_id', sa.UUID(), nullable=True),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_dead_letters_task_id_tasks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dead_letters')),
    sa.UniqueConstraint('task_id', name=op.f('uq_dead_letters_task_id'))
    )
    op.create_index(op.f('ix_dead_letters_error_type'), 'dead_letters', ['error_type'], unique=False)
    op.create_index('ix_dead_letters_failed', 'dead_letters', [sa.literal_column('failed_at DESC'), sa.literal_column('id DESC')], unique=False)
    op.create_index(op.f('ix_dead_letters_owner_id'), 'dead_letters', ['owner_id'], unique=False)
    op.create_index(op.f('ix_dead_letters_task'), 'dead_letters', ['task'], unique=False)
    op.add_column('runs', sa.Column('worker_instance', sa.UUID(), nullable=True))
    op.create_index(
        'ix_tasks_expiring', 'tasks', ['expires_at'], unique=False,
        postgresql_where=sa.text(
            "expires_at IS NOT NULL AND status IN ('pending', 'scheduled', 'queued', 'retrying')"
        ),
    )


def downgrade() -> None:
    op.drop_index('ix_tasks_expiring', table_name='tasks')
    op.drop_column('runs', 'worker_instance')
    op.drop_index(op.f('ix_dead_letters_task'), table_name='dead_letters')
    op.drop_index(op.f('ix_dead_letters_owner_id'), table_name='dead_letters')
    op.drop_index('ix_dead_letters_failed', table_name='dead_letters')
    op.drop_index(op.f('ix_dead_letters_error_type'), table_name='dead_letters')
    op.drop_table('dead_letters')
    op.drop_index(op.f('ix_worker_instances_name'), table_name='worker_instances')
    op.drop_table('worker_instances')
