"""The read model of the party's tables keeps a text label column's class names
(`scheduler_table_profiles.label_classes`, a JSON list, class k's name at index k; NULL for
numbers or a profile from before this revision), so a refusal at submission names them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scheduler_table_profiles") as batch:
        batch.add_column(sa.Column("label_classes", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scheduler_table_profiles") as batch:
        batch.drop_column("label_classes")
