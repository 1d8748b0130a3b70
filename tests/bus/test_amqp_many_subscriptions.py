"""Many subscriptions on one amqp:// bus, small prefetch, slow handlers, concurrent publishers.

Regression for `PRECONDITION_FAILED unknown delivery tag` (and the `CHANNEL_ERROR expected
'channel.open'` that followed it): acks are coalesced into `basic.ack(multiple)`, which is only
correct if every ack and nack of a channel reaches the broker in delivery order. Each case
asserts the outcome a user sees (every message handled exactly as planned, only the rejected
ones dead-lettered, every queue empty afterwards) and that the bus never lost a channel or
reconnected on the way (`AmqpBus.channel_closes`, `AmqpBus.reconnects`).

Real RabbitMQ through the `amqp_url` fixture; never skipped.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pytest
from aio_pika import IncomingMessage
from fedbus import HEADER_DEAD_REASON, Delivery, Message, Reject
from fedbus.amqp_bus import AmqpBus

from tests.bus.contract import drain_dead_letters, wait_until
from tests.bus.raw_amqp import RawAmqp

TOPICS = 8
PER_TOPIC = 60
SUBSCRIPTIONS_PER_TOPIC = 2
HANDLER_SECONDS = 0.003

Plan = Literal["ok", "flaky", "reject"]


def plan_for(kind: str, index: int) -> Plan:
    """What the handler does with message `index` of a topic of `kind`."""
    if kind == "flaky" and index % 3 == 0:
        return "flaky"  # raises on the first delivery: requeued, handled on the second
    if kind == "reject" and index % 5 == 0:
        return "reject"
    if kind == "batched" and index % 8 == 0:
        return "reject"  # left by the batch handler, rejected by the per-message handler
    if kind == "batched" and index % 8 == 4:
        return "flaky"  # left by the batch handler, fails once in the per-message handler
    return "ok"


@dataclass
class TopicConsumer:
    """Handlers for one topic that follow `plan_for` and count what happened to each message."""

    topic: str
    kind: str
    calls: Counter[str] = field(default_factory=Counter)
    handled: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, delivery: Delivery) -> None:
        plan = plan_for(self.kind, int(delivery.body))
        with self.lock:
            self.calls[delivery.message_id] += 1
        time.sleep(HANDLER_SECONDS)
        if plan == "reject":
            raise Reject("planned rejection")
        if plan == "flaky" and delivery.delivery_count == 1:
            raise RuntimeError("planned transient failure")
        with self.lock:
            self.handled[delivery.message_id] += 1

    def handle_group(self, deliveries: Sequence[Delivery]) -> Sequence[Delivery]:
        time.sleep(HANDLER_SECONDS)
        left = [d for d in deliveries if plan_for(self.kind, int(d.body)) != "ok"]
        with self.lock:
            for d in deliveries:
                if d not in left:
                    self.calls[d.message_id] += 1
                    self.handled[d.message_id] += 1
        return left

    def ids(self, plan: Plan | None = None) -> list[str]:
        return [
            message_id(self.topic, i)
            for i in range(PER_TOPIC)
            if plan is None or plan_for(self.kind, i) == plan
        ]

    def done(self) -> bool:
        expected = len(self.ids()) - len(self.ids("reject"))
        with self.lock:
            return len(self.handled) >= expected


def message_id(topic: str, index: int) -> str:
    return f"{topic}-m{index:03d}"


def publish_concurrently(bus: AmqpBus, topics: list[str]) -> None:
    """One thread per topic; singles and small publish_many batches, interleaved on the wire."""

    def publish(topic: str) -> None:
        messages = [Message(topic, str(i).encode(), message_id(topic, i)) for i in range(PER_TOPIC)]
        # Big publish_many batches fill aiormq's frame queue (10 frames) in front of the acks.
        for start in range(0, PER_TOPIC, 20):
            bus.publish_many(messages[start : start + 20])

    threads = [threading.Thread(target=publish, args=(t,)) for t in topics]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)


def queue_depth(amqp_url: str, topic: str) -> int:
    connection = RawAmqp(amqp_url)
    try:
        declared = connection.queue_declare(topic, passive=True)
        return int(declared.method.message_count)
    finally:
        connection.close()


@pytest.fixture
def topics(unique_name: str) -> list[str]:
    return [f"{unique_name}.s{i}" for i in range(TOPICS)]


@pytest.fixture
def amqp_bus(amqp_url: str, topics: list[str]) -> Iterator[AmqpBus]:
    bus = AmqpBus(amqp_url)
    for topic in topics:
        bus.declare(topic)
    yield bus
    try:
        for topic in topics:
            bus.delete(topic)
    finally:
        bus.close()


KINDS = ["plain", "flaky", "reject", "batched"]


@pytest.fixture
def congested_frame_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ack/nack waits a random 0-4 ms before its frame is queued.

    What a busy connection does: aiormq's frame queue holds 10 frames, a put into a full queue
    waits, and a later put can take the slot first. Acks then reach the queue out of the order
    in which they were sent, unless the adapter waits for one flush before starting the next.
    """
    rng = random.Random(7)
    original_ack, original_nack = IncomingMessage.ack, IncomingMessage.nack

    async def ack(self: IncomingMessage, multiple: bool = False) -> None:
        await asyncio.sleep(rng.uniform(0, 0.004))
        await original_ack(self, multiple=multiple)

    async def nack(self: IncomingMessage, multiple: bool = False, requeue: bool = True) -> None:
        await asyncio.sleep(rng.uniform(0, 0.004))
        await original_nack(self, multiple=multiple, requeue=requeue)

    monkeypatch.setattr(IncomingMessage, "ack", ack)
    monkeypatch.setattr(IncomingMessage, "nack", nack)


@pytest.mark.parametrize("prefetch", [1, 2, 8])
def test_many_small_prefetch_subscriptions_handle_everything_without_channel_errors(
    amqp_url: str, amqp_bus: AmqpBus, topics: list[str], prefetch: int
) -> None:
    run_many_subscriptions(amqp_url, amqp_bus, topics, prefetch)


@pytest.mark.parametrize("prefetch", [2, 8])
def test_acks_stay_in_delivery_order_when_the_connection_queues_frames_slowly(
    amqp_url: str,
    amqp_bus: AmqpBus,
    topics: list[str],
    prefetch: int,
    congested_frame_queue: None,
) -> None:
    run_many_subscriptions(amqp_url, amqp_bus, topics, prefetch)


def run_many_subscriptions(
    amqp_url: str, amqp_bus: AmqpBus, topics: list[str], prefetch: int
) -> None:
    # Prepare: two subscriptions (two channels) per topic on one bus, like the gateway's
    # window of consumers per peer; every kind of handler on two topics.
    consumers = [TopicConsumer(t, KINDS[i % len(KINDS)]) for i, t in enumerate(topics)]
    subscriptions = []
    for c in consumers:
        for _ in range(SUBSCRIPTIONS_PER_TOPIC):
            if c.kind == "batched":
                sub = amqp_bus.subscribe_batched(
                    c.topic, c.handle, c.handle_group, batch_size=prefetch, prefetch=prefetch
                )
            else:
                sub = amqp_bus.subscribe(c.topic, c.handle, prefetch=prefetch)
            subscriptions.append(sub)

    # Execute
    publish_concurrently(amqp_bus, topics)
    wait_until(lambda: all(c.done() for c in consumers), timeout=90, what="every message handled")
    dead = {
        c.topic: drain_dead_letters(amqp_bus, c.topic, len(c.ids("reject")), timeout=30)
        for c in consumers
        if c.ids("reject")
    }
    time.sleep(0.3)  # room for a late duplicate or a late channel error to show up

    # Assert: each message handled exactly once; flaky ones called exactly twice.
    for c in consumers:
        rejected = set(c.ids("reject"))
        assert c.handled == Counter({i: 1 for i in c.ids() if i not in rejected}), c.topic
        for i in c.ids("flaky"):
            assert c.calls[i] == 2, (c.topic, i)
        for i in rejected:
            assert c.calls[i] == 1, (c.topic, i)
    # Only the planned rejections were dead-lettered, each once, with its reason.
    for c in consumers:
        got = dead.get(c.topic, [])
        assert sorted(d.message_id for d in got) == sorted(c.ids("reject")), c.topic
        assert all(d.headers[HEADER_DEAD_REASON] == "planned rejection" for d in got)
        assert amqp_bus.dead_letters(c.topic) == []
    # No channel was lost and the connection never dropped: no forced redeliveries.
    assert amqp_bus.channel_closes == 0
    assert amqp_bus.reconnects == 0
    # Every delivery was acked: nothing goes back to the queues when the consumers stop.
    for sub in subscriptions:
        sub.cancel()
    assert {t: queue_depth(amqp_url, t) for t in topics} == {t: 0 for t in topics}


def test_chunked_messages_held_for_reassembly_are_acked_without_channel_errors(
    amqp_url: str, topics: list[str]
) -> None:
    # Prepare: a small frame limit, so every large body is held as chunks (in-memory store)
    # while small messages on the same channel are acked around them.
    bus = AmqpBus(amqp_url, max_frame_bytes=1024)
    topic = topics[0]
    bus.declare(topic)
    try:
        got: Counter[str] = Counter()
        lock = threading.Lock()

        def handler(delivery: Delivery) -> None:
            time.sleep(0.001)
            with lock:
                got[delivery.message_id] += 1

        subscription = bus.subscribe(topic, handler, prefetch=16)
        messages = [
            Message(topic, os.urandom(3000) if i % 2 else b"small", f"c-{i:03d}") for i in range(24)
        ]

        # Execute
        for start in range(0, len(messages), 4):
            bus.publish_many(messages[start : start + 4])
        wait_until(lambda: len(got) == len(messages), timeout=60, what="every message handled")
        time.sleep(0.3)
        subscription.cancel()

        # Assert: each handled once, no channel error, every chunk acked (none back in the queue).
        assert got == Counter({m.message_id: 1 for m in messages})
        assert bus.channel_closes == 0
        assert bus.reconnects == 0
        assert queue_depth(amqp_url, topic) == 0
        assert bus.dead_letters(topic) == []
    finally:
        bus.delete(topic)
        bus.close()


@pytest.mark.slow
def test_health_counters_count_a_connection_the_broker_dropped(
    amqp_url: str, topics: list[str]
) -> None:
    # Prepare: a consuming bus, so that a subscription channel dies with the connection.
    from tests.bus.test_amqp_bus import _close_connection_on_broker

    bus = AmqpBus(amqp_url)
    topic = topics[0]
    bus.declare(topic)
    try:
        got = TopicConsumer(topic, "plain")
        bus.subscribe(topic, got.handle, prefetch=2)
        bus.publish(Message(topic, b"0", message_id(topic, 0)))
        wait_until(lambda: len(got.handled) == 1, what="the first delivery")
        assert (bus.channel_closes, bus.reconnects) == (0, 0)

        # Execute
        _close_connection_on_broker(bus.connection_name)
        bus.publish(Message(topic, b"1", message_id(topic, 1)))
        wait_until(lambda: len(got.handled) == 2, timeout=30, what="delivery after reconnect")

        # Assert: the counters the regression tests rely on do see an outage. The robust
        # connection restores consumers before it runs its reconnect callbacks, so the
        # redelivered message can be handled before the reconnect is counted.
        wait_until(lambda: bus.reconnects >= 1, what="the reconnect counted")
        assert bus.channel_closes >= 1
    finally:
        bus.delete(topic)
        bus.close()
