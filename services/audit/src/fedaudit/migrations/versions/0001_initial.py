"""The audit log: records (hash-chained, append-only), checkpoints, findings.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from fedcommon.migrations import create_missing, drop_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_meta = sa.MetaData()
_TABLES = (
    sa.Table(
        "audit_records",
        _meta,
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("observed_at", sa.String(40), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("message_id", sa.String(160), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("job_id", sa.String(256), nullable=False, index=True),
        sa.Column("component", sa.String(128), nullable=False),
        sa.Column("tag", sa.String(256), nullable=False),
        sa.Column("iteration", sa.BigInteger, nullable=False),
        sa.Column("seq_no", sa.BigInteger, nullable=False),
        sa.Column("source_party", sa.String(64), nullable=False),
        sa.Column("source_role", sa.String(32), nullable=False),
        sa.Column("destination_party", sa.String(64), nullable=False),
        sa.Column("destination_role", sa.String(32), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("payload_sha256", sa.String(64), nullable=False),
        sa.Column("envelope_sha256", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(160), nullable=False),
        sa.Column("facts", sa.Text, nullable=False),
        sa.Column("findings", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("topic", "message_id", name="uq_audit_records_topic_message"),
    ),
    sa.Table(
        "audit_checkpoints",
        _meta,
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
    ),
    sa.Table(
        "audit_findings",
        _meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("record_seq", sa.BigInteger, nullable=False),
        sa.Column("job_id", sa.String(256), nullable=False, index=True),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(8), nullable=False),
        sa.Column("party", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(160), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("stop_requested", sa.Boolean, nullable=False),
    ),
)

# The log is append-only: on PostgreSQL the table refuses UPDATE and DELETE for everyone
# (a superuser can still disable the trigger; what it then changes, the chain and the signed
# checkpoints expose: fedaudit.verify).
_APPEND_ONLY = """
CREATE OR REPLACE FUNCTION audit_records_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_records is append-only';
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS audit_records_append_only ON audit_records;
CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION audit_records_append_only();
"""


def upgrade() -> None:
    create_missing(*_TABLES)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_APPEND_ONLY)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_records_append_only ON audit_records")
        op.execute("DROP FUNCTION IF EXISTS audit_records_append_only()")
    drop_tables(*_TABLES)
