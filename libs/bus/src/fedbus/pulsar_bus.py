"""pulsar:// and pulsar+ssl:// — Apache Pulsar through pulsar-client.

Topology: a bus topic T is persistent://<tenant>/<namespace>/T (tenant and namespace from the
URL query, default public/default), consumed through one Shared subscription (default
"fedmq") that `declare` creates at the earliest position, so messages published before any
consumer exists are retained. Dead letters go to persistent://<tenant>/<namespace>/T-DLQ
(subscription "fedmq-dlq"), both the adapter's explicit copies (property
x-fedmq-dead-reason) and the client's DeadLetterPolicy backstop.

Semantics: `publish` returns when the broker has persisted the message (producer send);
acks after the handler returns; a failed handler negative-acks (redelivery after
`redelivery_delay`); `msg.redelivery_count()` gives the delivery count. Pulsar cannot tell
that nobody consumes a topic, so an unroutable publish is not detected
(capabilities.detects_unroutable is False). Request/reply uses a per-bus reply topic.
`delete` unsubscribes (dropping the backlog); deleting the topic itself needs the admin API.

No Pulsar broker can be installed on the project's machines: this adapter's contract tests
run only when PULSAR_URL is set.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pulsar
import structlog

from fedbus.bus import (
    HEADER_DEAD_REASON,
    HEADER_ORIGINAL_TOPIC,
    Bus,
    BusError,
    Capabilities,
    Delivery,
    Handler,
    Message,
    PublishNotConfirmed,
    RequestTimeout,
    Subscription,
)
from fedbus.chunk_store import ChunkStore
from fedbus.chunking import (
    DEFAULT_REASSEMBLY_TIMEOUT,
    ChunkSweeper,
    Reassembler,
    regroup_dead_letters,
    split,
)
from fedbus.dispatch import settle
from fedbus.in_memory_chunk_store import InMemoryChunkStore

log = structlog.get_logger("fedbus")

# Pulsar's default maxMessageSize is 5 MiB; leave room for properties.
DEFAULT_PULSAR_FRAME_BYTES = 4 * 1024 * 1024
DLQ_SUFFIX = "-DLQ"
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


class _PulsarSubscription(Subscription):
    def __init__(
        self, bus: PulsarBus, topic: str, handler: Handler, prefetch: int, max_deliveries: int
    ) -> None:
        self._bus = bus
        self.topic = topic
        self._handler = handler
        self._max_deliveries = max_deliveries
        self._consumer = bus._client.subscribe(
            bus.full_topic(topic),
            bus._subscription,
            consumer_type=pulsar.ConsumerType.Shared,
            receiver_queue_size=prefetch,
            negative_ack_redelivery_delay_ms=int(bus._redelivery_delay * 1000),
            initial_position=pulsar.InitialPosition.Earliest,
            dead_letter_policy=pulsar.ConsumerDeadLetterPolicy(
                max_redeliver_count=bus._broker_delivery_limit,
                dead_letter_topic=bus.full_topic(topic + DLQ_SUFFIX),
            ),
        )
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"fedbus-pulsar-{topic}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                msg = self._consumer.receive(timeout_millis=200)
            except pulsar.Timeout:
                continue
            except Exception as exc:
                if self._stopping.is_set():
                    return
                log.warning("bus_receive_failed", topic=self.topic, error=repr(exc))
                continue
            self._process(msg)

    def _process(self, msg: Any) -> None:
        delivery = _to_delivery(self.topic, msg)
        try:
            settlement = settle(
                delivery,
                self._handler,
                max_deliveries=self._max_deliveries,
                reassembler=self._bus._reassembler,
                max_frame_bytes=self._bus.capabilities.max_frame_bytes,
                dead_letter=self._bus._dead_letter,
            )
        except Exception as exc:
            log.error("bus_settle_failed", topic=self.topic, error=f"{type(exc).__name__}: {exc}")
            self._consumer.negative_acknowledge(msg)
            return
        if settlement.action == "hold":
            # The chunk store is shared and durable per bus config; Pulsar keeps held chunks
            # unacked until the set finishes (see AmqpBus for the same rule).
            assert settlement.chunk_set is not None
            self._bus._hold(settlement.chunk_set, self._consumer, msg)
            return
        if settlement.action == "ack":
            self._consumer.acknowledge(msg)
        else:
            self._consumer.negative_acknowledge(msg)
        if settlement.chunk_set is not None:
            self._bus._release(settlement.chunk_set)

    def cancel(self, drain_timeout: float | None = None) -> None:
        timeout = self._bus._drain_timeout if drain_timeout is None else drain_timeout
        self._stopping.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        # Closing the consumer returns its unacked messages to the subscription.
        try:
            self._consumer.close()
        except Exception as exc:
            log.info("bus_consumer_close_failed", topic=self.topic, error=repr(exc))


class PulsarBus(Bus):
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
    ) -> None:
        self._prefix = f"persistent://{tenant}/{namespace}/"
        self._subscription = subscription
        self._broker_delivery_limit = broker_delivery_limit
        self._redelivery_delay = redelivery_delay
        self._send_timeout_ms = int(send_timeout * 1000)
        self._drain_timeout = drain_timeout
        self.capabilities = Capabilities(
            detects_unroutable=False,
            persistent=True,
            native_delivery_limit=True,
            max_frame_bytes=max_frame_bytes,
        )
        self._client = pulsar.Client(service_url, operation_timeout_seconds=30)
        self._producers: dict[str, Any] = {}
        self._producers_lock = threading.Lock()
        self._chunk_store = chunk_store if chunk_store is not None else InMemoryChunkStore()
        self._reassembler = Reassembler(self._chunk_store)
        self._sweeper = ChunkSweeper(
            self._chunk_store,
            self._dead_letter,
            reassembly_timeout=reassembly_timeout,
            interval=sweep_interval,
            on_finished=self._release,
        )
        self._held: dict[tuple[str, str], list[tuple[Any, Any]]] = {}
        self._held_lock = threading.Lock()
        self._subscriptions: list[_PulsarSubscription] = []
        self._reply_topic = self.full_topic(f"fedmq-reply-{uuid.uuid4().hex}")
        self._reply_consumer: Any = None
        self._pending: dict[str, Future[Delivery]] = {}
        self._pending_lock = threading.Lock()
        self._closed = False

    def full_topic(self, topic: str) -> str:
        return (
            topic
            if topic.startswith(("persistent://", "non-persistent://"))
            else self._prefix + topic
        )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("bus is closed")

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

    def declare(self, topic: str) -> None:
        self._check_open()
        # Creating the durable subscriptions is what makes Pulsar retain messages for them.
        for name, sub in (
            (topic, self._subscription),
            (topic + DLQ_SUFFIX, f"{self._subscription}-dlq"),
        ):
            consumer = self._client.subscribe(
                self.full_topic(name),
                sub,
                consumer_type=pulsar.ConsumerType.Shared,
                initial_position=pulsar.InitialPosition.Earliest,
            )
            consumer.close()

    def delete(self, topic: str) -> None:
        self._check_open()
        for name, sub in (
            (topic, self._subscription),
            (topic + DLQ_SUFFIX, f"{self._subscription}-dlq"),
        ):
            try:
                consumer = self._client.subscribe(
                    self.full_topic(name), sub, consumer_type=pulsar.ConsumerType.Shared
                )
                consumer.unsubscribe()
                consumer.close()
            except Exception as exc:
                log.info("bus_unsubscribe_failed", topic=name, error=repr(exc))

    def _send_all(self, full_topic_of: Any, messages: list[Message]) -> None:
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

    def publish(self, message: Message) -> None:
        self._check_open()
        parts = split(message, self.capabilities.max_frame_bytes)
        self._send_all(lambda m: self.full_topic(m.topic), parts)

    def publish_many(self, messages: Iterable[Message]) -> None:
        self._check_open()
        parts: list[Message] = []
        for m in messages:
            parts.extend(split(m, self.capabilities.max_frame_bytes))
        self._send_all(lambda m: self.full_topic(m.topic), parts)

    def _dead_letter(self, topic: str, messages: list[Message]) -> None:
        self._send_all(lambda _m: self.full_topic(topic + DLQ_SUFFIX), messages)

    def _hold(self, info: Any, consumer: Any, msg: Any) -> None:
        with self._held_lock:
            self._held.setdefault((info.topic, info.message_id), []).append((consumer, msg))

    def _release(self, info: Any) -> None:
        with self._held_lock:
            held = self._held.pop((info.topic, info.message_id), [])
        for consumer, msg in held:
            try:
                consumer.acknowledge(msg)
            except Exception as exc:
                log.info("bus_ack_dropped", topic=info.topic, error=repr(exc))

    def subscribe(
        self, topic: str, handler: Handler, *, prefetch: int = 64, max_deliveries: int = 5
    ) -> Subscription:
        self._check_open()
        if not 1 <= max_deliveries < self._broker_delivery_limit:
            raise ValueError(f"max_deliveries must be in [1, {self._broker_delivery_limit})")
        sub = _PulsarSubscription(self, topic, handler, prefetch, max_deliveries)
        self._subscriptions.append(sub)
        self._sweeper.start()
        return sub

    def _on_reply(self, consumer: Any, msg: Any) -> None:
        consumer.acknowledge(msg)
        delivery = _to_delivery(self._reply_topic, msg)
        with self._pending_lock:
            future = self._pending.pop(delivery.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(delivery)

    def request(
        self, topic: str, body: bytes, *, timeout: float, headers: Mapping[str, str] | None = None
    ) -> Delivery:
        self._check_open()
        with self._pending_lock:
            if self._reply_consumer is None:
                self._reply_consumer = self._client.subscribe(
                    self._reply_topic,
                    "fedmq-reply",
                    consumer_type=pulsar.ConsumerType.Exclusive,
                    message_listener=self._on_reply,
                )
        correlation_id = uuid.uuid4().hex
        future: Future[Delivery] = Future()
        with self._pending_lock:
            self._pending[correlation_id] = future
        try:
            self.publish(
                Message(
                    topic=topic,
                    body=body,
                    message_id=correlation_id,
                    headers=dict(headers or {}),
                    reply_to=self._reply_topic,
                    correlation_id=correlation_id,
                )
            )
            try:
                return future.result(timeout=timeout)
            except TimeoutError:
                raise RequestTimeout(f"no reply on {topic!r} within {timeout} s") from None
        finally:
            with self._pending_lock:
                self._pending.pop(correlation_id, None)

    def reply(
        self, request: Delivery, body: bytes, *, headers: Mapping[str, str] | None = None
    ) -> None:
        self._check_open()
        if request.reply_to is None:
            raise ValueError("the delivery carries no reply_to: it did not come from request()")
        if len(body) > self.capabilities.max_frame_bytes:
            raise ValueError("replies are not chunked: keep them under max_frame_bytes")
        reply = Message(
            topic=request.reply_to,
            body=body,
            message_id=uuid.uuid4().hex,
            headers=dict(headers or {}),
            correlation_id=request.correlation_id,
        )
        self._send_all(lambda m: m.topic, [reply])

    def dead_letters(self, topic: str, *, limit: int = 100) -> list[Delivery]:
        self._check_open()
        consumer = self._client.subscribe(
            self.full_topic(topic + DLQ_SUFFIX),
            f"{self._subscription}-dlq",
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
                delivery = _to_delivery(topic + DLQ_SUFFIX, msg)
                if HEADER_DEAD_REASON not in delivery.headers:
                    # Moved by the client's DeadLetterPolicy (the backstop), not by the adapter.
                    headers = dict(delivery.headers)
                    headers[HEADER_DEAD_REASON] = "broker: delivery limit"
                    headers[HEADER_ORIGINAL_TOPIC] = topic
                    delivery = replace(delivery, headers=headers)
                taken.append(delivery)
                consumer.acknowledge(msg)
        finally:
            consumer.close()
        return regroup_dead_letters(taken)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sweeper.stop()
        for sub in self._subscriptions:
            sub.cancel()
        try:
            self._client.close()
        except Exception as exc:
            raise BusError(f"closing the pulsar client failed: {exc}") from exc
