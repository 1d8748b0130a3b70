"""BusMetrics in EnvelopePublisher / EnvelopeConsumer, on the memory bus and on RabbitMQ: the
counters match what was sent, garbage is counted as dead-lettered with its reason code, a
duplicate is counted as dropped (also inside one batch), and a handler that keeps failing is
counted once, at the delivery limit."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from fedbus import Bus, Message, Reject, connect
from fedbus.in_memory_inbox import InMemoryInbox
from fedbus.inbox import InboxTransaction
from fedbus.metrics import BusMetrics
from fedbus.runtime import EnvelopeConsumer, EnvelopePublisher
from fedschemas import Envelope, Payload, encode_envelope
from prometheus_client import CollectorRegistry

from tests.polling import wait_until
from tests.runtime.helpers import GUEST, ping


class Handled:
    def __init__(self, reject_text: str | None = None) -> None:
        self.ids: list[str] = []
        self.lock = threading.Lock()
        self._reject_text = reject_text

    def __call__(self, envelope: Envelope, payload: Payload, tx: InboxTransaction) -> None:
        if self._reject_text is not None and getattr(payload, "text", None) == self._reject_text:
            raise Reject("this ping can never succeed")
        with self.lock:
            self.ids.append(envelope.message_id)


@pytest.fixture(params=["memory", "rabbitmq"])
def bus(request: pytest.FixtureRequest, unique_name: str) -> Iterator[Bus]:
    if request.param == "memory":
        bus = connect(f"memory://{unique_name}")
    else:
        bus = connect(request.getfixturevalue("amqp_url"))
    yield bus
    bus.close()


@pytest.fixture
def topic(bus: Bus, unique_name: str) -> Iterator[str]:
    name = f"{unique_name}.svc.worker"
    bus.declare(name)
    yield name
    bus.delete(name)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_published_and_received_counts_match_what_was_sent(bus: Bus, topic: str) -> None:
    # Prepare: one registry for the publisher and the consumer, as in one service
    registry = CollectorRegistry()
    metrics = BusMetrics(registry)
    handled = Handled()
    consumer = EnvelopeConsumer(
        bus, topic, {"demo.ping": handled}, InMemoryInbox(), metrics=metrics
    )
    consumer.start()
    publisher = EnvelopePublisher(bus, GUEST, metrics=metrics)
    singles = [ping(seq=i) for i in range(3)]
    batch = [ping(seq=10 + i) for i in range(4)]

    # Execute
    for envelope in singles:
        publisher.send(topic, envelope)
    publisher.send_many(topic, batch)
    wait_until(lambda: len(handled.ids) == 7, what="seven pings handled")
    wait_until(
        lambda: value(registry, "fedmq_bus_handler_seconds_count", topic=topic) == 7,
        what="the last handler's observation",
    )
    consumer.stop()

    # Assert: seven published and received, bytes at least the encoded envelopes' size
    assert value(registry, "fedmq_bus_messages_published_total", topic=topic, type="demo.ping") == 7
    assert value(registry, "fedmq_bus_messages_received_total", topic=topic, type="demo.ping") == 7
    unstamped = sum(len(encode_envelope(e)) for e in singles + batch)
    # The sent envelopes also carry a traceparent, so they are a little larger than unstamped.
    assert value(registry, "fedmq_bus_published_bytes_total", topic=topic) >= unstamped
    assert value(registry, "fedmq_bus_duplicates_dropped_total", topic=topic) == 0
    assert (
        registry.get_sample_value(
            "fedmq_bus_messages_dead_lettered_total", {"topic": topic, "reason": "malformed"}
        )
        == 0  # exists from the consumer's start (issue #22), and nothing was dead-lettered
    )


def test_garbage_unhandled_and_rejected_messages_count_as_dead_lettered_by_reason(
    bus: Bus, topic: str
) -> None:
    # Prepare
    registry = CollectorRegistry()
    metrics = BusMetrics(registry)
    handled = Handled(reject_text="poison")
    consumer = EnvelopeConsumer(
        bus, topic, {"demo.ping": handled}, InMemoryInbox(), metrics=metrics
    )
    consumer.start()
    no_handler = ping(seq=1).model_copy(update={"type": "demo.pong"})
    # A raw publisher without metrics: what arrives is all the consumer sees.
    raw = EnvelopePublisher(bus, GUEST)

    # Execute: garbage bytes, a valid envelope of a type the consumer does not handle, a ping
    # its handler rejects, and a good ping last
    bus.publish(Message(topic=topic, body=b"\x93garbage", message_id="garbage-1"))
    bus.publish(Message(topic=topic, body=encode_envelope(no_handler), message_id="nh-1"))
    raw.send(topic, ping(seq=2, text="poison"))
    good = ping(seq=3)
    raw.send(topic, good)
    wait_until(lambda: handled.ids == [good.message_id], what="the good ping")

    def dead(reason: str) -> float:
        return value(registry, "fedmq_bus_messages_dead_lettered_total", topic=topic, reason=reason)

    wait_until(
        lambda: (
            dead("malformed") + dead("bad_payload") + dead("no_handler") + dead("rejected") == 3
        ),
        what="three dead letters counted",
    )
    consumer.stop()

    # Assert: each with its own short reason code; the good one is received
    assert dead("malformed") == 1
    assert dead("rejected") == 1
    assert dead("no_handler") == 1  # the type is looked up before its payload is decoded
    assert dead("bad_payload") == 0
    assert value(registry, "fedmq_bus_messages_received_total", topic=topic, type="demo.ping") == 1


def test_a_duplicate_counts_as_dropped_and_is_received_once(bus: Bus, topic: str) -> None:
    # Prepare
    registry = CollectorRegistry()
    metrics = BusMetrics(registry)
    handled = Handled()
    consumer = EnvelopeConsumer(
        bus, topic, {"demo.ping": handled}, InMemoryInbox(), metrics=metrics, prefetch=1
    )
    consumer.start()
    publisher = EnvelopePublisher(bus, GUEST, metrics=metrics)
    first, other = ping(seq=1), ping(seq=2)

    # Execute: a resumed sender re-sends the same envelope (same deterministic id)
    publisher.send(topic, first)
    publisher.send(topic, first)
    publisher.send(topic, other)
    wait_until(
        lambda: value(registry, "fedmq_bus_duplicates_dropped_total", topic=topic) == 1,
        what="the duplicate counted",
    )
    wait_until(lambda: len(handled.ids) == 2, what="both distinct pings")
    consumer.stop()

    # Assert
    assert value(registry, "fedmq_bus_messages_published_total", topic=topic, type="demo.ping") == 3
    assert value(registry, "fedmq_bus_messages_received_total", topic=topic, type="demo.ping") == 2


def test_batch_mode_counts_each_envelope_once(bus: Bus, topic: str) -> None:
    # Prepare: a batch consumer; a group holding two copies of one message
    registry = CollectorRegistry()
    metrics = BusMetrics(registry)
    handled = Handled()
    publisher = EnvelopePublisher(bus, GUEST)
    envelopes = [ping(seq=i) for i in range(6)]
    publisher.send_many(topic, [*envelopes, envelopes[0]])
    consumer = EnvelopeConsumer(
        bus,
        topic,
        {"demo.ping": handled},
        InMemoryInbox(),
        metrics=metrics,
        batch_size=8,
        prefetch=16,
        batch_wait=0.05,
    )

    # Execute
    consumer.start()
    wait_until(
        lambda: value(registry, "fedmq_bus_duplicates_dropped_total", topic=topic) == 1,
        what="the duplicate counted",
    )
    consumer.stop()

    # Assert
    assert len(handled.ids) == 6
    assert value(registry, "fedmq_bus_messages_received_total", topic=topic, type="demo.ping") == 6
    assert value(registry, "fedmq_bus_handler_seconds_count", topic=topic) == 6


def test_a_handler_failing_until_the_delivery_limit_counts_one_dead_letter(
    bus: Bus, topic: str
) -> None:
    # Prepare: a handler that always fails (a transient error as far as the bus knows)
    registry = CollectorRegistry()
    metrics = BusMetrics(registry)
    calls: list[int] = []

    def failing(envelope: Envelope, payload: Payload, tx: InboxTransaction) -> None:
        calls.append(1)
        raise RuntimeError("database unavailable")

    consumer = EnvelopeConsumer(
        bus, topic, {"demo.ping": failing}, InMemoryInbox(), metrics=metrics, max_deliveries=3
    )
    consumer.start()

    # Execute
    EnvelopePublisher(bus, GUEST).send(topic, ping(seq=1))
    wait_until(
        lambda: (
            value(
                registry,
                "fedmq_bus_messages_dead_lettered_total",
                topic=topic,
                reason="delivery_limit",
            )
            == 1
        ),
        what="the dead letter counted",
    )
    consumer.stop()

    # Assert: three attempts, one dead letter, nothing received
    assert len(calls) == 3
    assert value(registry, "fedmq_bus_messages_received_total", topic=topic, type="demo.ping") == 0
