"""The audit log in SQL (PostgreSQL, SQLite standalone): append records and checkpoints, read
them back for the chain head, restarts, queries and exports. Nothing here decides anything."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
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


# The recording path (a delivered group: the redelivery check, the records, their findings and
# ciphertext digests) runs its statements through the driver's cursor, inside the caller's
# SQLAlchemy transaction: SQLAlchemy's execution machinery (compiled-statement cache lookup,
# parameter processing, result set-up) cost more CPU than the statements, per message, than
# the driver's own work. The statements are written once per dialect from the tables in
# fedaudit.models, in column order, so a row is what `table.insert()` would write (tests/audit
# test_raw_rows.py compares them); on PostgreSQL psycopg prepares them server-side after a
# few uses. Everything else in this module (reads, the timer's and peers' writes) stays on
# SQLAlchemy.


@dataclass(frozen=True)
class _Statements:
    """The recording path's SQL for one dialect's parameter marker."""

    insert_records: str
    record_columns: tuple[str, ...]
    insert_findings: str
    finding_columns: tuple[str, ...]
    insert_digests: str
    recorded: str
    """The redelivery check of one (topic, message_id) pair."""
    recorded_pair: str
    """One more pair's condition, ORed to `recorded`'s for a group."""


def _insert(table: sa.Table, marker: str) -> tuple[str, tuple[str, ...]]:
    # Every column but a generated id (audit_records' seq is the chain's, not generated).
    names = tuple(c.name for c in table.columns if not (c.primary_key and c.autoincrement is True))
    columns, markers = ", ".join(names), ", ".join([marker] * len(names))
    # Names from fedaudit.models only; every value is a bound parameter.
    return f"INSERT INTO {table.name} ({columns}) VALUES ({markers})", names  # noqa: S608


@lru_cache(maxsize=4)
def _statements(paramstyle: str) -> _Statements:
    # psycopg: "pyformat" (%s), sqlite3: "qmark" (?).
    marker = {"qmark": "?", "format": "%s", "pyformat": "%s"}[paramstyle]
    insert_records, record_columns = _insert(records, marker)
    insert_findings, finding_columns = _insert(findings, marker)
    insert_digests, _ = _insert(ciphertext_digests, marker)
    pair = f"(topic = {marker} AND message_id = {marker})"
    return _Statements(
        insert_records=insert_records,
        record_columns=record_columns,
        insert_findings=insert_findings,
        finding_columns=finding_columns,
        insert_digests=insert_digests,
        recorded=f"SELECT topic, message_id FROM {records.name} WHERE {pair}",  # noqa: S608
        recorded_pair=f" OR {pair}",
    )


def _cursor(conn: Connection, begin: bool = True) -> tuple[Any, _Statements]:
    """The driver's cursor on `conn`, inside its transaction (begun here if it is not yet: on
    SQLite that is fedbus's BEGIN IMMEDIATE, as SQLAlchemy's autobegin would issue it)."""
    if begin and not conn.in_transaction():
        conn.begin()
    return conn.connection.cursor(), _statements(conn.dialect.paramstyle)


def recorded_among(conn: Connection, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of the (topic, message id) pairs are recorded already (one query; the unique index
    on the pair answers it)."""
    wanted = set(keys)
    if not wanted:
        return set()
    cursor, sql = _cursor(conn)
    pairs = sorted(wanted)
    try:
        cursor.execute(
            sql.recorded + sql.recorded_pair * (len(pairs) - 1),
            [part for pair in pairs for part in pair],
        )
        found = {(str(topic), str(message_id)) for topic, message_id in cursor.fetchall()}
    finally:
        cursor.close()
    return found & wanted


def append(conn: Connection, record: dict[str, Any], stop_requested: bool) -> None:
    """Insert one chained record and its findings (inside the caller's transaction)."""
    append_many(conn, [(record, stop_requested)])


def _record_values(record: dict[str, Any], columns: Sequence[str]) -> tuple[Any, ...]:
    row = _row(record)
    return tuple(row[name] for name in columns)


def append_many(conn: Connection, items: Sequence[tuple[dict[str, Any], bool]]) -> None:
    """Insert a group's chained records and their findings (inside the caller's transaction):
    one statement per row for a group of one, else one executemany per table (psycopg
    pipelines it)."""
    if not items:
        return
    cursor, sql = _cursor(conn)
    try:
        _execute(
            cursor, sql.insert_records, [_record_values(r, sql.record_columns) for r, _ in items]
        )
        rows = _finding_values(items, sql.finding_columns)
        if rows:
            _execute(cursor, sql.insert_findings, rows)
    finally:
        cursor.close()


def _finding_values(
    items: Sequence[tuple[dict[str, Any], bool]], columns: Sequence[str]
) -> list[tuple[Any, ...]]:
    return [
        tuple(
            _finding_row(record, finding, stop and finding["severity"] == "critical")[name]
            for name in columns
        )
        for record, stop in items
        for finding in record["findings"]
    ]


def _execute(cursor: Any, statement: str, rows: list[tuple[Any, ...]]) -> None:
    if len(rows) == 1:
        cursor.execute(statement, rows[0])
    else:
        cursor.executemany(statement, rows)


@contextmanager
def recording(engine: Engine) -> Iterator[Connection]:
    """A connection for one delivered group (fedaudit.handlers._record), with write_group.

    On PostgreSQL it runs in autocommit and write_group makes the transaction itself: psycopg's
    own transactions cost a round trip for their BEGIN and one for their COMMIT, two of a small
    message's four (check, BEGIN, INSERT, COMMIT). The redelivery check then runs outside a
    transaction, which changes nothing: the audit is its log's one writer, under its lock, so
    nothing is recorded between the check and the write."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


def write_group(
    conn: Connection,
    items: Sequence[tuple[dict[str, Any], bool]],
    digests: Sequence[tuple[str, str, bytes]],
    also: Callable[[Connection], None] | None = None,
) -> None:
    """A group's records, their findings and its ciphertext digests, and `also`'s statements
    (on `conn`, SQLAlchemy's), in one transaction, committed.

    On a `recording` connection to PostgreSQL: one record alone (nothing `also`) is one INSERT,
    atomic by itself, in one round trip; anything more is BEGIN, the inserts and COMMIT in one
    pipeline (one round trip; `also` between the inserts and the COMMIT). Elsewhere (SQLite, or
    a connection in a transaction of its own) the inserts join SQLAlchemy's transaction, which
    is committed."""
    cursor, sql = _cursor(conn, begin=False)
    statements = [(sql.insert_records, [_record_values(r, sql.record_columns) for r, _ in items])]
    found = _finding_values(items, sql.finding_columns)
    if found:
        statements.append((sql.insert_findings, found))
    if digests:
        statements.append((sql.insert_digests, [(j, m, d) for j, m, d in digests]))
    driver = conn.connection.driver_connection
    assert driver is not None  # a checked-out connection always has its DBAPI connection
    try:
        if conn.dialect.name != "postgresql" or not getattr(driver, "autocommit", False):
            if not conn.in_transaction():
                conn.begin()
            for statement, rows in statements:
                _execute(cursor, statement, rows)
            if also is not None:
                also(conn)
        elif also is None and len(statements) == 1 and len(statements[0][1]) == 1:
            cursor.execute(statements[0][0], statements[0][1][0])
        else:
            with driver.pipeline():
                cursor.execute("BEGIN")
                for statement, rows in statements:
                    _execute(cursor, statement, rows)
                if also is None:
                    cursor.execute("COMMIT")
            if also is not None:
                also(conn)
                cursor.execute("COMMIT")
    finally:
        cursor.close()
    # SQLAlchemy's transaction (on PostgreSQL in autocommit only its bookkeeping: the server's
    # is committed above, and psycopg sends nothing for a transaction it does not see).
    conn.commit()


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
    (data.ciphertext_repeated), inside the caller's transaction."""
    if rows:
        cursor, sql = _cursor(conn)
        try:
            _execute(cursor, sql.insert_digests, [(j, m, d) for j, m, d in rows])
        finally:
            cursor.close()


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
