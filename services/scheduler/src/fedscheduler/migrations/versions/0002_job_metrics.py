"""Job metrics and curves: the read model kept from the workers' task.metrics messages.

Where the workers share the scheduler's database (the stack's one database per party, the
embedded SQLite file), the metrics they wrote before this revision are copied once from their
tables (`flow_metrics`, `flow_curves`), so `job metrics` still answers for jobs that ended
before the upgrade. After this the scheduler reads them from messages only.

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
    _copy_earlier_metrics()


def _copy_earlier_metrics() -> None:
    bind = op.get_bind()
    present = set(sa.inspect(bind).get_table_names())
    key = ["job_id", "component", "party_id", "name"]
    copies = {
        "flow_metrics": ("scheduler_job_metrics", [*key, "step", "value", "attempt", "logged_at"]),
        "flow_curves": (
            "scheduler_job_curves",
            [*key, "x_label", "y_label", "points", "attempt", "logged_at"],
        ),
    }
    for source_name, (target_name, names) in copies.items():
        if source_name not in present:
            continue
        source = sa.table(source_name, *(sa.column(n) for n in names))
        target = sa.table(target_name, *(sa.column(n) for n in names))
        columns: list[sa.ColumnElement[object]] = list(source.c)
        if source_name == "flow_curves" and bind.dialect.name == "postgresql":
            # flow_curves keeps the points as JSON text; the read model as a JSON column.
            columns = [sa.cast(c, sa.JSON) if c.name == "points" else c for c in source.c]
        op.execute(sa.insert(target).from_select(names, sa.select(*columns)))


def downgrade() -> None:
    op.drop_table("scheduler_job_curves")
    op.drop_table("scheduler_job_metrics")
