"""The replay guard's finished jobs and attempts (fedmq_gateway_finished).

A database that an earlier version set up with create_all already has some of these tables:
they are adopted as they are, and only the missing ones are created.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from fedcommon.migrations import has_table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    if not has_table("fedmq_gateway_finished"):
        op.create_table(
            "fedmq_gateway_finished",
            sa.Column("job_id", sa.String(length=256), nullable=False),
            sa.Column("job_finished", sa.Boolean(), nullable=False),
            sa.Column("highest_finished_attempt", sa.BigInteger(), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("job_id"),
        )


def downgrade() -> None:
    op.drop_table("fedmq_gateway_finished")
