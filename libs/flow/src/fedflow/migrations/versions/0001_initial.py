"""fedflow's tables (flow_*): mailbox, outbox, checkpoints, artifacts, metrics, curves, tables,
adopted where an earlier version's create_all made them.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fedcommon.migrations import column, create_missing, drop_tables

revision = "0001"
down_revision = None

_META = sa.MetaData()

# The fields several flow tables share (a task's key, a message's address), with the one type
# each has everywhere; all are NOT NULL.
_SHARED: dict[str, sa.types.TypeEngine[Any]] = {
    "job_id": sa.String(length=256),
    "component": sa.String(length=128),
    "component_type": sa.String(length=128),
    "attempt": sa.Integer(),
    "party_id": sa.String(length=64),
    "role": sa.String(length=16),
    "name": sa.String(length=128),
    "message_id": sa.String(length=255),
    "tag": sa.String(length=256),
    "iteration": sa.BigInteger(),
    "seq": sa.BigInteger(),
    "source_party": sa.String(length=64),
    "source_role": sa.String(length=16),
    "destination_party": sa.String(length=64),
    "destination_role": sa.String(length=16),
    "envelope": sa.LargeBinary(),
}


def _shared(*names: str) -> list[sa.Column[Any]]:
    return [sa.Column(name, _SHARED[name], nullable=False) for name in names]


def _time(name: str) -> sa.Column[Any]:
    return column(name, sa.DateTime(timezone=True))


# Frozen as this revision made them; later changes come as new revisions.
TABLES = (
    sa.Table(
        "flow_artifacts",
        _META,
        *_shared("job_id", "component", "party_id", "role", "name", "attempt"),
        column("kind", sa.String(length=32)),
        column("data", sa.LargeBinary()),
        _time("created_at"),
        sa.PrimaryKeyConstraint("job_id", "component", "party_id", "role", "name"),
    ),
    sa.Table(
        "flow_checkpoints",
        _META,
        *_shared("job_id", "component", "attempt", "party_id", "role", "iteration"),
        column("state", sa.LargeBinary()),
        _time("saved_at"),
        sa.PrimaryKeyConstraint("job_id", "component", "attempt", "party_id", "role"),
    ),
    sa.Table(
        "flow_curves",
        _META,
        *_shared("job_id", "component", "party_id", "name"),
        column("x_label", sa.String(length=64)),
        column("y_label", sa.String(length=64)),
        column("points", sa.Text()),
        *_shared("attempt"),
        _time("logged_at"),
        sa.PrimaryKeyConstraint("job_id", "component", "party_id", "name"),
    ),
    sa.Table(
        "flow_mailbox",
        _META,
        *_shared("message_id", "job_id", "component", "attempt", "tag", "iteration", "seq"),
        *_shared("source_party", "source_role", "destination_party", "destination_role"),
        _time("received_at"),
        *_shared("envelope"),
        sa.PrimaryKeyConstraint("message_id"),
        sa.Index("ix_flow_mailbox_lookup", "job_id", "component", "attempt", "tag", "iteration"),
    ),
    sa.Table(
        "flow_metrics",
        _META,
        *_shared("job_id", "component", "party_id", "name"),
        column("step", sa.BigInteger()),
        column("value", sa.Float(), nullable=True),
        *_shared("attempt"),
        _time("logged_at"),
        sa.PrimaryKeyConstraint("job_id", "component", "party_id", "name", "step"),
    ),
    sa.Table(
        "flow_outbox",
        _META,
        *_shared("message_id", "job_id", "component", "component_type", "attempt", "party_id"),
        *_shared("role", "destination_party", "destination_role", "tag", "iteration", "seq"),
        column("msg_order", sa.Integer()),
        column("topic", sa.String(length=256)),
        *_shared("envelope"),
        _time("sent_at"),
        sa.PrimaryKeyConstraint("message_id"),
        sa.Index("ix_flow_outbox_task", "job_id", "component", "attempt", "party_id", "iteration"),
    ),
    sa.Table(
        "flow_tables",
        _META,
        *_shared("name"),
        column("file", sa.String(length=1024)),
        column("rows", sa.Integer()),
        column("feature_names", sa.Text()),
        column("id_column", sa.String(length=256)),
        column("label_column", sa.String(length=256), nullable=True),
        column("missing_values", sa.Integer()),
        column("missing_by_column", sa.Text()),
        column("sha256", sa.String(length=64)),
        _time("uploaded_at"),
        column("reads", sa.Integer()),
        sa.PrimaryKeyConstraint("name"),
    ),
)


def upgrade() -> None:
    create_missing(*TABLES)


def downgrade() -> None:
    drop_tables(*TABLES)
