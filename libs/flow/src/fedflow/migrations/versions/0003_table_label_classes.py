"""The table catalogue records the class names of a text label column:
`flow_tables.label_classes`, a JSON list whose k-th name is class k (NULL: numeric labels, no
label column, or a table stored before this revision), so that what a pipeline reports about
the table's labels can name them as the data did.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from fedcommon.migrations import has_column

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if has_column("flow_tables", "label_classes"):  # a create_all of this version made it
        return
    with op.batch_alter_table("flow_tables") as batch:
        batch.add_column(sa.Column("label_classes", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("flow_tables") as batch:
        batch.drop_column("label_classes")
