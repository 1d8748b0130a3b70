"""The audit's Alertmanager-compatible webhook (FEDMQ_AUDIT_ALERT_WEBHOOK_URL) and its finding
metrics: a warning and a critical finding are each POSTed to the receiver as a JSON list of
{labels, annotations, startsAt} and counted by rule and severity; only the critical one asks
the scheduler to stop its job (issue #13: "Warnings alert without stopping")."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fedaudit.main import Audit
from fedaudit.settings import AuditSettings
from fedbus import Bus, Message, connect
from fedcrypto.signing import SigningKey
from fedschemas import Envelope

from tests.audit.traffic import GUEST, HOST, KEY_BITS, Traffic, odd_key
from tests.polling import wait_for


class Receiver:
    """An HTTP receiver on loopback that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        received: list[Any] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self) -> list[dict[str, Any]]:
        return [alert for body in list(self.received) for alert in body]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


@pytest.fixture
def guest_audit(tmp_path: Path, unique_name: str, receiver: Receiver) -> Iterator[Audit]:
    """The guest's audit on a memory bus, posting its alerts to `receiver`."""
    bus = connect(f"memory://{unique_name}")
    settings = AuditSettings(
        party_id=GUEST,
        bus_url="memory://unused",
        database_url=f"sqlite:///{tmp_path / 'audit.db'}",
        signing_key=SigningKey.generate().to_bytes().hex(),
        http_port=-1,
        log_json=False,
        min_key_bits=KEY_BITS,
        alert_webhook_url=receiver.url,
    )
    audit = Audit(settings, bus=bus)
    audit.start()
    try:
        yield audit
    finally:
        audit.stop()
        bus.close()


def _deliver(bus: Bus, traffic: Traffic, envelope: Envelope) -> None:
    """`envelope` on the topic the guest's services see it on (as Traffic.delivery says)."""
    delivery = traffic.delivery(envelope)
    bus.declare(delivery.topic)
    bus.publish(Message(delivery.topic, delivery.body, delivery.message_id))


def _sample(audit: Audit, name: str, **labels: str) -> float:
    return audit.metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_warning_and_a_critical_finding_reach_the_webhook_and_only_the_critical_stops(
    guest_audit: Audit, receiver: Receiver
) -> None:
    # Prepare: federation data of a job this party never saw (control.unknown_job, warn), and
    # a host announcing a key one bit wider than the pipeline's (data.key_width, critical)
    bus = guest_audit.bus
    unknown, job = Traffic(job_id="never-proposed"), Traffic(job_id="job-webhook")

    # Execute
    _deliver(bus, unknown, unknown.public_key(HOST))
    wait_for(lambda: len(receiver.alerts()) >= 1)
    for envelope in (job.propose(), job.task_run(), job.public_key(HOST, odd_key(KEY_BITS + 1))):
        _deliver(bus, job, envelope)
    wait_for(lambda: len(receiver.alerts()) >= 2)

    # Assert: each finding as Alertmanager takes an alert, naming rule, severity, this party,
    # the offender and the job
    alerts = {a["labels"]["rule"]: a for a in receiver.alerts()}
    assert set(alerts) == {"control.unknown_job", "data.key_width"}, receiver.alerts()
    assert alerts["control.unknown_job"]["labels"] == {
        "alertname": "FedmqAuditFinding",
        "rule": "control.unknown_job",
        "severity": "warn",
        "party": GUEST,
        "offender": HOST,
        "job_id": "never-proposed",
    }
    critical = alerts["data.key_width"]
    assert critical["labels"]["severity"] == "critical"
    assert critical["labels"]["offender"] == HOST and critical["labels"]["job_id"] == "job-webhook"
    assert "1025" in critical["annotations"]["summary"], critical
    assert critical["annotations"]["message_id"] and critical["startsAt"]
    # ...counted by rule and severity; one stop request, for the critical finding only
    findings = "fedmq_audit_findings_total"
    assert _sample(guest_audit, findings, rule="control.unknown_job", severity="warn") == 1.0
    assert _sample(guest_audit, findings, rule="data.key_width", severity="critical") == 1.0
    assert _sample(guest_audit, "fedmq_audit_stop_requests_total") == 1.0
