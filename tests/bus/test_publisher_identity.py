"""Who published a message, as the broker vouches for it (Delivery.publisher), and the guard
against chunk sets that can never complete on prefetch-limited queues. Real RabbitMQ for the
amqp:// parts; memory:// for its identities."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import aiormq
import pytest
from fedbus import HEADER_DEAD_REASON, Bus, Message, connect
from fedbus.amqp_bus import AmqpBus
from fedbus.chunking import (
    HEADER_CHUNK_COUNT,
    HEADER_CHUNK_INDEX,
    HEADER_CHUNK_OF,
    HEADER_CHUNK_SHA256,
    HEADER_CHUNK_TOTAL,
)

from tests.bus.contract import Recorder, drain_dead_letters, wait_until
from tests.bus.raw_amqp import BasicProperties, RawAmqp

pytestmark = pytest.mark.integration


@pytest.fixture
def amqp_bus(amqp_url: str) -> Iterator[AmqpBus]:
    bus = AmqpBus(amqp_url, reassembly_timeout=2.0, sweep_interval=3600)
    yield bus
    bus.close()


@pytest.fixture
def topic(amqp_bus: AmqpBus, unique_name: str) -> Iterator[str]:
    amqp_bus.declare(unique_name)
    yield unique_name
    amqp_bus.delete(unique_name)


@pytest.fixture
def raw(amqp_url: str) -> Iterator[RawAmqp]:
    client = RawAmqp(amqp_url)
    yield client
    client.close()


def _orphan_chunk(raw: RawAmqp, topic: str) -> str:
    """Chunk 0 of a 2-chunk set whose chunk 1 never comes (a 1 KiB body)."""
    of = f"orphan-{uuid.uuid4().hex[:8]}"
    raw.basic_publish(
        "fedmq",
        topic,
        b"x" * 1024,
        BasicProperties(
            message_id=f"{of}:c0",
            delivery_mode=2,
            headers={
                HEADER_CHUNK_OF: of,
                HEADER_CHUNK_INDEX: "0",
                HEADER_CHUNK_COUNT: "2",
                HEADER_CHUNK_TOTAL: "2048",
                HEADER_CHUNK_SHA256: "0" * 64,
            },
        ),
    )
    return of


def test_a_delivery_names_the_broker_user_that_published_it(
    amqp_bus: AmqpBus, topic: str, raw: RawAmqp
) -> None:
    # Prepare
    got = Recorder()
    amqp_bus.subscribe(topic, got)

    # Execute: one publish through the bus (stamps its user), one raw without a user-id
    amqp_bus.publish(Message(topic=topic, body=b"stamped", message_id="m1"))
    raw.basic_publish("fedmq", topic, b"bare", BasicProperties(message_id="m2"))

    # Assert
    wait_until(lambda: len(got.deliveries) == 2, 10, "both messages")
    by_id = {d.message_id: d.publisher for d in got.deliveries}
    assert amqp_bus.user_id == "guest"
    assert by_id == {"m1": "guest", "m2": None}


def test_the_broker_refuses_a_publish_that_claims_another_user(
    amqp_bus: AmqpBus, topic: str, raw: RawAmqp
) -> None:
    got = Recorder()
    amqp_bus.subscribe(topic, got)

    with pytest.raises(aiormq.exceptions.AMQPError, match="user_id"):
        raw.basic_publish(
            "fedmq",
            topic,
            b"forged",
            BasicProperties(message_id="forged", user_id="fedmq-10000-gateway"),
        )

    time.sleep(0.5)
    assert got.deliveries == []


def test_memory_bus_deliveries_carry_the_publishing_bus_identity(unique_name: str) -> None:
    gateway = connect(f"memory://fedmq-9999-gateway@{unique_name}")
    anonymous = connect(f"memory://{unique_name}")
    try:
        gateway.declare("t")
        gateway.publish(Message(topic="t", body=b"a", message_id="a"))
        anonymous.publish(Message(topic="t", body=b"b", message_id="b"))
        got = Recorder()
        anonymous.subscribe("t", got)
        wait_until(lambda: len(got.deliveries) == 2, 5, "both")
        assert {d.message_id: d.publisher for d in got.deliveries} == {
            "a": "fedmq-9999-gateway",
            "b": None,
        }
    finally:
        gateway.close()
        anonymous.close()


@pytest.mark.parametrize("prefetch", [1, 4])
def test_orphan_chunks_never_stall_a_prefetch_limited_queue(
    amqp_bus: AmqpBus, topic: str, raw: RawAmqp, prefetch: int
) -> None:
    # Prepare: a consumer with few slots (the RPC servers use 1) and a non-durable chunk store
    got = Recorder()
    amqp_bus.subscribe(topic, got, prefetch=prefetch, max_deliveries=1)
    orphans = {_orphan_chunk(raw, topic) for _ in range(prefetch)}

    # Execute: an ordinary message behind them
    started = time.monotonic()
    amqp_bus.publish(Message(topic=topic, body=b"command", message_id="after-orphans"))

    # Assert: it is handled within seconds, not after the reassembly timeout
    wait_until(lambda: "after-orphans" in got.ids, 5, "the message behind the orphan chunks")
    assert time.monotonic() - started < 5
    assert got.ids == ["after-orphans"]
    # ... and the orphans are not lost: past the timeout the sweeper dead-letters them
    time.sleep(2.1)
    assert amqp_bus.sweep_chunks() == prefetch
    dead = drain_dead_letters(amqp_bus, topic, prefetch)
    assert {d.headers[HEADER_CHUNK_OF] for d in dead} == orphans
    assert all(d.headers[HEADER_DEAD_REASON].startswith("incomplete: 1 of 2") for d in dead)


def test_a_request_behind_an_orphan_chunk_is_answered_at_once(
    amqp_bus: AmqpBus, topic: str, raw: RawAmqp, amqp_url: str
) -> None:
    # Prepare: an RPC-style responder (prefetch 1, one delivery)
    amqp_bus.subscribe(topic, lambda d: amqp_bus.reply(d, b"pong"), prefetch=1, max_deliveries=1)
    _orphan_chunk(raw, topic)
    client: Bus = connect(amqp_url)
    try:
        started = time.monotonic()
        # Execute
        answer = client.request(topic, b"ping", timeout=10)
        # Assert
        assert answer.body == b"pong"
        assert time.monotonic() - started < 3
    finally:
        client.close()
