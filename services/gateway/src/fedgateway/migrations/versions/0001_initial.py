"""The replay guard's finished jobs and attempts (fedmq_gateway_finished), adopted where an
earlier version's create_all made it.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from fedcommon.migrations import create_missing, drop_tables

revision = "0001"
down_revision = None

# Frozen as this revision made it; later changes come as new revisions.
FINISHED = sa.Table(
    "fedmq_gateway_finished",
    sa.MetaData(),
    sa.Column("job_id", sa.String(length=256), nullable=False),
    sa.Column("job_finished", sa.Boolean(), nullable=False),
    sa.Column("highest_finished_attempt", sa.BigInteger(), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("job_id"),
)


def upgrade() -> None:
    create_missing(FINISHED)


def downgrade() -> None:
    drop_tables(FINISHED)
