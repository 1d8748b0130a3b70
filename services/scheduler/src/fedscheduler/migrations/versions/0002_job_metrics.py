"""Job metrics and curves: the read model kept from the workers' task.metrics messages.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _key() -> list[sa.Column[object]]:
    return [
        sa.Column("job_id", sa.String(128), primary_key=True),
        sa.Column("component", sa.String(128), primary_key=True),
        sa.Column("party_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
    ]


def upgrade() -> None:
    op.create_table(
        "scheduler_job_metrics",
        *_key(),
        sa.Column("step", sa.BigInteger, primary_key=True),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("logged_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "scheduler_job_curves",
        *_key(),
        sa.Column("x_label", sa.String(64), nullable=False),
        sa.Column("y_label", sa.String(64), nullable=False),
        sa.Column("points", sa.JSON, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("logged_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("scheduler_job_curves")
    op.drop_table("scheduler_job_metrics")
