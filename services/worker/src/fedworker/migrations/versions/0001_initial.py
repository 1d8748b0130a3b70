"""The worker's task queue (worker_tasks), adopted where an earlier version's create_all made
it; a worker_tasks table from before the traceparent column gets it.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from fedcommon.migrations import column, create_missing, drop_tables, has_column, has_table

revision = "0001"
down_revision = None


def _traceparent() -> sa.Column[Any]:
    return column("traceparent", sa.String(length=64), nullable=True)


# Frozen as this revision made it; later changes come as new revisions.
TASKS = sa.Table(
    "worker_tasks",
    sa.MetaData(),
    column("job_id", sa.String(length=256)),
    column("component", sa.String(length=128)),
    column("attempt", sa.Integer()),
    column("role", sa.String(length=16)),
    column("component_type", sa.String(length=128)),
    *(column(name, sa.Text()) for name in ("parties", "params", "inputs", "pipeline_yaml")),
    column("state", sa.String(length=16)),
    column("reason", sa.Text(), nullable=True),
    column("outputs", sa.Text(), nullable=True),
    column("progress", sa.Float(), nullable=True),
    column("status_seq", sa.Integer()),
    column("cancel_requested", sa.Boolean()),
    column("claimed_by", sa.String(length=64), nullable=True),
    column("lease_until", sa.DateTime(timezone=True), nullable=True),
    column("runs", sa.Integer()),
    column("cleaned", sa.Boolean()),
    column("created_at", sa.DateTime(timezone=True)),
    column("updated_at", sa.DateTime(timezone=True)),
    _traceparent(),
    sa.PrimaryKeyConstraint("job_id", "component", "attempt", "role"),
)


def upgrade() -> None:
    if has_table(TASKS.name) and not has_column(TASKS.name, "traceparent"):
        # A table from a worker before the task's traceparent was kept (this column used to
        # be added by a hand-written ALTER at start-up).
        op.add_column(TASKS.name, _traceparent())
    create_missing(TASKS)


def downgrade() -> None:
    drop_tables(TASKS)
