"""The audit log in SQL (PostgreSQL, SQLite standalone): append records and checkpoints, read
them back for the chain head, restarts, queries and exports. Nothing here decides anything."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from fedbus.sql_inbox import make_engine
from sqlalchemy.engine import Connection, Engine

from fedaudit.chain import GENESIS, ChainHead, canonical_json, peer_digest, peer_of
from fedaudit.migrations import MIGRATIONS
from fedaudit.models import checkpoints, findings, records
from fedaudit.verify import EXPORT_FORMAT

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


def recorded_among(conn: Connection, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of the (topic, message id) pairs are recorded already (one query)."""
    wanted = set(keys)
    if not wanted:
        return set()
    # (topic, message_id) IN (...): the unique index on the pair answers it
    pair = sa.tuple_(records.c.topic, records.c.message_id)
    rows = conn.execute(
        sa.select(records.c.topic, records.c.message_id).where(pair.in_(sorted(wanted)))
    )
    return {(str(r.topic), str(r.message_id)) for r in rows} & wanted


def append(conn: Connection, record: dict[str, Any], stop_requested: bool) -> None:
    """Insert one chained record and its findings (inside the caller's transaction)."""
    conn.execute(records.insert().values(**_row(record)))
    for finding in record["findings"]:
        conn.execute(
            findings.insert().values(
                record_seq=record["seq"],
                job_id=record["job_id"],
                rule=finding["rule"],
                severity=finding["severity"],
                party=finding["party"],
                message_id=record["message_id"],
                detail=finding["detail"],
                at=record["observed_at"],
                stop_requested=stop_requested and finding["severity"] == "critical",
            )
        )


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
    """The whole log as JSON lines (fedaudit.verify reads them)."""
    header = {"format": EXPORT_FORMAT, "party_id": party_id, "public_key": public_key}
    yield json.dumps(header, sort_keys=True)
    for record in iter_records(conn):
        yield json.dumps({"record": record}, sort_keys=True)
    for row in conn.execute(sa.select(checkpoints).order_by(checkpoints.c.seq)):
        yield json.dumps(
            {"checkpoint": {"body": json.loads(row.body), "signature": row.signature}},
            sort_keys=True,
        )
