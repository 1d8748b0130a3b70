"""The envelope runtime trusts another party's envelopes only when the party's gateway published
them (RemoteSourceGuard on Delivery.publisher): memory:// buses with identities stand in for the
broker users; tests/security runs the same on RabbitMQ with separate processes."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator

import pytest
from fedbus import HEADER_DEAD_REASON, Bus, connect
from fedbus.in_memory_inbox import InMemoryInbox
from fedbus.inbox import InboxTransaction
from fedbus.metrics import BusMetrics
from fedbus.runtime import EnvelopeConsumer, EnvelopePublisher, RemoteSourceGuard
from fedschemas import Envelope, Payload
from prometheus_client import CollectorRegistry

from tests.polling import wait_for_dead_letters, wait_until
from tests.runtime.helpers import GUEST, HOST, events, ping

GATEWAY_USER = "site-10000-gateway"


class Handled:
    def __init__(self) -> None:
        self.items: list[Envelope] = []
        self.lock = threading.Lock()

    def __call__(self, envelope: Envelope, payload: Payload, tx: InboxTransaction) -> None:
        with self.lock:
            self.items.append(envelope)


@pytest.fixture
def buses(unique_name: str) -> Iterator[dict[str, Bus]]:
    """One broker, three connections: the host's gateway, its worker and its scheduler."""
    made = {
        who: connect(f"memory://site-10000-{who}@{unique_name}")
        for who in ("gateway", "worker", "scheduler")
    }
    yield made
    for bus in made.values():
        bus.close()


def _consumer(bus: Bus, topic: str, handled: Handled, metrics: BusMetrics) -> EnvelopeConsumer:
    guard = RemoteSourceGuard.for_service(
        HOST.party_id, "memory://site-10000-scheduler@x", "scheduler"
    )
    assert guard == RemoteSourceGuard(HOST.party_id, frozenset({GATEWAY_USER}))
    return EnvelopeConsumer(
        bus, topic, {"demo.ping": handled}, InMemoryInbox(), guard=guard, metrics=metrics
    )


def test_a_peers_envelope_published_by_another_service_is_dead_lettered_with_the_reason(
    buses: dict[str, Bus], unique_name: str, log_lines: io.StringIO
) -> None:
    # Prepare: the host's scheduler consumes its topic with the guard
    topic = f"{unique_name}.svc"
    scheduler = buses["scheduler"]
    scheduler.declare(topic)
    handled = Handled()
    metrics = BusMetrics(CollectorRegistry())
    consumer = _consumer(scheduler, topic, handled, metrics)
    consumer.start()
    forged = ping(seq=1, text="forged")  # claims the guest as its source

    # Execute: the host's worker publishes it (a compromised worker, unsigned)
    EnvelopePublisher(buses["worker"], GUEST).send(topic, forged)

    # Assert: not handled; dead-lettered with the reason, logged, counted
    (dead,) = wait_for_dead_letters(scheduler, topic, 1)
    assert dead.headers[HEADER_DEAD_REASON] == (
        "remote source 9999 not published by the gateway (published by 'site-10000-worker')"
    )
    assert handled.items == []
    assert events(log_lines, "message_dead_lettered")[0]["code"] == "untrusted_publisher"
    assert metrics.dead_lettered.labels(topic, "untrusted_publisher")._value.get() == 1
    consumer.stop()


def test_a_peers_envelope_relayed_by_the_gateway_and_a_local_one_are_handled(
    buses: dict[str, Bus], unique_name: str
) -> None:
    topic = f"{unique_name}.svc"
    scheduler = buses["scheduler"]
    scheduler.declare(topic)
    handled = Handled()
    consumer = _consumer(scheduler, topic, handled, BusMetrics(CollectorRegistry()))
    consumer.start()
    relayed = ping(seq=2, text="relayed")
    local = ping(seq=3, text="local", source=HOST)

    EnvelopePublisher(buses["gateway"], GUEST).send(topic, relayed)
    EnvelopePublisher(buses["worker"], HOST).send(topic, local)

    wait_until(lambda: len(handled.items) == 2, what="both envelopes")
    assert {e.message_id for e in handled.items} == {relayed.message_id, local.message_id}
    assert scheduler.dead_letters(topic) == []
    consumer.stop()


def test_a_bus_without_identity_has_no_guard_and_a_shared_user_trusts_itself() -> None:
    # memory:// without a user, pulsar://: the broker cannot tell publishers apart
    assert RemoteSourceGuard.for_service("9999", "memory://local", "worker") is None
    # one broker user for every service of the site (compose's "fedmq"): only it may publish
    shared = RemoteSourceGuard.for_service("9999", "amqp://fedmq:pw@rabbitmq/fedmq", "worker")
    assert shared == RemoteSourceGuard("9999", frozenset({"fedmq"}))
    # the setting wins over the naming
    named = RemoteSourceGuard.for_service(
        "9999", "amqp://fedmq-9999-worker:pw@h/v", "worker", ("edge",)
    )
    assert named == RemoteSourceGuard("9999", frozenset({"edge"}))
    assert RemoteSourceGuard.for_service(
        "9999", "amqp://fedmq-9999-worker:pw@h/v", "worker"
    ) == RemoteSourceGuard("9999", frozenset({"fedmq-9999-gateway"}))
