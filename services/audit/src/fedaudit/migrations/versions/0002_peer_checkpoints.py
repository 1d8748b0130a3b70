"""Peers' signed checkpoints (audit_peer_checkpoints) and the ciphertext digests of open jobs
(audit_ciphertext_digests).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from fedcommon.migrations import create_missing, drop_tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_meta = sa.MetaData()
_TABLES = (
    sa.Table(
        "audit_peer_checkpoints",
        _meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("peer", sa.String(64), nullable=False, index=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("job_id", sa.String(256), nullable=False),
        sa.Column("statement", sa.Text, nullable=True),
        sa.Column("statement_signature", sa.String(128), nullable=True),
        sa.Column("record_seq", sa.BigInteger, nullable=False),
        sa.Column("problem", sa.Text, nullable=False),
    ),
    sa.Table(
        "audit_ciphertext_digests",
        _meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(256), nullable=False, index=True),
        sa.Column("message_id", sa.String(160), nullable=False),
        sa.Column("digests", sa.LargeBinary, nullable=False),
    ),
)


def upgrade() -> None:
    create_missing(*_TABLES)


def downgrade() -> None:
    drop_tables(*_TABLES)
