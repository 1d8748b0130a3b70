"""The inbox's done markers (fedmq_inbox) and the chunk store (fedmq_chunk_sets, fedmq_chunks),
adopted where an earlier version's create_all made them.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from fedcommon.migrations import create_missing, drop_tables

revision = "0001"
down_revision = None

_META = sa.MetaData()


def _text(name: str, length: int = 255, *, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.String(length=length), nullable=nullable)


# Frozen as this revision made them; later changes come as new revisions.
TABLES = (
    sa.Table(
        "fedmq_chunk_sets",
        _META,
        _text("topic"),
        _text("message_id"),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("total_bytes", sa.BigInteger(), nullable=False),
        _text("sha256", 64),
        sa.Column("headers", sa.Text(), nullable=False),
        _text("reply_to", nullable=True),
        _text("correlation_id", nullable=True),
        sa.Column("first_seen", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("topic", "message_id"),
        sa.Index("ix_fedmq_chunk_sets_open", "finished_at", "first_seen"),
    ),
    sa.Table(
        "fedmq_chunks",
        _META,
        _text("topic"),
        _text("message_id"),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("topic", "message_id", "idx"),
    ),
    sa.Table(
        "fedmq_inbox",
        _META,
        _text("message_id"),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id"),
    ),
)


def upgrade() -> None:
    create_missing(*TABLES)


def downgrade() -> None:
    drop_tables(*TABLES)
