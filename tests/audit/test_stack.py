"""The audit on the local two-party stack over RabbitMQ (`fedmq local`, separate processes):
an honest hetero_lr job breaks no rule at either party although the guest's audit is SIGKILLed
in the middle of it, and both logs then hold every message that crossed between the parties;
a message a party's worker should never send stops the job at both parties."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fedaudit.verify import parse_export, verify_export
from fedbus import Message, connect
from fedschemas import FederationData, PartyRef, encode_envelope, new_envelope, topics
from fedschemas.payloads import task_scope_id

from fedmq import local
from tests.audit.traffic import odd_key
from tests.local_stack import GUEST, HOST, Stack, stack_fixture, upload_breast
from tests.polling import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

stack = stack_fixture("audit")


def pipeline(epochs: int) -> str:
    return f"""
name: audit-hetero-lr
parties: {{guest: "{GUEST}", host: ["{HOST}"]}}
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: breast_hetero_guest}}
      host: {{table: breast_hetero_host}}
  - name: psi_0
    type: psi
    inputs: {{data: reader_0.data}}
  - name: hetero_lr_0
    type: hetero_lr
    inputs: {{data: psi_0.data}}
    params:
      common: {{epochs: {epochs}, batch_size: 128, learning_rate: 0.5, seed: 1}}
"""


def audit_api(stack: Stack, party: str, path: str, **params: Any) -> Any:
    client = stack.guest if party == GUEST else stack.host
    response = httpx.get(
        f"{client.base_url}/api/v1/audit{path}",
        params=params,
        headers=client._headers,
        timeout=60,
    )
    response.raise_for_status()
    return response.json() if path != "/export" else response.text


def crossed(
    stack: Stack, party: str, job_id: str, direction: str, tag: str | None = None
) -> set[str]:
    """Ids of the job's federation messages in `party`'s log that went `direction`."""
    events = audit_api(stack, party, f"/jobs/{job_id}/events", limit=10_000)["data"]
    return {
        e["message_id"]
        for e in events
        if e["direction"] == direction
        and e["type"] == "federation.data"
        and (tag is None or e["tag"] == tag)
    }


def tail_logs(state: local.LocalState) -> str:
    """The end of each party's audit log (for a failed wait's message)."""
    return "\n".join(
        f"{party}: {local.log_file(state, party, 'audit').read_text()[-3000:]}"
        for party in (GUEST, HOST)
    )


@pytest.fixture(scope="module")
def ready(stack: Stack) -> Stack:
    upload_breast(stack)
    stack.host.grant("breast_hetero_host", GUEST, ["psi", "hetero_lr"])
    return stack


def test_an_honest_job_with_its_audit_killed_midway_breaks_no_rule_and_loses_nothing(
    ready: Stack,
) -> None:
    stack, state = ready, ready.state
    # Prepare: an honest job, and the guest's audit SIGKILLed once federation data flows
    job = stack.guest.submit(pipeline(epochs=1), job_id="audit-clean")
    wait_for(
        lambda: len(crossed(stack, GUEST, job.job_id, "out")) >= 2 or None,
        timeout=300,
        describe=lambda: (stack.guest.job(job.job_id).state, tail_logs(state)),
    )
    assert local.stop_service(state, GUEST, "audit", kill=True)

    # Execute: the job goes on without it; the audit comes back and catches up
    local.start_service(state, GUEST, "audit")
    local.wait_healthy(state, GUEST, service="audit", timeout=60)
    ended = stack.guest.wait(job.job_id, timeout=300)

    # Assert: the job succeeded, and neither party's audit found anything above info
    assert ended.state == "success", ended.reason
    for party in (GUEST, HOST):
        assert audit_api(stack, party, "/alerts", job_id=job.job_id)["data"] == []
    # Every message that left one party is in the other's log as received, and vice versa
    wait_for(
        lambda: (
            crossed(stack, GUEST, job.job_id, "out") == crossed(stack, HOST, job.job_id, "in")
            or None
        ),
        timeout=30,
    )
    assert crossed(stack, HOST, job.job_id, "out") == crossed(stack, GUEST, job.job_id, "in")
    # ...and the guest's chain has nothing missing after the kill
    report = audit_api(stack, GUEST, f"/jobs/{job.job_id}/report")
    assert report["chain_ok"], report["chain_problems"]
    assert verify_export(parse_export(audit_api(stack, GUEST, "/export").splitlines())) == []


def test_a_key_of_the_wrong_width_from_the_host_stops_the_job_at_both_parties(
    ready: Stack,
) -> None:
    stack, state = ready, ready.state
    job = stack.guest.submit(pipeline(epochs=50), job_id="audit-malicious")
    # The host's real key is in: the cheat below comes on top of an honest exchange
    wait_for(lambda: crossed(stack, GUEST, job.job_id, "in", "public_key") or None, timeout=300)

    # Execute: the host's worker (its broker user) announces a 2049-bit key for hetero_lr
    envelope = new_envelope(
        FederationData(
            kind="public_key",
            blob=odd_key(2049),
            blob_format="fedcrypto.paillier.public_key.v1",
        ),
        job_id=job.job_id,
        component="hetero_lr_0",
        task_id=task_scope_id(job.job_id, "hetero_lr_0", HOST, "host"),
        attempt=9,  # another message id than the real key's
        source=PartyRef(party_id=HOST, role="host"),
        destination=PartyRef(party_id=GUEST, role="guest"),
        tag="public_key",
        iteration=-1,
        seq=0,
        created_at=datetime.now(UTC),
    )
    with connect(local.service_bus_url(state, HOST, "worker")) as bus:
        sent = time.monotonic()
        bus.publish(
            Message(topics.out_topic(GUEST), encode_envelope(envelope), envelope.message_id)
        )
    ended = stack.guest.wait(job.job_id, timeout=60, poll=0.2)
    took = time.monotonic() - sent

    # Assert: failed at the guest by its audit's request, naming the rule and the party
    assert ended.state == "failed"
    assert "rule data.key_" in (ended.reason or "") and f"broken by party {HOST}" in (
        ended.reason or ""
    ), ended.reason
    assert stack.host.wait(job.job_id, timeout=60, poll=0.2).state == "failed"
    alerts = audit_api(stack, GUEST, "/alerts", job_id=job.job_id)["data"]
    assert {a["rule"] for a in alerts} >= {"data.key_width"}
    print(f"injected -> failed at the guest in {took:.2f} s (poll 0.2 s)")
