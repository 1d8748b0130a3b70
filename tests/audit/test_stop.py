"""A critical finding stops the job at every party, within a second, through the schedulers;
a stop request the audit did not sign stops nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from fedaudit.handlers import sign_stop
from fedaudit.main import Audit
from fedaudit.settings import AuditSettings
from fedaudit.store import list_findings
from fedbus import Message
from fedcrypto.signing import SigningKey
from fedschemas import FederationData, PartyRef, encode_envelope, new_envelope
from fedschemas.payloads import AuditStop

from tests.polling import wait_for
from tests.scheduler.conftest import GUEST, HOST, PSI_EVAL, Federation, hold_psi


def start_audit(fed: Federation, party: str, key: SigningKey, tmp_path: Path) -> Audit:
    settings = AuditSettings(
        party_id=party,
        bus_url="memory://unused",
        database_url=f"sqlite:///{tmp_path / f'audit-{party}.db'}",
        signing_key=key.to_bytes().hex(),
        http_port=-1,
        log_json=False,
    )
    audit = Audit(settings, bus=fed.buses[party])
    audit.start()
    return audit


def inbound(fed: Federation, party: str, envelope: Any, key: SigningKey) -> None:
    """Publish `envelope` on `party`'s svc.worker, signed, as its gateway does for a peer's."""
    envelope = sign_stop(envelope, key)  # any Ed25519 signature: the gateway verified it
    fed.buses[party].publish(
        Message(topic="svc.worker", body=encode_envelope(envelope), message_id=envelope.message_id)
    )


def substituted_message(job_id: str) -> Any:
    """A message of hetero_lr's protocol (its 'residual') inside the psi component."""
    return new_envelope(
        FederationData(kind="ciphertext_vector", array=np.ones((2, 2), dtype=np.uint64)),
        job_id=job_id,
        component="psi_0",
        task_id=f"{job_id}/psi_0/{GUEST}/guest",
        attempt=0,
        source=PartyRef(party_id=GUEST, role="guest"),
        destination=PartyRef(party_id=HOST, role="host"),
        tag="residual",
        iteration=0,
        seq=0,
        created_at=datetime.now(UTC),
    )


def forged_stop(job_id: str, key: SigningKey) -> Any:
    envelope = new_envelope(
        AuditStop(
            job_id=job_id,
            rule="data.key_width",
            severity="critical",
            party_id=GUEST,
            message_id="x",
            detail="forged",
        ),
        job_id=job_id,
        component="audit",
        task_id="",
        attempt=0,
        source=PartyRef(party_id=HOST, role="local"),
        destination=PartyRef(party_id=HOST, role="local"),
        tag="audit_stop",
        iteration=-1,
        seq=0,
        created_at=datetime.now(UTC),
    )
    return sign_stop(envelope, key)


def test_a_critical_finding_stops_the_job_everywhere_within_a_second(
    federation_factory: Callable[..., Federation], tmp_path: Path
) -> None:
    # Prepare: the host's audit runs before the job is proposed; psi_0 runs and holds
    audit_key, peer_key = SigningKey.generate(), SigningKey.generate()
    fed = federation_factory(
        scripts={GUEST: hold_psi, HOST: hold_psi},
        audit_public_key=audit_key.verify_key().to_bytes().hex(),
    )
    audit = start_audit(fed, HOST, audit_key, tmp_path)
    job_id = "audit-stop-1"
    fed.client(GUEST).submit(PSI_EVAL, job_id=job_id)
    wait_for(lambda: "psi_0" in fed.workers[HOST].components_run(job_id))
    # A stop request signed by another key is refused: the job keeps running
    forged = forged_stop(job_id, SigningKey.generate())
    fed.buses[HOST].publish(
        Message(topic="svc.scheduler", body=encode_envelope(forged), message_id=forged.message_id)
    )
    dead = wait_for(lambda: fed.buses[HOST].dead_letters("svc.scheduler") or None)
    assert "not signed by this party's audit key" in dead[0].headers["x-fedmq-dead-reason"]
    assert fed.job(HOST, job_id)["state"] == "running"

    # Execute: the guest (as the host's gateway delivers it) sends hetero_lr's message in psi
    sent = time.monotonic()
    inbound(fed, HOST, substituted_message(job_id), peer_key)

    # Assert: the host's side fails within a second, naming rule, party and message
    failed = fed.wait_state(HOST, job_id, "failed", timeout=5)
    assert time.monotonic() - sent < 1.0
    assert "algorithm.substitution" in failed["reason"]
    assert f"broken by party {GUEST}" in failed["reason"]
    # ...and the initiator stops the job for everyone
    guest_view = fed.wait_state(GUEST, job_id, "failed", timeout=5)
    assert "algorithm.substitution" in guest_view["reason"]
    with audit.engine.connect() as conn:
        findings = list_findings(conn, job_id=job_id)
    # (this federation's relay does not sign, so its job.* also count as unsigned: warnings)
    critical = [(f["rule"], f["stop_requested"]) for f in findings if f["severity"] == "critical"]
    assert critical == [("algorithm.substitution", True)]
    audit.stop()
