"""The inbox's done markers (fedmq_inbox) and the chunk store (fedmq_chunk_sets, fedmq_chunks).

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
    if not has_table("fedmq_chunk_sets"):
        op.create_table(
            "fedmq_chunk_sets",
            sa.Column("topic", sa.String(length=255), nullable=False),
            sa.Column("message_id", sa.String(length=255), nullable=False),
            sa.Column("chunk_count", sa.Integer(), nullable=False),
            sa.Column("total_bytes", sa.BigInteger(), nullable=False),
            sa.Column("sha256", sa.String(length=64), nullable=False),
            sa.Column("headers", sa.Text(), nullable=False),
            sa.Column("reply_to", sa.String(length=255), nullable=True),
            sa.Column("correlation_id", sa.String(length=255), nullable=True),
            sa.Column("first_seen", sa.Float(), nullable=False),
            sa.Column("finished_at", sa.Float(), nullable=True),
            sa.PrimaryKeyConstraint("topic", "message_id"),
        )
        op.create_index(
            "ix_fedmq_chunk_sets_open",
            "fedmq_chunk_sets",
            ["finished_at", "first_seen"],
            unique=False,
        )
    if not has_table("fedmq_chunks"):
        op.create_table(
            "fedmq_chunks",
            sa.Column("topic", sa.String(length=255), nullable=False),
            sa.Column("message_id", sa.String(length=255), nullable=False),
            sa.Column("idx", sa.Integer(), nullable=False),
            sa.Column("body", sa.LargeBinary(), nullable=False),
            sa.PrimaryKeyConstraint("topic", "message_id", "idx"),
        )
    if not has_table("fedmq_inbox"):
        op.create_table(
            "fedmq_inbox",
            sa.Column("message_id", sa.String(length=255), nullable=False),
            sa.Column("done_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("message_id"),
        )


def downgrade() -> None:
    op.drop_table("fedmq_inbox")
    op.drop_table("fedmq_chunks")
    op.drop_table("fedmq_chunk_sets")
