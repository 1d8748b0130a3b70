"""amqp:// transient topics (online serving's request/reply, fedschemas.topics.TRANSIENT): a
non-durable classic queue, the same request/reply and dead-lettering as any topic, and an
existing durable queue of the same name kept as it is (issue #15)."""

from __future__ import annotations

import aiormq
import pytest
from fedbus import Delivery, Reject, RequestRejected, connect
from fedschemas import topics

from tests.bus.raw_amqp import RawAmqp
from tests.bus.test_amqp_bus import TOPIC_QUEUE_ARGUMENTS


def test_serving_topics_are_transient_by_default(amqp_url: str) -> None:
    bus = connect(amqp_url)
    try:
        assert topics.SERVING in bus.transient_topics  # type: ignore[attr-defined]
        assert topics.GATEWAY_RPC in bus.transient_topics  # type: ignore[attr-defined]
        assert topics.WORKER not in bus.transient_topics  # type: ignore[attr-defined]
    finally:
        bus.close()


def test_transient_topic_is_a_classic_in_memory_queue_that_answers_requests(
    amqp_url: str, unique_name: str
) -> None:
    bus = connect(amqp_url, transient_topics=[unique_name])
    rabbit = RawAmqp(amqp_url)
    try:

        def echo(delivery: Delivery) -> None:
            if delivery.body == b"poison":
                raise Reject("not for me")
            bus.reply(delivery, delivery.body.upper())

        bus.declare(unique_name)
        bus.subscribe(unique_name, echo, prefetch=2)
        assert bus.request(unique_name, b"ping", timeout=5).body == b"PING"
        with pytest.raises(RequestRejected, match="not for me"):
            bus.request(unique_name, b"poison", timeout=5)
        assert [d.body for d in bus.dead_letters(unique_name)] == [b"poison"]
        # The exact arguments the adapter used: a durable or quorum re-declare is refused.
        rabbit.queue_declare(
            unique_name,
            durable=False,
            arguments={"x-queue-type": "classic", "x-dead-letter-exchange": "fedmq.dlx"},
        )
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
            rabbit.queue_declare(unique_name, durable=True, arguments=TOPIC_QUEUE_ARGUMENTS)
    finally:
        bus.delete(unique_name)
        bus.close()
        rabbit.close()


def test_existing_durable_queue_of_a_transient_topic_is_kept(
    amqp_url: str, unique_name: str
) -> None:
    durable = connect(amqp_url)
    durable.declare(unique_name)  # a quorum queue, as before the topic became transient
    bus = connect(amqp_url, transient_topics=[unique_name])
    rabbit = RawAmqp(amqp_url)
    try:
        bus.subscribe(unique_name, lambda d: bus.reply(d, b"still served"), prefetch=2)
        assert bus.request(unique_name, b"x", timeout=5).body == b"still served"
        rabbit.queue_declare(unique_name, durable=True, arguments=TOPIC_QUEUE_ARGUMENTS)
    finally:
        durable.delete(unique_name)
        durable.close()
        bus.close()
        rabbit.close()


def test_a_transient_queue_another_connection_made_is_back_after_the_broker_loses_it(
    amqp_url: str, unique_name: str
) -> None:
    # Prepare: a requester declares the topic first (as the scheduler does before the gateway
    # subscribes), so the subscriber finds the queue already there
    from tests.bus.test_amqp_bus import _close_connection_on_broker
    from tests.polling import wait_for

    requester = connect(amqp_url, transient_topics=[unique_name])
    requester.declare(unique_name)
    bus = connect(amqp_url, transient_topics=[unique_name])
    try:
        bus.subscribe(unique_name, lambda d: bus.reply(d, b"served"), prefetch=2)
        assert requester.request(unique_name, b"x", timeout=5).body == b"served"

        # Execute: what a broker restart does to a non-durable queue and to the connection
        requester.delete(unique_name)
        _close_connection_on_broker(bus.connection_name)  # type: ignore[attr-defined]

        # Assert: the reconnected subscriber declared the queue again and answers (a passive
        # re-declare would have failed NOT_FOUND and closed its channel for good)
        def answered() -> bool:
            try:
                return requester.request(unique_name, b"y", timeout=1).body == b"served"
            except Exception:
                return False

        wait_for(answered, timeout=30, what="an answer after the reconnect")
    finally:
        # The subscriber first (its reconnected channel may still be replaying declarations:
        # a delete racing that replay was refused INTERNAL_ERROR once), then the queue
        bus.close()
        requester.delete(unique_name)
        requester.close()
