"""svc.audit.reports is declared by the audit service only: a worker's report at a party with
no audit is dropped where it is published (unroutable), so no queue grows that nothing reads,
in memory or on RabbitMQ; once the audit has declared the topic, reports queue for it (and
wait there while it is down)."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fedbus import Bus, Delivery, connect
from fedbus.amqp_bus import AmqpBus
from fedbus.sql_inbox import make_engine
from fedflow.bus_federation import BusFederation, FederationEndpoint
from fedflow.components import protocol_of
from fedflow.protocol import ProtocolGuard
from fedflow.task import TaskKey
from fedschemas import decode_envelope, topics
from fedschemas.audit_payloads import DecryptCheck

from tests.polling import wait_for

PARTY = "9999"
MANAGEMENT = "http://127.0.0.1:15672/api"


def _federation(bus: Bus, tmp_path: Path) -> BusFederation:
    endpoint = FederationEndpoint(PARTY, bus, make_engine(f"sqlite:///{tmp_path / 'w.db'}"))
    key = TaskKey("job-reports", "sum_0", 0, PARTY, "guest")
    guard = ProtocolGuard(protocol_of("iter_sum"), "guest")
    return BusFederation(endpoint, key, "iter_sum", {"guest": [PARTY]}, guard)


def _check(iteration: int) -> DecryptCheck:
    return DecryptCheck(
        job_id="job-reports",
        component="sum_0",
        attempt=0,
        party_id=PARTY,
        peer="10000",
        tag="sum",
        iteration=iteration,
        count=4,
        bound="test",
    )


def test_without_an_audit_reports_are_dropped_in_memory_and_queue_once_it_declared(
    tmp_path: Path,
) -> None:
    # Prepare: a party's in-memory broker with no audit
    bus = connect(f"memory://reports-{uuid.uuid4().hex[:8]}")
    federation = _federation(bus, tmp_path)

    # Execute: a report with no audit, then the audit declares its topic, then a report
    federation.report(_check(0), tag="decrypt_check.sum", iteration=0)
    bus.declare(topics.AUDIT_REPORTS)
    federation.report(_check(1), tag="decrypt_check.sum", iteration=1)
    got: list[Delivery] = []
    seen = threading.Event()

    def collect(delivery: Delivery) -> None:
        got.append(delivery)
        seen.set()

    subscription = bus.subscribe(topics.AUDIT_REPORTS, collect)
    wait_for(seen.is_set)
    subscription.cancel()
    bus.close()

    # Assert: only the report made once the audit's topic existed was kept
    assert [decode_envelope(d.body).iteration for d in got] == [1]


def _management(path: str, method: str = "GET") -> object:
    request = urllib.request.Request(f"{MANAGEMENT}{path}", method=method)
    token = base64.b64encode(b"guest:guest").decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read()
    return json.loads(body) if body else None


@pytest.fixture
def own_exchanges_bus(amqp_url: str) -> Iterator[AmqpBus]:
    """A RabbitMQ bus routing through exchanges of its own (nothing else binds to them), which
    are deleted afterwards."""
    names = [f"test-reports-{uuid.uuid4().hex[:10]}{suffix}" for suffix in ("", ".dlx", ".fo")]
    bus = AmqpBus(
        amqp_url, exchange=names[0], dead_letter_exchange=names[1], fanout_exchange=names[2]
    )
    try:
        yield bus
    finally:
        bus.close()
        for name in names:  # those the bus declared
            with contextlib.suppress(urllib.error.HTTPError):
                _management(f"/exchanges/%2F/{urllib.parse.quote(name, safe='')}", "DELETE")


def test_without_an_audit_a_report_on_rabbitmq_is_not_queued_anywhere(
    own_exchanges_bus: AmqpBus, tmp_path: Path
) -> None:
    # Prepare: a worker's federation on a broker where no audit declared svc.audit.reports
    federation = _federation(own_exchanges_bus, tmp_path)
    exchange = urllib.parse.quote(own_exchanges_bus._exchange_name, safe="")

    # Execute
    federation.report(_check(0), tag="decrypt_check.sum", iteration=0)

    # Assert: the report went nowhere (the worker bound no queue for it), and the component
    # was not held up by it
    bindings = _management(f"/exchanges/%2F/{exchange}/bindings/source")
    assert isinstance(bindings, list)
    assert [b["destination"] for b in bindings if b["destination"] == topics.AUDIT_REPORTS] == []
