"""The audit log on PostgreSQL: append-only, hash-chained, signed; the offline verifier names
each row an operator with the database's keys updated or deleted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fedaudit.main import Audit
from fedaudit.settings import AuditSettings
from fedaudit.store import export_lines
from fedaudit.verify import parse_export, verify_export
from fedbus import Bus, Message, connect
from fedcrypto.signing import SigningKey

from tests.audit.traffic import GUEST, KEY_BITS, Traffic
from tests.polling import wait_for


@pytest.fixture
def audited(pg_url: str, unique_name: str, tmp_path: Path) -> Iterator[tuple[Audit, Bus, Traffic]]:
    """The guest's audit on PostgreSQL, fed an honest hetero_lr run (checkpoint every 4)."""
    bus = connect(f"memory://{unique_name}")
    for topic in ("out.10000", "svc.worker", "svc.scheduler"):
        bus.declare(topic)
    settings = AuditSettings(
        party_id=GUEST,
        database_url=pg_url,
        signing_key=SigningKey.generate().to_bytes().hex(),
        min_key_bits=KEY_BITS,
        checkpoint_every=4,
        peer_checkpoint_interval_s=3600,  # none sent to the peer: the log holds the job only
        http_port=-1,
        log_json=False,
    )
    audit = Audit(settings, bus=bus)
    audit.start()
    traffic = Traffic()
    sent = traffic.honest(iterations=2)
    for envelope in sent:
        delivery = traffic.delivery(envelope)
        bus.publish(Message(delivery.topic, delivery.body, delivery.message_id))
    wait_for(lambda: audit.ctx.head.seq == len(sent) or None)
    yield audit, bus, traffic
    audit.stop()
    bus.close()


def verify(audit: Audit) -> list[str]:
    with audit.engine.connect() as conn:
        lines = list(export_lines(conn, GUEST, audit.public_key_hex))
    return [str(p) for p in verify_export(parse_export(lines))]


def tamper(audit: Audit, *statements: str) -> None:
    """Run SQL as a database owner who switched the append-only trigger off."""
    with audit.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE audit_records DISABLE TRIGGER audit_records_append_only"))
        for statement in statements:
            conn.execute(sa.text(statement))
        conn.execute(sa.text("ALTER TABLE audit_records ENABLE TRIGGER audit_records_append_only"))


def test_an_intact_log_verifies_and_records_no_payload(audited: tuple[Audit, Bus, Traffic]) -> None:
    audit, _bus, _traffic = audited

    problems = verify(audit)

    assert problems == []
    with audit.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT facts, size FROM audit_records")).all()
        checkpoints = conn.execute(sa.text("SELECT count(*) FROM audit_checkpoints")).scalar()
    assert checkpoints == 4  # 18 records, one checkpoint every 4
    # Facts carry kinds, shapes and key widths, never values or keys
    assert all(
        "array" not in json.loads(facts) and "blob" not in json.loads(facts) for facts, _ in rows
    )


def test_the_log_refuses_updates_and_deletes(audited: tuple[Audit, Bus, Traffic]) -> None:
    audit, _bus, _traffic = audited

    with pytest.raises(sa.exc.DBAPIError, match="append-only"), audit.engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_records SET size = 1 WHERE seq = 2"))
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), audit.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_records WHERE seq = 2"))


def test_the_verifier_names_each_updated_and_deleted_row(
    audited: tuple[Audit, Bus, Traffic],
) -> None:
    audit, _bus, _traffic = audited

    # Execute: edit record 3 in place; delete record 6; give record 9 another (well-formed)
    # prev_hash; delete the log's tail from record 16 on (the last checkpoint signed 16)
    tamper(
        audit,
        "UPDATE audit_records SET size = size + 1 WHERE seq = 3",
        "DELETE FROM audit_records WHERE seq = 6",
        f"UPDATE audit_records SET prev_hash = '{'0' * 64}' WHERE seq = 9",
        "DELETE FROM audit_records WHERE seq >= 16",
    )
    problems = verify(audit)

    # Assert
    assert "record 3 altered: its hash does not match its contents" in problems
    assert "record 6 missing (gap before record 7)" in problems
    assert "record 9 altered: its hash does not match its contents" in problems
    assert any(p.startswith("checkpoint at record 4 does not match") for p in problems)
    assert any(p.startswith("checkpoint at record 8 does not match") for p in problems)
    assert "record 16 missing (signed by the checkpoint at 16)" in problems


def test_a_rehashed_edit_shows_as_a_broken_link(audited: tuple[Audit, Bus, Traffic]) -> None:
    audit, _bus, _traffic = audited
    from fedaudit.chain import record_hash
    from fedaudit.store import iter_records

    with audit.engine.connect() as conn:
        record = next(r for r in iter_records(conn) if r["seq"] == 5)
    record["size"] += 100
    rehashed = record_hash(record["prev_hash"], record)

    tamper(audit, f"UPDATE audit_records SET size = size + 100, hash = '{rehashed}' WHERE seq = 5")
    problems = verify(audit)

    assert any(p.startswith("broken link at record 6") for p in problems), problems
    assert any(p.startswith("checkpoint at record 8 does not match") for p in problems)


def test_fedmq_audit_verify_names_the_problem_and_fails(
    audited: tuple[Audit, Bus, Traffic], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from fedmq.cli import app

    audit, _bus, _traffic = audited
    export = tmp_path / "audit.jsonl"

    def run() -> Any:
        with audit.engine.connect() as conn:
            export.write_text("\n".join(export_lines(conn, GUEST, audit.public_key_hex)))
        return CliRunner().invoke(app, ["audit", "verify", str(export)])

    intact = run()
    tamper(audit, "DELETE FROM audit_records WHERE seq = 2")
    broken = run()

    assert intact.exit_code == 0, intact.output
    assert "18 records of party 9999, 4 signed checkpoints, chain intact" in intact.output
    assert broken.exit_code == 1
    assert "record 2 missing (gap before record 3)" in broken.output


def test_an_export_read_while_the_audit_records_on_verifies(
    audited: tuple[Audit, Bus, Traffic],
) -> None:
    # Prepare: an export begun (its first record read), then another job recorded and signed
    audit, bus, _traffic = audited
    signed_before = audit.ctx.last_checkpoint_seq
    with audit.engine.connect() as conn:
        lines = export_lines(conn, GUEST, audit.public_key_hex)
        read = [next(lines), next(lines)]
        more = Traffic(job_id="job-audit-2")
        for envelope in more.honest(iterations=1):
            delivery = more.delivery(envelope)
            bus.publish(Message(delivery.topic, delivery.body, delivery.message_id))
        wait_for(lambda: audit.ctx.last_checkpoint_seq > signed_before or None)

        # Execute
        read += list(lines)

    # Assert: the export is a consistent log, if not the newest: no record seems missing
    assert [str(p) for p in verify_export(parse_export(read))] == []
