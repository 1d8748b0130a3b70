"""The ciphertexts an audit has seen in an open job survive its restart: a replay after the
restart is still a repeat. The memory of a job goes when the job ends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from fedaudit.main import Audit
from fedaudit.settings import AuditSettings
from fedaudit.store import list_findings
from fedbus import Bus, Message, connect
from fedcrypto.signing import SigningKey
from fedschemas import Envelope, decode_payload
from fedschemas.payloads import JobEnd

from tests.audit.traffic import GUEST, HOST, KEY_BITS, Traffic
from tests.polling import wait_for


@pytest.fixture
def bus(unique_name: str) -> Iterator[Bus]:
    bus = connect(f"memory://{unique_name}")
    for topic in ("out.10000", "svc.worker", "svc.scheduler", "svc.audit"):
        bus.declare(topic)
    yield bus
    bus.close()


def start(bus: Bus, tmp_path: Path, key: SigningKey) -> Audit:
    settings = AuditSettings(
        party_id=GUEST,
        database_url=f"sqlite:///{tmp_path / 'audit.db'}",
        signing_key=key.to_bytes().hex(),
        min_key_bits=KEY_BITS,
        http_port=-1,
        log_json=False,
    )
    audit = Audit(settings, bus=bus)
    audit.start()
    return audit


def feed(audit: Audit, bus: Bus, traffic: Traffic, envelopes: list[Envelope]) -> None:
    want = audit.ctx.head.seq + len(envelopes)  # before publishing: the audit may be quick
    for envelope in envelopes:
        d = traffic.delivery(envelope)
        bus.publish(Message(d.topic, d.body, d.message_id))
    wait_for(lambda: audit.ctx.head.seq >= want or None, timeout=30)


def digest_rows(audit: Audit) -> int:
    with audit.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM audit_ciphertext_digests")).scalar())


def test_a_ciphertext_replayed_after_the_audits_restart_is_still_a_repeat(
    bus: Bus, tmp_path: Path
) -> None:
    # Prepare: the host's scores of iteration 0 recorded, then the audit restarts
    key, traffic = SigningKey.generate(), Traffic()
    audit = start(bus, tmp_path, key)
    first = traffic.ciphertexts("host_scores", HOST, 0)
    feed(audit, bus, traffic, [*traffic.honest(iterations=0), first])
    audit.stop()
    audit = start(bus, tmp_path, key)

    # Execute: the same ciphertexts again as iteration 1's
    values = [int.from_bytes(bytes(row), "little") for row in decode_payload(first).array]
    feed(audit, bus, traffic, [traffic.ciphertexts("host_scores", HOST, 1, values=values)])

    # Assert
    with audit.engine.connect() as conn:
        found = list_findings(conn, job_id=traffic.job_id)
    assert [(f["rule"], f["party"]) for f in found] == [("data.ciphertext_repeated", HOST)]
    assert "4 ciphertext(s) already seen" in found[0]["detail"]
    # ...and the job's end frees its memory
    assert digest_rows(audit) > 0
    end = JobEnd(job_id=traffic.job_id, party_id=HOST, attempt=0, at=datetime.now(UTC))
    feed(audit, bus, traffic, [traffic.envelope(end, GUEST, HOST, "end", component="job")])
    assert digest_rows(audit) == 0
    audit.stop()
