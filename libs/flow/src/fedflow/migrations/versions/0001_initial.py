"""fedflow's tables (flow_*): mailbox, outbox, checkpoints, artifacts, metrics, curves, tables.

A database that an earlier version set up with create_all already has some of these tables:
they are adopted as they are, and only the missing ones are created.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from fedcommon.migrations import has_table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    if not has_table("flow_artifacts"):
        op.create_table(
            "flow_artifacts",
            sa.Column("job_id", sa.String(length=256), nullable=False),
            sa.Column("component", sa.String(length=128), nullable=False),
            sa.Column("party_id", sa.String(length=64), nullable=False),
            sa.Column("role", sa.String(length=16), nullable=False),
            sa.Column("name", sa.String(length=128), nullable=False),
            sa.Column("attempt", sa.Integer(), nullable=False),
            sa.Column("kind", sa.String(length=32), nullable=False),
            sa.Column("data", sa.LargeBinary(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("job_id", "component", "party_id", "role", "name"),
        )
    if not has_table("flow_checkpoints"):
        op.create_table(
            "flow_checkpoints",
            sa.Column("job_id", sa.String(length=256), nullable=False),
            sa.Column("component", sa.String(length=128), nullable=False),
            sa.Column("attempt", sa.Integer(), nullable=False),
            sa.Column("party_id", sa.String(length=64), nullable=False),
            sa.Column("role", sa.String(length=16), nullable=False),
            sa.Column("iteration", sa.BigInteger(), nullable=False),
            sa.Column("state", sa.LargeBinary(), nullable=False),
            sa.Column("saved_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("job_id", "component", "attempt", "party_id", "role"),
        )
    if not has_table("flow_curves"):
        op.create_table(
            "flow_curves",
            sa.Column("job_id", sa.String(length=256), nullable=False),
            sa.Column("component", sa.String(length=128), nullable=False),
            sa.Column("party_id", sa.String(length=64), nullable=False),
            sa.Column("name", sa.String(length=128), nullable=False),
            sa.Column("x_label", sa.String(length=64), nullable=False),
            sa.Column("y_label", sa.String(length=64), nullable=False),
            sa.Column("points", sa.Text(), nullable=False),
            sa.Column("attempt", sa.Integer(), nullable=False),
            sa.Column("logged_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("job_id", "component", "party_id", "name"),
        )
    if not has_table("flow_mailbox"):
        op.create_table(
            "flow_mailbox",
            sa.Column("message_id", sa.String(length=255), nullable=False),
            sa.Column("job_id", sa.String(length=256), nullable=False),
            sa.Column("component", sa.String(length=128), nullable=False),
            sa.Column("attempt", sa.Integer(), nullable=False),
            sa.Column("tag", sa.String(length=256), nullable=False),
            sa.Column("iteration", sa.BigInteger(), nullable=False),
            sa.Column("seq", sa.BigInteger(), nullable=False),
            sa.Column("source_party", sa.String(length=64), nullable=False),
            sa.Column("source_role", sa.String(length=16), nullable=False),
            sa.Column("destination_party", sa.String(length=64), nullable=False),
            sa.Column("destination_role", sa.String(length=16), nullable=False),
            sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("envelope", sa.LargeBinary(), nullable=False),
            sa.PrimaryKeyConstraint("message_id"),
        )
        op.create_index(
            "ix_flow_mailbox_lookup",
            "flow_mailbox",
            ["job_id", "component", "attempt", "tag", "iteration"],
            unique=False,
        )
    if not has_table("flow_metrics"):
        op.create_table(
            "flow_metrics",
            sa.Column("job_id", sa.String(length=256), nullable=False),
            sa.Column("component", sa.String(length=128), nullable=False),
            sa.Column("party_id", sa.String(length=64), nullable=False),
            sa.Column("name", sa.String(length=128), nullable=False),
            sa.Column("step", sa.BigInteger(), nullable=False),
            sa.Column("value", sa.Float(), nullable=True),
            sa.Column("attempt", sa.Integer(), nullable=False),
            sa.Column("logged_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("job_id", "component", "party_id", "name", "step"),
        )
    if not has_table("flow_outbox"):
        op.create_table(
            "flow_outbox",
            sa.Column("message_id", sa.String(length=255), nullable=False),
            sa.Column("job_id", sa.String(length=256), nullable=False),
            sa.Column("component", sa.String(length=128), nullable=False),
            sa.Column("component_type", sa.String(length=128), nullable=False),
            sa.Column("attempt", sa.Integer(), nullable=False),
            sa.Column("party_id", sa.String(length=64), nullable=False),
            sa.Column("role", sa.String(length=16), nullable=False),
            sa.Column("destination_party", sa.String(length=64), nullable=False),
            sa.Column("destination_role", sa.String(length=16), nullable=False),
            sa.Column("tag", sa.String(length=256), nullable=False),
            sa.Column("iteration", sa.BigInteger(), nullable=False),
            sa.Column("seq", sa.BigInteger(), nullable=False),
            sa.Column("msg_order", sa.Integer(), nullable=False),
            sa.Column("topic", sa.String(length=256), nullable=False),
            sa.Column("envelope", sa.LargeBinary(), nullable=False),
            sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("message_id"),
        )
        op.create_index(
            "ix_flow_outbox_task",
            "flow_outbox",
            ["job_id", "component", "attempt", "party_id", "iteration"],
            unique=False,
        )
    if not has_table("flow_tables"):
        op.create_table(
            "flow_tables",
            sa.Column("name", sa.String(length=128), nullable=False),
            sa.Column("file", sa.String(length=1024), nullable=False),
            sa.Column("rows", sa.Integer(), nullable=False),
            sa.Column("feature_names", sa.Text(), nullable=False),
            sa.Column("id_column", sa.String(length=256), nullable=False),
            sa.Column("label_column", sa.String(length=256), nullable=True),
            sa.Column("missing_values", sa.Integer(), nullable=False),
            sa.Column("missing_by_column", sa.Text(), nullable=False),
            sa.Column("sha256", sa.String(length=64), nullable=False),
            sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("reads", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("name"),
        )


def downgrade() -> None:
    op.drop_table("flow_tables")
    op.drop_table("flow_outbox")
    op.drop_table("flow_metrics")
    op.drop_table("flow_mailbox")
    op.drop_table("flow_curves")
    op.drop_table("flow_checkpoints")
    op.drop_table("flow_artifacts")
