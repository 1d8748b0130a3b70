"""The table catalogue records each table's label profile: `flow_tables.label_values`, the
distinct label values as a JSON list (NULL: no label column, too many values, or a table
stored before this revision), so a pipeline is checked against them before anything runs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
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
    if has_column("flow_tables", "label_values"):  # a create_all of this version made it
        return
    with op.batch_alter_table("flow_tables") as batch:
        batch.add_column(sa.Column("label_values", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("flow_tables") as batch:
        batch.drop_column("label_values")
