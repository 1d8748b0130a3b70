"""The read model of the party's tables (`scheduler_table_profiles`, fedscheduler.
table_profiles): each table's rows and label values, from the workers' control.table_profile,
so a pipeline is checked against the labels at submission.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scheduler_table_profiles",
        sa.Column("table_name", sa.String(128), primary_key=True),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("label_column", sa.String(256), nullable=True),
        sa.Column("label_values", sa.Text, nullable=True),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("scheduler_table_profiles")
