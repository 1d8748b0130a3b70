"""pulsar:// passes the bus contract when a Pulsar broker is given in PULSAR_URL.

No Pulsar broker can be installed on the project's machines (no package, no way to fetch
one), so these tests are skipped unless PULSAR_URL is set, and the skip reason says so.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import pulsar
import pytest
from fedbus import HEADER_DEAD_REASON, HEADER_ORIGINAL_TOPIC, Delivery, Message, Reject, connect
from fedbus.pulsar_bus import PulsarBus, _properties, _to_delivery, fanout_topics_regex

from tests.bus.contract import (
    BusContract,
    ConnectBus,
    Recorder,
    kill_subprocess_consumer_mid_handler,
    wait_until,
)

PULSAR_URL = os.environ.get("PULSAR_URL")

needs_broker = pytest.mark.skipif(
    not PULSAR_URL, reason="PULSAR_URL not set: no Pulsar broker can be installed on these machines"
)


@needs_broker
class TestPulsarBus(BusContract):
    @pytest.fixture
    def bus_url(self) -> str:
        assert PULSAR_URL is not None
        return PULSAR_URL

    def kill_consumer_mid_handler(self, bus_url: str, connect_bus: ConnectBus, topic: str) -> None:
        kill_subprocess_consumer_mid_handler(bus_url, topic)


# Below: the adapter's own mapping logic, checked without a broker.


@pytest.fixture
def offline_pulsar_bus() -> Iterator[PulsarBus]:
    """A PulsarBus that never talks to a broker (pulsar-client connects lazily)."""
    bus = connect("pulsar://127.0.0.1:6650?tenant=acme&namespace=fl")
    assert isinstance(bus, PulsarBus)
    yield bus
    bus.close()


def test_url_selects_tenant_and_namespace_for_persistent_topics(
    offline_pulsar_bus: PulsarBus,
) -> None:
    assert offline_pulsar_bus.full_topic("jobs") == "persistent://acme/fl/jobs"
    assert offline_pulsar_bus.full_topic("persistent://x/y/z") == "persistent://x/y/z"


def test_capabilities_say_unroutable_cannot_be_detected(offline_pulsar_bus: PulsarBus) -> None:
    caps = offline_pulsar_bus.capabilities

    assert (caps.detects_unroutable, caps.persistent, caps.native_delivery_limit) == (
        False,
        True,
        True,
    )
    assert caps.max_frame_bytes < 5 * 1024 * 1024  # Pulsar's default maxMessageSize


def test_message_fields_round_trip_through_pulsar_properties() -> None:
    message = Message("t", b"body", "m-1", headers={"x-app": "v"}, reply_to="r", correlation_id="c")

    class FakePulsarMessage:  # the three accessors the adapter reads from pulsar.Message
        def properties(self) -> dict[str, str]:
            return _properties(message)

        def data(self) -> bytes:
            return message.body

        def redelivery_count(self) -> int:
            return 2

    delivery = _to_delivery("t", FakePulsarMessage())

    assert (delivery.message_id, delivery.body, delivery.reply_to, delivery.correlation_id) == (
        "m-1",
        b"body",
        "r",
        "c",
    )
    assert dict(delivery.headers) == {"x-app": "v"}
    assert delivery.delivery_count == 3


# Below: the adapter driven through a fake pulsar client (consumers and producers in memory),
# so its primitives under the shared base (receive, ack, negative ack, dead-letter sends, the
# fan-out regex subscription) run without a broker.


class FakePulsarMessage:
    def __init__(self, topic: str, message: Message, redeliveries: int = 0) -> None:
        self._topic, self._message, self._redeliveries = topic, message, redeliveries

    def properties(self) -> dict[str, str]:
        return _properties(self._message)

    def data(self) -> bytes:
        return self._message.body

    def redelivery_count(self) -> int:
        return self._redeliveries

    def topic_name(self) -> str:
        return self._topic

    def redelivered(self) -> FakePulsarMessage:
        return FakePulsarMessage(self._topic, self._message, self._redeliveries + 1)


class FakeConsumer:
    def __init__(self) -> None:
        self.waiting: deque[FakePulsarMessage] = deque()
        self.acked: list[FakePulsarMessage] = []
        self.closed = False
        self._lock = threading.Lock()

    def receive(self, timeout_millis: int) -> FakePulsarMessage:
        with self._lock:
            if self.waiting:
                return self.waiting.popleft()
        time.sleep(min(timeout_millis, 10) / 1000)
        raise pulsar.Timeout()

    def acknowledge(self, msg: FakePulsarMessage) -> None:
        self.acked.append(msg)

    def negative_acknowledge(self, msg: FakePulsarMessage) -> None:
        with self._lock:
            self.waiting.append(msg.redelivered())

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    def __init__(self, topic: str, sent: list[tuple[str, bytes, dict[str, str]]]) -> None:
        self._topic, self._sent = topic, sent

    def send_async(self, body: bytes, callback: Any, properties: dict[str, str]) -> None:
        self._sent.append((self._topic, body, properties))
        callback(pulsar.Result.Ok, None)


@pytest.fixture
def faked_pulsar_bus(
    offline_pulsar_bus: PulsarBus, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[PulsarBus, list[tuple[Any, str, dict[str, Any]]], FakeConsumer, list[Any]]]:
    subscribed: list[tuple[Any, str, dict[str, Any]]] = []
    consumer = FakeConsumer()
    sent: list[tuple[str, bytes, dict[str, str]]] = []

    def subscribe(topic: Any, subscription: str, **options: Any) -> FakeConsumer:
        subscribed.append((topic, subscription, options))
        return consumer

    monkeypatch.setattr(offline_pulsar_bus._client, "subscribe", subscribe)
    monkeypatch.setattr(offline_pulsar_bus, "_producer", lambda topic: FakeProducer(topic, sent))
    yield offline_pulsar_bus, subscribed, consumer, sent


def test_topic_consumer_acks_after_the_handler_and_dead_letters_a_rejected_message(
    faked_pulsar_bus: Any,
) -> None:
    bus, subscribed, consumer, sent = faked_pulsar_bus
    topic = "persistent://acme/fl/jobs"
    good, bad = Message("jobs", b"ok", "m-ok"), Message("jobs", b"poison", "m-bad")
    consumer.waiting.extend([FakePulsarMessage(topic, good), FakePulsarMessage(topic, bad)])

    def handle(delivery: Delivery) -> None:
        if delivery.body == b"poison":
            raise Reject("cannot parse")

    got = Recorder(handle)
    bus.subscribe("jobs", got, max_deliveries=3)

    wait_until(lambda: len(consumer.acked) == 2, what="both messages acked")
    assert [(t, s, o["consumer_type"]) for t, s, o in subscribed] == [
        (topic, "fedmq", pulsar.ConsumerType.Shared)
    ]
    assert [(d.topic, d.message_id) for d in got.deliveries] == [
        ("jobs", "m-ok"),
        ("jobs", "m-bad"),
    ]
    [(dlq, body, props)] = sent
    assert (dlq, body) == ("persistent://acme/fl/jobs-DLQ", b"poison")
    assert props[HEADER_DEAD_REASON] == "cannot parse"
    assert props[HEADER_ORIGINAL_TOPIC] == "jobs"


def test_failing_handler_negative_acks_until_the_delivery_limit_then_dead_letters(
    faked_pulsar_bus: Any,
) -> None:
    bus, _subscribed, consumer, sent = faked_pulsar_bus
    consumer.waiting.append(
        FakePulsarMessage("persistent://acme/fl/jobs", Message("jobs", b"x", "m"))
    )

    def crash(delivery: Delivery) -> None:
        raise RuntimeError("down")

    got = Recorder(crash)
    bus.subscribe("jobs", got, max_deliveries=3)

    wait_until(lambda: len(sent) == 1, what="the dead copy")
    assert [d.delivery_count for d in got.deliveries] == [1, 2, 3]
    assert sent[0][2][HEADER_DEAD_REASON] == "delivery limit (3) reached: RuntimeError: down"


def test_fanout_is_a_shared_regex_subscription_that_dead_letters_to_its_own_topic(
    faked_pulsar_bus: Any,
) -> None:
    bus, subscribed, consumer, sent = faked_pulsar_bus
    published_on = "persistent://acme/fl/out.9999"
    consumer.waiting.append(FakePulsarMessage(published_on, Message("out.9999", b"?", "m-1")))

    def refuse(delivery: Delivery) -> None:
        raise Reject("audit cannot parse it")

    got = Recorder(refuse)
    bus.subscribe_fanout("audit", ["out.*", "svc.#"], got)

    wait_until(lambda: len(consumer.acked) == 1, what="the copy acked after dead-lettering")
    [(regex, name, options)] = subscribed
    assert isinstance(regex, re.Pattern)
    assert regex.pattern == fanout_topics_regex("persistent://acme/fl/", ("out.*", "svc.#"))
    assert (name, options["consumer_type"]) == ("fedmq.fanout.audit", pulsar.ConsumerType.Shared)
    assert options["dead_letter_policy"] is not None
    assert got.deliveries[0].topic == "out.9999"  # the topic it was published on
    [(dlq, _body, props)] = sent
    assert dlq == "persistent://acme/fl/fedmq.fanout.audit-DLQ"
    assert props[HEADER_ORIGINAL_TOPIC] == "out.9999"
