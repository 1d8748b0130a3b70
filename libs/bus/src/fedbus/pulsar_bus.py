"""pulsar:// and pulsar+ssl:// — Apache Pulsar through pulsar-client.

Topology: a bus topic T is persistent://<tenant>/<namespace>/T (tenant and namespace from the
URL query, default public/default), consumed through one Shared subscription (default
"fedmq") that `declare` creates at the earliest position, so messages published before any
consumer exists are retained. Dead letters go to persistent://<tenant>/<namespace>/<queue>-DLQ
(subscription "fedmq-dlq"), both the adapter's explicit copies (property
x-fedmq-dead-reason) and the client's DeadLetterPolicy backstop.

Fan-out: a fan-out subscription "audit" is a Shared (non-exclusive) subscription named
"fedmq.fanout.audit" on every topic of the namespace whose name matches one of its patterns
(a regex subscription; dead-letter topics, reply topics and fan-out dead-letter topics are
never matched). Each subscription keeps its own backlog, so the copy is the broker's: a publish
is persisted once and nothing waits for the fan-out consumer. Weaker than RabbitMQ: a topic
created after the subscription is joined only when the client's pattern discovery finds it
(`pattern_discovery_period`, seconds), from its earliest retained message.

Semantics: `publish` returns when the broker has persisted the message (producer send);
acks after the handler returns; a failed handler negative-acks (redelivery after
`redelivery_delay`); `msg.redelivery_count()` gives the delivery count. Pulsar cannot tell
that nobody consumes a topic, so an unroutable publish is not detected
(capabilities.detects_unroutable is False). Request/reply uses a per-bus reply topic.
`delete` unsubscribes (dropping the backlog); deleting the topic itself needs the admin API.
The consumer thread, batching, shutdown and request/reply correlation are fedbus.broker_bus's.

Publisher identity: not carried. `Delivery.publisher` is always None (a producer's
authentication role is not stamped on its messages), so the envelope runtime's remote-source
guard is off on pulsar://; Pulsar's own answer would be per-topic produce authorization for
per-service roles (docs/security.md), not built here.

No Pulsar broker can be installed on the project's machines: this adapter's contract tests
run only when PULSAR_URL is set.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pulsar
import structlog

from fedbus.broker_bus import BrokerBus, BrokerConsumer
from fedbus.bus import (
    HEADER_DEAD_REASON,
    HEADER_ORIGINAL_TOPIC,
    BusError,
    Capabilities,
    Delivery,
    Message,
    PublishNotConfirmed,
)
from fedbus.chunk_store import ChunkStore
from fedbus.chunking import DEFAULT_REASSEMBLY_TIMEOUT
from fedbus.fanout import FANOUT_QUEUE_PREFIX, fanout_queue, normalize_patterns, pattern_regex

log = structlog.get_logger("fedbus")

# Pulsar's default maxMessageSize is 5 MiB; leave room for properties.
DEFAULT_PULSAR_FRAME_BYTES = 4 * 1024 * 1024
DLQ_SUFFIX = "-DLQ"
REPLY_TOPIC_PREFIX = "fedmq-reply-"
PROP_MESSAGE_ID = "x-fedmq-message-id"
PROP_REPLY_TO = "x-fedmq-reply-to"
PROP_CORRELATION_ID = "x-fedmq-correlation-id"
_OWN_PROPS = (PROP_MESSAGE_ID, PROP_REPLY_TO, PROP_CORRELATION_ID)


def _properties(message: Message) -> dict[str, str]:
    props = dict(message.headers)
    props[PROP_MESSAGE_ID] = message.message_id
    if message.reply_to is not None:
        props[PROP_REPLY_TO] = message.reply_to
    if message.correlation_id is not None:
        props[PROP_CORRELATION_ID] = message.correlation_id
    return props


def _to_delivery(topic: str, msg: Any) -> Delivery:
    props: dict[str, str] = dict(msg.properties())
    return Delivery(
        topic=topic,
        body=bytes(msg.data()),
        message_id=props.get(PROP_MESSAGE_ID, ""),
        headers={k: v for k, v in props.items() if k not in _OWN_PROPS},
        delivery_count=int(msg.redelivery_count()) + 1,
        reply_to=props.get(PROP_REPLY_TO),
        correlation_id=props.get(PROP_CORRELATION_ID),
    )


def fanout_topics_regex(prefix: str, patterns: Iterable[str]) -> str:
    """The regex subscription of a fan-out: full topic names under `prefix` whose short name
    matches a pattern, leaving out the bus's own dead-letter, reply and fan-out topics."""
    alternatives = "|".join(f"(?:{pattern_regex(p)})" for p in patterns)
    excluded = (
        f"(?!{re.escape(FANOUT_QUEUE_PREFIX)})(?!{re.escape(REPLY_TOPIC_PREFIX)})"
        f"(?!.*{re.escape(DLQ_SUFFIX)}$)"
    )
    return f"{re.escape(prefix)}{excluded}(?:{alternatives})"


class _PulsarConsumer(BrokerConsumer):
    def __init__(self, consumer: Any, queue: str, topic_of: Callable[[Any], str]) -> None:
        self._consumer = consumer
        self._queue = queue
        self._topic_of = topic_of
        self._stopping = threading.Event()

    def _receive(self, timeout_ms: int) -> Any | None:
        try:
            return self._consumer.receive(timeout_millis=timeout_ms)
        except pulsar.Timeout:
            return None

    def fetch(self, max_count: int, wait: float) -> list[Any] | None:
        first: Any = None
        while first is None:
            if self._stopping.is_set():
                return None
            try:
                first = self._receive(200)
            except Exception as exc:
                if self._stopping.is_set():
                    return None
                log.warning("bus_receive_failed", topic=self._queue, error=repr(exc))
        got = [first]
        deadline = time.monotonic() + wait
        while len(got) < max_count:
            # Pulsar has no "only what is already here": 1 ms stands for it.
            remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
            msg = self._receive(remaining_ms)
            if msg is None:
                break
            got.append(msg)
        return got

    def delivery(self, raw: Any) -> Delivery:
        return _to_delivery(self._topic_of(raw), raw)

    def settle(self, settled: list[tuple[Any, bool]]) -> None:
        for msg, ack in settled:
            if ack:
                self._consumer.acknowledge(msg)
            else:
                self._consumer.negative_acknowledge(msg)

    def ack_held(self, raw: Any) -> None:
        # The chunk store is shared and durable per bus config; Pulsar keeps held chunks
        # unacked until the set finishes (see AmqpBus for the same rule).
        try:
            self._consumer.acknowledge(raw)
        except Exception as exc:
            log.info("bus_ack_dropped", topic=self._queue, error=repr(exc))

    def stop(self) -> None:
        self._stopping.set()

    def close(self) -> None:
        # Closing the consumer returns its unacked messages to the subscription.
        self._consumer.close()


class PulsarBus(BrokerBus):
    @classmethod
    def from_url(cls, url: str, **options: Any) -> PulsarBus:
        """pulsar://host:6650?tenant=T&namespace=N (query names the tenant and namespace)."""
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        options.setdefault("tenant", query.get("tenant", "public"))
        options.setdefault("namespace", query.get("namespace", "default"))
        service_url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        return cls(service_url, **options)

    def __init__(
        self,
        service_url: str,
        *,
        tenant: str = "public",
        namespace: str = "default",
        subscription: str = "fedmq",
        max_frame_bytes: int = DEFAULT_PULSAR_FRAME_BYTES,
        broker_delivery_limit: int = 20,
        redelivery_delay: float = 0.5,
        send_timeout: float = 30.0,
        drain_timeout: float = 10.0,
        chunk_store: ChunkStore | None = None,
        reassembly_timeout: float = DEFAULT_REASSEMBLY_TIMEOUT,
        sweep_interval: float | None = None,
        pattern_discovery_period: int = 30,
    ) -> None:
        super().__init__(
            capabilities=Capabilities(
                detects_unroutable=False,
                persistent=True,
                native_delivery_limit=True,
                max_frame_bytes=max_frame_bytes,
            ),
            chunk_store=chunk_store,
            reassembly_timeout=reassembly_timeout,
            sweep_interval=sweep_interval,
            drain_timeout=drain_timeout,
            delivery_limit=broker_delivery_limit,
        )
        self._prefix = f"persistent://{tenant}/{namespace}/"
        self._subscription = subscription
        self._broker_delivery_limit = broker_delivery_limit
        self._redelivery_delay = redelivery_delay
        self._send_timeout_ms = int(send_timeout * 1000)
        self._pattern_discovery_period = pattern_discovery_period
        self._client = pulsar.Client(service_url, operation_timeout_seconds=30)
        self._producers: dict[str, Any] = {}
        self._producers_lock = threading.Lock()
        self._reply_topic = self.full_topic(f"{REPLY_TOPIC_PREFIX}{uuid.uuid4().hex}")
        self._reply_consumer: Any = None
        self._reply_lock = threading.Lock()

    def full_topic(self, topic: str) -> str:
        return (
            topic
            if topic.startswith(("persistent://", "non-persistent://"))
            else self._prefix + topic
        )

    def short_topic(self, full_topic: str) -> str:
        return full_topic.removeprefix(self._prefix)

    def _producer(self, full_topic: str) -> Any:
        with self._producers_lock:
            producer = self._producers.get(full_topic)
            if producer is None:
                producer = self._client.create_producer(
                    full_topic,
                    send_timeout_millis=self._send_timeout_ms,
                    block_if_queue_full=True,
                    batching_enabled=False,
                )
                self._producers[full_topic] = producer
            return producer

    # -- topology ----------------------------------------------------------------------------

    def _dlq_subscription(self) -> str:
        return f"{self._subscription}-dlq"

    def declare(self, topic: str) -> None:
        self._check_open()
        self._check_topic(topic)
        # Creating the durable subscriptions is what makes Pulsar retain messages for them.
        for name, sub in (
            (topic, self._subscription),
            (topic + DLQ_SUFFIX, self._dlq_subscription()),
        ):
            consumer = self._client.subscribe(
                self.full_topic(name),
                sub,
                consumer_type=pulsar.ConsumerType.Shared,
                initial_position=pulsar.InitialPosition.Earliest,
            )
            consumer.close()

    def _fanout_subscribe(self, name: str, patterns: tuple[str, ...], **options: Any) -> Any:
        return self._client.subscribe(
            re.compile(fanout_topics_regex(self._prefix, patterns)),
            fanout_queue(name),
            consumer_type=pulsar.ConsumerType.Shared,
            initial_position=pulsar.InitialPosition.Earliest,
            pattern_auto_discovery_period=self._pattern_discovery_period,
            **options,
        )

    def declare_fanout(self, name: str, patterns: str | Iterable[str]) -> None:
        self._check_open()
        wanted = normalize_patterns(patterns)
        # Subscribing once creates the durable subscription on every matching topic there is.
        self._fanout_subscribe(name, wanted).close()
        dlq = self._client.subscribe(
            self.full_topic(fanout_queue(name) + DLQ_SUFFIX),
            self._dlq_subscription(),
            consumer_type=pulsar.ConsumerType.Shared,
            initial_position=pulsar.InitialPosition.Earliest,
        )
        dlq.close()

    def _unsubscribe(self, full_topic: str, sub: str) -> None:
        try:
            consumer = self._client.subscribe(
                full_topic, sub, consumer_type=pulsar.ConsumerType.Shared
            )
            consumer.unsubscribe()
            consumer.close()
        except Exception as exc:
            log.info("bus_unsubscribe_failed", topic=full_topic, error=repr(exc))

    def delete(self, topic: str) -> None:
        self._check_open()
        self._unsubscribe(self.full_topic(topic), self._subscription)
        self._unsubscribe(self.full_topic(topic + DLQ_SUFFIX), self._dlq_subscription())

    def delete_fanout(self, name: str) -> None:
        """Drops the subscription on the topics its patterns match today (with their backlog)."""
        self._check_open()
        queue = fanout_queue(name)
        try:
            consumer = self._fanout_subscribe(name, ("#",))
            consumer.unsubscribe()
            consumer.close()
        except Exception as exc:
            log.info("bus_unsubscribe_failed", topic=queue, error=repr(exc))
        self._unsubscribe(self.full_topic(queue + DLQ_SUFFIX), self._dlq_subscription())

    # -- primitives --------------------------------------------------------------------------

    def _send_all(self, full_topic_of: Callable[[Message], str], messages: list[Message]) -> None:
        """Send every message asynchronously, then wait for all broker acks (pipelined)."""
        futures: list[Future[None]] = []
        for m in messages:
            done: Future[None] = Future()

            def callback(result: Any, _msg_id: Any, done: Future[None] = done) -> None:
                if result == pulsar.Result.Ok:
                    done.set_result(None)
                else:
                    done.set_exception(PublishNotConfirmed(f"pulsar send failed: {result}"))

            self._producer(full_topic_of(m)).send_async(m.body, callback, properties=_properties(m))
            futures.append(done)
        for f in futures:
            f.result(timeout=self._send_timeout_ms / 1000 + 5)

    def _publish_parts(self, parts: list[Message]) -> None:
        self._send_all(lambda m: self.full_topic(m.topic), parts)

    def _dead_letter(self, queue: str, messages: list[Message]) -> None:
        self._send_all(lambda _m: self.full_topic(queue + DLQ_SUFFIX), messages)

    def _consumer_options(self, queue: str, prefetch: int) -> dict[str, Any]:
        return {
            "consumer_type": pulsar.ConsumerType.Shared,
            "receiver_queue_size": prefetch,
            "negative_ack_redelivery_delay_ms": int(self._redelivery_delay * 1000),
            "initial_position": pulsar.InitialPosition.Earliest,
            "dead_letter_policy": pulsar.ConsumerDeadLetterPolicy(
                max_redeliver_count=self._broker_delivery_limit,
                dead_letter_topic=self.full_topic(queue + DLQ_SUFFIX),
            ),
        }

    def _consume_topic(self, topic: str, prefetch: int) -> BrokerConsumer:
        consumer = self._client.subscribe(
            self.full_topic(topic), self._subscription, **self._consumer_options(topic, prefetch)
        )
        return _PulsarConsumer(consumer, topic, lambda _msg: topic)

    def _consume_fanout(
        self, name: str, patterns: tuple[str, ...], prefetch: int
    ) -> BrokerConsumer:
        queue = fanout_queue(name)
        options = self._consumer_options(queue, prefetch)
        del options["consumer_type"], options["initial_position"]
        consumer = self._fanout_subscribe(name, patterns, **options)
        # A fan-out copy's topic is the topic it was published on.
        return _PulsarConsumer(consumer, queue, lambda msg: self.short_topic(msg.topic_name()))

    def _take_dead_letters(self, queue: str, limit: int) -> list[Delivery]:
        consumer = self._client.subscribe(
            self.full_topic(queue + DLQ_SUFFIX),
            self._dlq_subscription(),
            consumer_type=pulsar.ConsumerType.Shared,
            initial_position=pulsar.InitialPosition.Earliest,
        )
        taken: list[Delivery] = []
        try:
            while len(taken) < limit:
                try:
                    msg = consumer.receive(timeout_millis=300)
                except pulsar.Timeout:
                    break
                delivery = _to_delivery(queue + DLQ_SUFFIX, msg)
                if HEADER_DEAD_REASON not in delivery.headers:
                    # Moved by the client's DeadLetterPolicy (the backstop), not by the adapter.
                    headers = dict(delivery.headers)
                    headers[HEADER_DEAD_REASON] = "broker: delivery limit"
                    headers[HEADER_ORIGINAL_TOPIC] = queue
                    delivery = replace(delivery, headers=headers)
                taken.append(delivery)
                consumer.acknowledge(msg)
        finally:
            consumer.close()
        return taken

    # -- request / reply ---------------------------------------------------------------------

    def _on_reply(self, consumer: Any, msg: Any) -> None:
        consumer.acknowledge(msg)
        self._deliver_reply(_to_delivery(self._reply_topic, msg))

    def _reply_address(self) -> str:
        with self._reply_lock:
            if self._reply_consumer is None:
                self._reply_consumer = self._client.subscribe(
                    self._reply_topic,
                    "fedmq-reply",
                    consumer_type=pulsar.ConsumerType.Exclusive,
                    message_listener=self._on_reply,
                )
        return self._reply_topic

    def _send_reply(self, reply_to: str, reply: Message) -> None:
        self._send_all(lambda m: m.topic, [reply])

    def _disconnect(self) -> None:
        try:
            self._client.close()
        except Exception as exc:
            raise BusError(f"closing the pulsar client failed: {exc}") from exc
