"""The recording path writes through the driver's cursor (fedaudit.store): every row it writes is
the row SQLAlchemy's `table.insert()` wrote before it, on PostgreSQL and on SQLite (standalone),
so the chain, the exports and the verifier are unchanged.

The same deliveries (groups of one and of several, a redelivery, findings that stop a job,
ciphertexts whose digests are kept) go through two audits with one clock and one key: one as
it is, one with the recording path's store functions swapped for SQLAlchemy Core versions
(the code before the driver path: one SQLAlchemy transaction per group). Every table's rows
must be equal, value and type, and the export of the driver path's log must verify."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fedaudit import auditor, handlers, store
from fedaudit.main import Audit
from fedaudit.models import ciphertext_digests, findings, metadata, records
from fedaudit.settings import AuditSettings
from fedaudit.verify import parse_export, verify_export
from fedbus import Delivery, connect
from fedcrypto.signing import SigningKey
from fedschemas import topics
from sqlalchemy.engine import Connection

from tests.audit.test_rules import _repeated, _unsigned
from tests.audit.traffic import GUEST, KEY_BITS, Traffic

NOW = datetime(2026, 12, 7, 17, 0, tzinfo=UTC)


# --- the SQLAlchemy Core path (store.py before the driver path) -----------------------------


def _orm_recorded_among(conn: Connection, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    wanted = set(keys)
    if not wanted:
        return set()
    query = sa.select(records.c.topic, records.c.message_id).where(
        sa.tuple_(records.c.topic, records.c.message_id).in_(sorted(wanted))
    )
    return {(str(r.topic), str(r.message_id)) for r in conn.execute(query)} & wanted


def _orm_append_many(conn: Connection, items: Sequence[tuple[dict[str, Any], bool]]) -> None:
    if not items:
        return
    conn.execute(records.insert(), [store._row(record) for record, _ in items])
    rows = [
        store._finding_row(record, finding, stop and finding["severity"] == "critical")
        for record, stop in items
        for finding in record["findings"]
    ]
    if rows:
        conn.execute(findings.insert(), rows)


def _orm_add_digests(conn: Connection, rows: Sequence[tuple[str, str, bytes]]) -> None:
    if rows:
        conn.execute(
            ciphertext_digests.insert(),
            [{"job_id": j, "message_id": m, "digests": d} for j, m, d in rows],
        )


def _orm_write_group(
    conn: Connection,
    items: Sequence[tuple[dict[str, Any], bool]],
    digests: Sequence[tuple[str, str, bytes]],
    also: Callable[[Connection], None] | None = None,
) -> None:
    _orm_append_many(conn, items)
    _orm_add_digests(conn, digests)
    if also is not None:
        also(conn)
    conn.commit()


# --- set-up ---------------------------------------------------------------------------------


class _FixedClock(datetime):
    """make_record's datetime: every record observed at NOW (both audits hash the same)."""

    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return NOW


@contextmanager
def _database(kind: str, admin_url: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / (uuid.uuid4().hex + '.db')}"
        return
    name = f"fedmq_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def _audit(url: str, key: SigningKey) -> Iterator[Audit]:
    settings = AuditSettings(
        party_id=GUEST,
        database_url=url,
        signing_key=key.to_bytes().hex(),
        min_key_bits=KEY_BITS,
        checkpoint_every=5,
        http_port=-1,
        log_json=False,
    )
    bus = connect(f"memory://raw-rows-{uuid.uuid4().hex[:8]}")
    bus.declare(topics.SCHEDULER)  # where a critical finding's stop request goes
    audit = Audit(settings, bus=bus)
    audit.ctx.clock = NOW.timestamp
    handlers.load(audit.ctx)
    try:
        yield audit
    finally:
        audit.engine.dispose()
        bus.close()


def _groups() -> list[list[Delivery]]:
    """An honest start, a forged (unsigned) inbound key, a repeated ciphertext: one at a time,
    then the rest as one group with a redelivered message in it."""
    traffic = Traffic()
    envelopes = [*_repeated(traffic), _unsigned(traffic), *traffic.honest(iterations=1)[4:]]
    deliveries = [traffic.delivery(e) for e in envelopes]
    return [[d] for d in deliveries[:7]] + [[deliveries[3], *deliveries[7:]]]


def _rows(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table.name: [
            tuple(row)
            for row in conn.execute(sa.select(table).order_by(*table.primary_key.columns))
        ]
        for table in metadata.sorted_tables
    }


def _record_all(url: str, key: SigningKey, groups: list[list[Delivery]]) -> dict[str, Any]:
    with _audit(url, key) as audit:
        for group in groups:
            handlers.handle_batch(audit.ctx, group)
        with audit.engine.connect() as conn:
            rows = _rows(conn)
            export = list(store.export_lines(conn, GUEST, audit.public_key_hex))
    return {"rows": rows, "export": export}


# --- the test -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_the_driver_path_writes_the_rows_sqlalchemy_wrote(
    kind: str, pg_admin_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: one key, one clock, the same deliveries for both paths
    monkeypatch.setattr(auditor, "datetime", _FixedClock)
    key = SigningKey.generate()
    groups = _groups()

    # Execute: the driver path, then the SQLAlchemy Core path, each on a fresh database
    with _database(kind, pg_admin_url, tmp_path) as url:
        raw = _record_all(url, key, groups)
    with monkeypatch.context() as orm:
        orm.setattr(store, "recorded_among", _orm_recorded_among)
        orm.setattr(store, "append_many", _orm_append_many)
        orm.setattr(store, "add_digests", _orm_add_digests)
        orm.setattr(store, "recording", lambda engine: engine.connect())
        orm.setattr(store, "write_group", _orm_write_group)
        with _database(kind, pg_admin_url, tmp_path) as url:
            reference = _record_all(url, key, groups)

    # Assert: what a log holds is there (findings, a stop, digests, checkpoints), every row is
    # the same value of the same type, and the export verifies
    rows = raw["rows"]
    distinct = {(d.topic, d.message_id) for group in groups for d in group}
    assert len(rows["audit_records"]) == len(distinct) < sum(len(g) for g in groups)
    assert any(row[-1] for row in rows["audit_findings"])  # stop_requested
    assert rows["audit_ciphertext_digests"] and rows["audit_checkpoints"]
    for table, expected in reference["rows"].items():
        assert rows[table] == expected, table
        for got, want in zip(rows[table], expected, strict=True):
            assert [type(v) for v in got] == [type(v) for v in want], table
    assert raw["export"] == reference["export"]
    assert verify_export(parse_export(raw["export"])) == []
