"""The worker's task queue (worker_tasks).

A database that an earlier version set up with create_all already has some of these tables:
they are adopted as they are, and only the missing ones are created; a worker_tasks table from
before the traceparent column gets it.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from fedcommon.migrations import has_column, has_table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    if not has_table("worker_tasks"):
        op.create_table(
            "worker_tasks",
            sa.Column("job_id", sa.String(length=256), nullable=False),
            sa.Column("component", sa.String(length=128), nullable=False),
            sa.Column("attempt", sa.Integer(), nullable=False),
            sa.Column("role", sa.String(length=16), nullable=False),
            sa.Column("component_type", sa.String(length=128), nullable=False),
            sa.Column("parties", sa.Text(), nullable=False),
            sa.Column("params", sa.Text(), nullable=False),
            sa.Column("inputs", sa.Text(), nullable=False),
            sa.Column("pipeline_yaml", sa.Text(), nullable=False),
            sa.Column("state", sa.String(length=16), nullable=False),
            sa.Column("reason", sa.Text(), nullable=True),
            sa.Column("outputs", sa.Text(), nullable=True),
            sa.Column("progress", sa.Float(), nullable=True),
            sa.Column("status_seq", sa.Integer(), nullable=False),
            sa.Column("cancel_requested", sa.Boolean(), nullable=False),
            sa.Column("claimed_by", sa.String(length=64), nullable=True),
            sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
            sa.Column("runs", sa.Integer(), nullable=False),
            sa.Column("cleaned", sa.Boolean(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("traceparent", sa.String(length=64), nullable=True),
            sa.PrimaryKeyConstraint("job_id", "component", "attempt", "role"),
        )
    elif not has_column("worker_tasks", "traceparent"):
        # A table from a worker before the task's traceparent was kept (this column used to
        # be added by a hand-written ALTER at start-up).
        op.add_column("worker_tasks", sa.Column("traceparent", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_table("worker_tasks")
