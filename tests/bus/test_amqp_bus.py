"""amqp:// passes the bus contract against the real RabbitMQ, plus RabbitMQ-only promises.

Never skipped: the `amqp_url` fixture fails the test when RabbitMQ is not reachable. Every
topic a test declares is deleted (queue and DLQ) at teardown: tests share the default vhost.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fedbus import (
    HEADER_DEAD_REASON,
    HEADER_ORIGINAL_TOPIC,
    BrokerUnavailable,
    Bus,
    BusError,
    Delivery,
    Message,
    connect,
)
from fedbus.sql_chunk_store import SqlChunkStore

from tests.bus.contract import (
    BusContract,
    ConnectBus,
    Recorder,
    drain_dead_letters,
    drain_fanout_dead_letters,
    kill_subprocess_consumer_mid_handler,
    wait_until,
)
from tests.bus.raw_amqp import RawAmqp

TOPIC_QUEUE_ARGUMENTS: dict[str, Any] = {
    "x-queue-type": "quorum",
    "x-delivery-limit": 20,
    "x-dead-letter-exchange": "fedmq.dlx",
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}
"""The arguments the adapter declares a topic's (and a fan-out subscription's) queue with."""


class TestAmqpBus(BusContract):
    @pytest.fixture
    def bus_url(self, amqp_url: str) -> str:
        return amqp_url

    def kill_consumer_mid_handler(self, bus_url: str, connect_bus: ConnectBus, topic: str) -> None:
        kill_subprocess_consumer_mid_handler(bus_url, topic)


class TestAmqpBusWithSqlChunkStore(TestAmqpBus):
    """The same contract with a durable, shared chunk store: chunks are acked once stored."""

    @pytest.fixture
    def bus_options(self, tmp_path: Path) -> Iterator[dict[str, Any]]:
        store = SqlChunkStore(f"sqlite:///{tmp_path / 'chunks.db'}")
        yield {"chunk_store": store}
        store.close()


def test_chunks_spread_over_two_replicas_meet_in_the_shared_postgres_store(
    amqp_url: str, pg_url: str, unique_name: str
) -> None:
    store = SqlChunkStore(pg_url)
    replicas = [connect(amqp_url, max_frame_bytes=1024, chunk_store=store) for _ in range(2)]
    replicas[0].declare(unique_name)
    try:
        got = Recorder()
        # prefetch 1 on both: the broker alternates chunks between the two replicas.
        for bus in replicas:
            bus.subscribe(unique_name, got, prefetch=1)
        body = os.urandom(40 * 1024)

        replicas[0].publish(Message(unique_name, body, "m-spread"))

        wait_until(lambda: len(got.deliveries) >= 1, timeout=30, what="the reassembled message")
        assert got.deliveries[0].body == body
        assert got.deliveries[0].message_id == "m-spread"
        # finish() runs right after the handler returns: the stored chunks go, then the ack.
        wait_until(lambda: store.load(unique_name, "m-spread") == [], what="chunks deleted")
        assert replicas[0].dead_letters(unique_name) == []
    finally:
        replicas[0].delete(unique_name)
        for bus in replicas:
            bus.close()
        store.close()


@pytest.fixture
def rabbit(amqp_url: str) -> Iterator[RawAmqp]:
    """A plain AMQP client to inspect what the adapter built on the broker."""
    connection = RawAmqp(amqp_url)
    yield connection
    connection.close()


@pytest.fixture
def amqp_bus(amqp_url: str) -> Iterator[Bus]:
    bus = connect(amqp_url)
    yield bus
    bus.close()


def test_topic_is_a_durable_quorum_queue_with_delivery_limit_and_dead_letter_exchange(
    amqp_bus: Bus, unique_name: str, rabbit: RawAmqp
) -> None:
    amqp_bus.declare(unique_name)
    try:
        channel = rabbit.channel()
        # Re-declaring with exactly these arguments succeeds only if the queue has them:
        # RabbitMQ closes the channel with PRECONDITION_FAILED on any difference.
        channel.queue_declare(
            unique_name,
            durable=True,
            arguments=TOPIC_QUEUE_ARGUMENTS,
        )
        channel.queue_declare(
            unique_name + ".dlq", durable=True, arguments={"x-queue-type": "quorum"}
        )
        channel.basic_publish("fedmq", unique_name, b"via a plain client")
        time.sleep(0.2)
        _method, _props, body = channel.basic_get(unique_name, auto_ack=True)
        assert body == b"via a plain client"
    finally:
        amqp_bus.delete(unique_name)


def test_published_message_is_persistent_on_the_broker(
    amqp_bus: Bus, unique_name: str, rabbit: RawAmqp
) -> None:
    amqp_bus.declare(unique_name)
    try:
        amqp_bus.publish(Message(unique_name, b"keep me", "m-1", headers={"x-app": "v"}))

        _method, props, body = rabbit.channel().basic_get(unique_name, auto_ack=True)

        assert body == b"keep me"
        assert props.delivery_mode == 2
        assert props.message_id == "m-1"
        assert props.headers["x-app"] == "v"
    finally:
        amqp_bus.delete(unique_name)


def requeue_unacked(rabbit: RawAmqp, queue: str, times: int = 3) -> None:
    """Get `queue`'s message and put it back unacked, `times` times (as that many consumers
    dying with it would: each counts toward the broker's x-delivery-limit)."""
    for _ in range(times):
        method = None
        deadline = time.monotonic() + 10
        while method is None and time.monotonic() < deadline:
            method, _props, _body = rabbit.basic_get(queue, auto_ack=False)
        if method is None:
            break
        rabbit.basic_nack(method.delivery_tag, requeue=True)


def test_broker_delivery_limit_dead_letters_when_consumers_keep_dying(
    amqp_url: str, unique_name: str, rabbit: RawAmqp
) -> None:
    # The backstop for consumers that die before they can count: the broker's own
    # x-delivery-limit moves the message to the DLQ (reason from x-death).
    bus = connect(amqp_url, broker_delivery_limit=2)
    bus.declare(unique_name)
    try:
        bus.publish(Message(unique_name, b"killer", "m-killer"))
        requeue_unacked(rabbit.channel(), unique_name)

        dead = drain_dead_letters(bus, unique_name, 1)

        assert dead[0].message_id == "m-killer"
        assert dead[0].headers[HEADER_DEAD_REASON] == "broker: delivery_limit"
    finally:
        bus.delete(unique_name)
        bus.close()


def test_fanout_subscription_is_a_quorum_queue_fed_through_the_topic_exchange(
    amqp_bus: Bus, unique_name: str, rabbit: RawAmqp
) -> None:
    topic, name = f"{unique_name}.out.p1", f"{unique_name}-audit"
    amqp_bus.declare(topic)
    amqp_bus.declare_fanout(name, f"{unique_name}.out.*")
    try:
        queue = "fedmq.fanout." + name
        # Re-declaring with exactly these arguments succeeds only if the queue has them.
        rabbit.queue_declare(
            queue,
            durable=True,
            arguments={**TOPIC_QUEUE_ARGUMENTS, "x-dead-letter-routing-key": queue},
        )
        rabbit.queue_declare(queue + ".dlq", durable=True, arguments={"x-queue-type": "quorum"})

        # A plain publish to the main exchange reaches both the topic and the subscription.
        rabbit.basic_publish("fedmq", topic, b"via a plain client")
        time.sleep(0.2)

        assert rabbit.basic_get(queue, auto_ack=True)[2] == b"via a plain client"
        assert rabbit.basic_get(topic, auto_ack=True)[2] == b"via a plain client"
    finally:
        amqp_bus.delete_fanout(name)
        amqp_bus.delete(topic)


def test_broker_backstop_dead_letters_a_fanout_copy_to_the_subscriptions_own_queue(
    amqp_url: str, unique_name: str, rabbit: RawAmqp
) -> None:
    topic, name = f"{unique_name}.out.p1", f"{unique_name}-audit"
    bus = connect(amqp_url, broker_delivery_limit=2)
    bus.declare(topic)
    bus.declare_fanout(name, topic)
    try:
        bus.publish(Message(topic, b"killer", "m-killer"))
        requeue_unacked(rabbit, "fedmq.fanout." + name)

        dead = drain_fanout_dead_letters(bus, name, 1)

        assert dead[0].message_id == "m-killer"
        assert dead[0].headers[HEADER_DEAD_REASON] == "broker: delivery_limit"
        assert dead[0].headers[HEADER_ORIGINAL_TOPIC] == topic
        assert bus.dead_letters(topic) == []
        assert rabbit.basic_get(topic, auto_ack=True)[2] == b"killer"
    finally:
        bus.delete_fanout(name)
        bus.delete(topic)
        bus.close()


def test_max_deliveries_must_stay_below_the_broker_backstop(
    amqp_bus: Bus, unique_name: str
) -> None:
    amqp_bus.declare(unique_name)
    try:
        with pytest.raises(ValueError, match="max_deliveries"):
            amqp_bus.subscribe(unique_name, Recorder(), max_deliveries=20)
    finally:
        amqp_bus.delete(unique_name)


def test_handler_sees_only_fedbus_types(amqp_bus: Bus, unique_name: str) -> None:
    amqp_bus.declare(unique_name)
    try:
        got = Recorder()
        amqp_bus.subscribe(unique_name, got)
        amqp_bus.publish(Message(unique_name, b"x", "m-1", headers={"x-a": "1"}))
        wait_until(lambda: len(got.deliveries) == 1)

        d: Any = got.deliveries[0]

        assert type(d.body) is bytes
        assert all(type(k) is str and type(v) is str for k, v in d.headers.items())
        assert "x-delivery-count" not in d.headers
    finally:
        amqp_bus.delete(unique_name)


def _close_connection_on_broker(connection_name: str) -> None:
    """Have RabbitMQ itself drop the client's connection (as a broker restart or a cut link)."""
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    pids = [line.split("\t")[0] for line in listing.splitlines() if connection_name in line]
    assert pids, f"connection {connection_name} not found on the broker"
    for pid in pids:
        subprocess.run(
            ["rabbitmqctl", "-q", "close_connection", pid, "fedmq test: simulated outage"],
            check=True,
            timeout=60,
            capture_output=True,
        )


@pytest.mark.slow
def test_bus_reconnects_and_resumes_after_the_broker_drops_its_connection(
    amqp_url: str, unique_name: str
) -> None:
    bus = connect(amqp_url)
    bus.declare(unique_name)
    try:
        got = Recorder()
        bus.subscribe(unique_name, got)
        bus.publish(Message(unique_name, b"before", "m-before"))
        wait_until(lambda: got.ids == ["m-before"], what="the first delivery")

        _close_connection_on_broker(bus.connection_name)  # type: ignore[attr-defined]
        bus.publish(Message(unique_name, b"after", "m-after"))

        wait_until(lambda: "m-after" in got.ids, timeout=30, what="delivery after reconnect")
    finally:
        bus.delete(unique_name)
        bus.close()


def test_unreachable_broker_raises_broker_unavailable_not_a_client_library_error() -> None:
    with pytest.raises(BrokerUnavailable, match="cannot connect"):
        connect("amqp://guest:guest@127.0.0.1:1/", connect_timeout=1, connect_attempts=2)


def test_delivery_limit_holds_even_when_the_broker_does_not_count_requeues(
    amqp_bus: Bus, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulate a broker that only sets the redelivered flag (no x-delivery-count growth).
    import fedbus.amqp_bus

    monkeypatch.setattr(fedbus.amqp_bus, "_delivery_count", lambda m: 2 if m.redelivered else 1)
    amqp_bus.declare(unique_name)
    try:

        def crash(delivery: Delivery) -> None:
            raise RuntimeError("still broken")

        got = Recorder(crash)
        amqp_bus.subscribe(unique_name, got, max_deliveries=4)

        amqp_bus.publish(Message(unique_name, b"x", "m-uncounted"))

        dead = drain_dead_letters(amqp_bus, unique_name, 1, timeout=30)
        assert [d.delivery_count for d in got.deliveries] == [1, 2, 3, 4]
        assert dead[0].headers[HEADER_DEAD_REASON].startswith("delivery limit (4) reached")
    finally:
        amqp_bus.delete(unique_name)


def test_requests_are_answered_again_after_the_broker_drops_the_requesters_connection(
    amqp_url: str, unique_name: str
) -> None:
    # Prepare: a responder, and a requester whose reply channel is open (one request answered)
    server = connect(amqp_url)
    client = connect(amqp_url)
    server.declare(unique_name)
    try:
        server.subscribe(unique_name, lambda d: server.reply(d, d.body.upper()))
        assert client.request(unique_name, b"before", timeout=10).body == b"BEFORE"

        # Execute: the broker drops the requester's connection (its direct reply-to consumer
        # goes with it; the robust connection does not restore that one)
        _close_connection_on_broker(client.connection_name)  # type: ignore[attr-defined]

        # Assert: a request after the reconnect opens a new reply channel and is answered,
        # from a thread and from an event loop
        def answered() -> bool:
            try:
                return client.request(unique_name, b"after", timeout=2).body == b"AFTER"
            except BusError:
                return False

        wait_until(answered, timeout=30, what="an answer after the reconnect")
        reply = asyncio.run(client.arequest(unique_name, b"awaited", timeout=10))
        assert reply.body == b"AWAITED"
    finally:
        server.delete(unique_name)
        client.close()
        server.close()
