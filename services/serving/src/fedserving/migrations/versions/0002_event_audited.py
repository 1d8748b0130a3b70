"""Lifecycle events are forwarded to the party's audit service: `serving_events.audited` marks
the ones the broker confirmed (an outbox: the events of a revision-0001 registry are forwarded
too, once).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from fedcommon.migrations import has_column

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if has_column("serving_events", "audited"):  # a create_all of this version made it
        return
    with op.batch_alter_table("serving_events") as batch:
        batch.add_column(
            sa.Column("audited", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("serving_events") as batch:
        batch.drop_column("audited")
