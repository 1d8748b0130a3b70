"""The audit's tables (SQLAlchemy Core). Revision 0001 creates them (migrations/versions).

audit_records is the hash-chained log, append-only by design: the service only ever inserts
(on PostgreSQL a trigger refuses UPDATE and DELETE as well, revision 0001); audit_checkpoints
holds the signed checkpoints; audit_findings indexes the records' findings for queries (it is
derived from the records and not itself chained); audit_peer_checkpoints keeps the peers'
signed checkpoints (revision 0002); audit_ciphertext_digests the ciphertext digests of open
jobs, so that data.ciphertext_repeated survives a restart (revision 0002).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

records = sa.Table(
    "audit_records",
    metadata,
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
    # A redelivered copy (the audit died after its commit, before its ack) is recorded once.
    sa.UniqueConstraint("topic", "message_id", name="uq_audit_records_topic_message"),
)

checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("signature", sa.String(128), nullable=False),
)

findings = sa.Table(
    "audit_findings",
    metadata,
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
)

peer_checkpoints = sa.Table(
    "audit_peer_checkpoints",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("peer", sa.String(64), nullable=False, index=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("head_hash", sa.String(64), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("signature", sa.String(128), nullable=False),
    sa.Column("job_id", sa.String(256), nullable=False),
    sa.Column("statement", sa.Text, nullable=True),
    sa.Column("statement_signature", sa.String(128), nullable=True),
    # The record of this party's log that holds the message that brought it.
    sa.Column("record_seq", sa.BigInteger, nullable=False),
    # '' when it verified (and its statement agreed with this log); else what is wrong.
    sa.Column("problem", sa.Text, nullable=False),
)

ciphertext_digests = sa.Table(
    "audit_ciphertext_digests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(256), nullable=False, index=True),
    sa.Column("message_id", sa.String(160), nullable=False),
    # The 16-byte digests of the message's ciphertexts, concatenated (repeats survive a
    # restart; the rows of a job go when it ends).
    sa.Column("digests", sa.LargeBinary, nullable=False),
)
