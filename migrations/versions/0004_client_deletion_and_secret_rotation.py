"""clients: soft deletion (deleted_at) and the secret generation of rotations

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 19:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("clients", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "clients",
        sa.Column("secret_generation", sa.Integer(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("clients", "secret_generation")
    op.drop_column("clients", "deleted_at")
