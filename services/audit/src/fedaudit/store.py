"""The audit log in SQL (PostgreSQL, SQLite standalone): append records and checkpoints, read
them back for the chain head, restarts, queries and exports. Nothing here decides anything."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from fedbus.sql_inbox import make_engine
from sqlalchemy.engine import Connection, Engine

from fedaudit.chain import GENESIS, ChainHead, canonical_json, peer_digest, peer_of
from fedaudit.migrations import MIGRATIONS
from fedaudit.models import (
    checkpoints,
    ciphertext_digests,
    findings,
    peer_checkpoints,
    records,
)
from fedaudit.verify import EXPORT_FORMAT

if TYPE_CHECKING:
    from fedschemas import Envelope

    from fedaudit.peers import PeerCheckpoint

_JSON_FIELDS = ("facts", "findings")


def open_engine(url: str) -> Engine:
    engine = make_engine(url)
    MIGRATIONS.upgrade_head(engine)
    return engine


def _row(record: dict[str, Any]) -> dict[str, Any]:
    row = dict(record)
    for name in _JSON_FIELDS:
        row[name] = canonical_json(record[name]).decode()
    return row


def _record(row: Any) -> dict[str, Any]:
    record = dict(row._mapping)
    for name in _JSON_FIELDS:
        record[name] = json.loads(record[name])
    return record


def is_recorded(conn: Connection, topic: str, message_id: str) -> bool:
    return (
        conn.execute(
            sa.select(records.c.seq).where(
                records.c.topic == topic, records.c.message_id == message_id
            )
        ).first()
        is not None
    )


# (topic, message_id) IN (...): the unique index on the pair answers it. Built once: building
# the statement per call cost about as much CPU as running it (the audit asks once per
# delivered group, for most groups one message).
_RECORDED_AMONG = sa.select(records.c.topic, records.c.message_id).where(
    sa.tuple_(records.c.topic, records.c.message_id).in_(sa.bindparam("pairs", expanding=True))
)


def recorded_among(conn: Connection, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of the (topic, message id) pairs are recorded already (one query)."""
    wanted = set(keys)
    if not wanted:
        return set()
    rows = conn.execute(_RECORDED_AMONG, {"pairs": sorted(wanted)})
    return {(str(r.topic), str(r.message_id)) for r in rows} & wanted


def append(conn: Connection, record: dict[str, Any], stop_requested: bool) -> None:
    """Insert one chained record and its findings (inside the caller's transaction)."""
    append_many(conn, [(record, stop_requested)])


def append_many(conn: Connection, items: Sequence[tuple[dict[str, Any], bool]]) -> None:
    """Insert a group's chained records and their findings: one executemany per table (the
    driver pipelines it), not a round trip per row."""
    if not items:
        return
    conn.execute(records.insert(), [_row(record) for record, _ in items])
    rows = [
        _finding_row(record, finding, stop and finding["severity"] == "critical")
        for record, stop in items
        for finding in record["findings"]
    ]
    if rows:
        conn.execute(findings.insert(), rows)


def _finding_row(record: dict[str, Any], finding: dict[str, str], stop: bool) -> dict[str, Any]:
    # A peer's job statement is a message of no job; its findings are the job's.
    job_id = record["job_id"] or (record.get("facts") or {}).get("checkpoint", {}).get("job_id", "")
    return {
        "record_seq": record["seq"],
        "job_id": job_id,
        "rule": finding["rule"],
        "severity": finding["severity"],
        "party": finding["party"],
        "message_id": record["message_id"],
        "detail": finding["detail"],
        "at": record["observed_at"],
        "stop_requested": stop,
    }


def add_finding(
    conn: Connection, record: dict[str, Any], finding: dict[str, str], stop: bool = False
) -> None:
    conn.execute(findings.insert(), [_finding_row(record, finding, stop)])


def add_digests(conn: Connection, rows: Sequence[tuple[str, str, bytes]]) -> None:
    """(job, message id, digests): what messages added to their job's memory of ciphertexts
    (data.ciphertext_repeated), in one executemany."""
    if rows:
        conn.execute(
            ciphertext_digests.insert(),
            [{"job_id": j, "message_id": m, "digests": d} for j, m, d in rows],
        )


def forget_digests(conn: Connection, job_id: str) -> None:
    conn.execute(ciphertext_digests.delete().where(ciphertext_digests.c.job_id == job_id))


def iter_digests(conn: Connection, job_ids: Iterable[str]) -> Iterator[tuple[str, str, bytes]]:
    wanted = sorted(set(job_ids))
    if not wanted:
        return
    query = (
        sa.select(ciphertext_digests)
        .where(ciphertext_digests.c.job_id.in_(wanted))
        .order_by(ciphertext_digests.c.id)
    )
    for row in conn.execute(query):
        yield str(row.job_id), str(row.message_id), bytes(row.digests)


def add_peer_checkpoint(
    conn: Connection,
    got: PeerCheckpoint,
    envelope: Envelope,
    record_seq: int,
) -> None:
    payload_fields = _checkpoint_fields(envelope)
    conn.execute(
        peer_checkpoints.insert().values(
            peer=got.peer,
            seq=int(got.body.get("seq", -1)),
            head_hash=str(got.body.get("head_hash", ""))[:64],
            job_id=got.job_id,
            record_seq=record_seq,
            problem="; ".join(got.problems + got.disagreements),
            **payload_fields,
        )
    )


def _checkpoint_fields(envelope: Envelope) -> dict[str, Any]:
    from fedschemas import decode_payload
    from fedschemas.audit_payloads import AuditCheckpoint

    payload = decode_payload(envelope, AuditCheckpoint)
    return {
        "body": payload.body,
        "signature": payload.signature,
        "statement": payload.statement,
        "statement_signature": payload.statement_signature,
    }


def settle_peer_statement(conn: Connection, record_seq: int, problem: str) -> None:
    """The comparison of a statement made after it was recorded ('' : it agreed)."""
    conn.execute(
        peer_checkpoints.update()
        .where(peer_checkpoints.c.record_seq == record_seq)
        .values(problem=problem)
    )


def iter_peer_heads(conn: Connection) -> Iterator[tuple[str, str, int, str]]:
    """(peer, its audit key, seq, head hash) of every peer checkpoint that verified."""
    query = (
        sa.select(peer_checkpoints.c.peer, peer_checkpoints.c.body)
        .where(peer_checkpoints.c.problem == "")
        .order_by(peer_checkpoints.c.id)
    )
    for row in conn.execute(query):
        body = json.loads(row.body)
        yield str(row.peer), str(body["public_key"]), int(body["seq"]), str(body["head_hash"])


def peer_checkpoint_lines(conn: Connection) -> Iterator[dict[str, Any]]:
    for row in conn.execute(sa.select(peer_checkpoints).order_by(peer_checkpoints.c.id)):
        yield {
            "peer": row.peer,
            "body": row.body,
            "signature": row.signature,
            "statement": row.statement,
            "statement_signature": row.statement_signature,
            "problem": row.problem,
        }


def peer_statements(conn: Connection, job_id: str) -> list[dict[str, Any]]:
    """The peers' signed statements of `job_id` this party holds, with what their check said."""
    query = (
        sa.select(
            peer_checkpoints.c.peer,
            peer_checkpoints.c.seq,
            peer_checkpoints.c.record_seq,
            peer_checkpoints.c.statement,
            peer_checkpoints.c.problem,
        )
        .where(peer_checkpoints.c.job_id == job_id)
        .order_by(peer_checkpoints.c.id)
    )
    return [
        {
            "peer": row.peer,
            "peer_seq": row.seq,
            "record_seq": row.record_seq,
            "statement": json.loads(row.statement) if row.statement else None,
            "agrees": row.problem == "",
            "problem": row.problem,
        }
        for row in conn.execute(query)
    ]


def latest_checkpoint(conn: Connection) -> tuple[dict[str, Any], str] | None:
    row = conn.execute(sa.select(checkpoints).order_by(checkpoints.c.seq.desc()).limit(1)).first()
    return None if row is None else (json.loads(row.body), str(row.signature))


def add_checkpoint(conn: Connection, body: dict[str, Any], signature: str) -> None:
    conn.execute(
        checkpoints.insert().values(
            seq=body["seq"], body=canonical_json(body).decode(), signature=signature
        )
    )


def last_checkpoint_seq(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.max(checkpoints.c.seq))).scalar() or 0)


def load_head(conn: Connection, party_id: str) -> ChainHead:
    """The chain head as stored: last seq and hash, and the peer digests recomputed."""
    head = ChainHead()
    cols = (
        records.c.type,
        records.c.seq,
        records.c.hash,
        records.c.direction,
        records.c.source_party,
        records.c.destination_party,
        records.c.envelope_sha256,
    )
    for row in conn.execute(sa.select(*cols).order_by(records.c.seq)):
        head.seq, head.hash = int(row.seq), str(row.hash)
        peer = peer_of(dict(row._mapping), party_id)
        if peer is not None:
            head.peers[peer] = peer_digest(head.peers.get(peer, GENESIS), row.envelope_sha256)
    return head


def iter_records(
    conn: Connection, *, job_id: str | None = None, after: int = 0, limit: int | None = None
) -> Iterator[dict[str, Any]]:
    query = sa.select(records).where(records.c.seq > after).order_by(records.c.seq)
    if job_id is not None:
        query = query.where(records.c.job_id == job_id)
    if limit is not None:
        query = query.limit(limit)
    for row in conn.execute(query):
        yield _record(row)


def list_findings(
    conn: Connection,
    *,
    job_id: str | None = None,
    min_severity: Sequence[str] = ("warn", "critical"),
) -> list[dict[str, Any]]:
    query = sa.select(findings).where(findings.c.severity.in_(list(min_severity)))
    if job_id is not None:
        query = query.where(findings.c.job_id == job_id)
    return [dict(r._mapping) for r in conn.execute(query.order_by(findings.c.id))]


def export_lines(conn: Connection, party_id: str, public_key: str) -> Iterator[str]:
    """The whole log as JSON lines (fedaudit.verify reads them).

    The checkpoints are read before the records: a checkpoint is written only after the
    records it signs were committed, so each one read has its records in the export even
    while the audit goes on recording (read after them, a checkpoint just written could sign a
    record the export's read did not see, and the export looked like a log with that record
    missing)."""
    header = {"format": EXPORT_FORMAT, "party_id": party_id, "public_key": public_key}
    yield json.dumps(header, sort_keys=True)
    signed = list(conn.execute(sa.select(checkpoints).order_by(checkpoints.c.seq)))
    for record in iter_records(conn):
        yield json.dumps({"record": record}, sort_keys=True)
    for row in signed:
        yield json.dumps(
            {"checkpoint": {"body": json.loads(row.body), "signature": row.signature}},
            sort_keys=True,
        )
    for item in peer_checkpoint_lines(conn):
        yield json.dumps({"peer_checkpoint": item}, sort_keys=True)
