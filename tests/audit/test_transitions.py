"""control.illegal_transition judges a participant's tasks on its worker's reports, not on its
scheduler's forwards of them to the initiator (job.task_report), which reach the participant's
audit through another queue and so can come after a later report of the worker: on the
RabbitMQ stack (tests/audit/test_stack_examples.py) a fast task's forwarded "running" came
after its "success" and flagged clean homo_lr and scorecard_credit runs at the host."""

from __future__ import annotations

from datetime import UTC, datetime

from fedaudit.auditor import Auditor, make_record
from fedaudit.rules.state import AuditPolicy, Observation
from fedschemas import Envelope, decode_envelope, decode_payload
from fedschemas.payloads import JobTaskReport, TaskStatus

from tests.audit.traffic import GUEST, HOST, KEY_BITS, Traffic


def worker_status(traffic: Traffic, state: str) -> Envelope:
    """The host's worker reporting its task to the host's scheduler."""
    payload = TaskStatus(
        job_id=traffic.job_id,
        component=traffic.component,
        attempt=0,
        party_id=HOST,
        state=state,  # type: ignore[arg-type]
    )
    return traffic.envelope(payload, HOST, HOST, "task_status", sender_role="host")


def forwarded(traffic: Traffic, state: str) -> Envelope:
    """The host's scheduler forwarding its worker's report to the initiator (the guest)."""
    payload = JobTaskReport(
        job_id=traffic.job_id,
        party_id=HOST,
        attempt=0,
        component=traffic.component,
        task_state=state,  # type: ignore[arg-type]
        at=datetime.now(UTC),
    )
    return traffic.envelope(payload, HOST, GUEST, "status", sender_role="host")


def rules(party: str, traffic: Traffic, envelopes: list[Envelope]) -> list[str]:
    """The rule ids `party`'s audit finds above info in `envelopes`, delivered as it sees them."""
    auditor = Auditor(AuditPolicy(party_id=party, min_key_bits=KEY_BITS))
    found: list[str] = []
    for envelope in envelopes:
        delivery = traffic.delivery(envelope)
        received = decode_envelope(delivery.body)
        payload = decode_payload(received)
        record = make_record(delivery.topic, delivery.body, received, payload, party)
        found += [
            f.rule for f in auditor.observe(Observation(record, payload)) if f.severity != "info"
        ]
    return found


def test_the_hosts_forward_of_running_after_its_workers_success_is_no_transition() -> None:
    # Prepare: at the host, the worker's two reports, then the scheduler's forward of the first
    traffic = Traffic(observer=HOST)
    envelopes = [
        traffic.propose(),
        traffic.task_run(),
        worker_status(traffic, "running"),
        worker_status(traffic, "success"),
        forwarded(traffic, "running"),
        forwarded(traffic, "success"),
    ]

    # Execute
    found = rules(HOST, traffic, envelopes)

    # Assert
    assert found == []


def test_a_workers_running_after_its_success_is_still_one() -> None:
    traffic = Traffic(observer=HOST)
    envelopes = [
        traffic.propose(),
        traffic.task_run(),
        worker_status(traffic, "success"),
        forwarded(traffic, "success"),
        worker_status(traffic, "running"),
    ]

    found = rules(HOST, traffic, envelopes)

    assert found == ["control.illegal_transition"]


def test_at_the_initiator_a_peers_forwards_are_still_judged() -> None:
    # Prepare: the guest receives the host's forwards, "running" after "success"
    traffic = Traffic()
    envelopes = [traffic.propose(), forwarded(traffic, "success"), forwarded(traffic, "running")]

    # Execute
    found = rules(GUEST, traffic, envelopes)

    # Assert
    assert found == ["control.illegal_transition"]
