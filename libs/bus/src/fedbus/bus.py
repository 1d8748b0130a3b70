"""The message-bus interface every fedmq service talks through.

One small, synchronous API over several brokers (memory://, amqp://, pulsar://). Adapters own
acks, publisher confirms, retries, chunking and dead-lettering; handlers only ever see a
`Delivery` (bytes plus string headers), never a pika or pulsar object.

Delivery contract (docs/delivery.md has the long form):
- `publish` returns only after the broker confirmed the message (persisted); it raises
  `Unroutable` when nothing would receive it and the backend can tell (`capabilities`).
- A subscription acks a message only after its handler returned. A handler that raises
  `Reject` sends the message to the topic's dead-letter queue with the given reason at once;
  any other exception requeues it, and after `max_deliveries` deliveries the message is
  dead-lettered with the last error as its reason. A consumer that dies before acking gets the
  message redelivered (at-least-once).
- Payloads above the backend's `max_frame_bytes` are chunked transparently (manifest in
  headers, reassembled before the handler runs); a message that can never be reassembled is
  dead-lettered with its reason.
- A request (`reply_to` set) that is dead-lettered -- the handler raised `Reject`, it reached
  the delivery limit, or its chunks are malformed -- is also answered with an empty reply
  carrying `HEADER_DEAD_REASON`; `request` raises `RequestRejected` with that reason, so the
  caller learns at once why instead of waiting for its timeout.
- `Delivery.publisher` is who published the message as the broker vouches for it (amqp://:
  the validated user-id property; memory://: the publishing bus's `identity`), None when the
  broker cannot vouch (pulsar://, or a publisher that did not stamp it). docs/security.md.
- `subscribe_batched` adds an optional fast path: deliveries that are already waiting are
  handed to a `BatchHandler` together (one database commit for all of them, one ack), with the
  per-message handler as the fallback that keeps every promise above per message.
- Fan-out (`declare_fanout`, `subscribe_fanout`): a named, durable subscription gets its own
  copy of every message published on a topic that matches one of its patterns (AMQP topic
  syntax, see fedbus.fanout), besides the topic's own consumers, with the same promises (ack
  after the handler, delivery limit, dead-lettering to the subscription's own dead-letter queue,
  chunked messages reassembled). Publishers never wait for a fan-out consumer.

The adapters share one implementation of the consumer thread, batching, shutdown and
request/reply (fedbus.broker_bus); each supplies only its broker's primitives.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

# Header names the bus itself sets; adapters keep them when relaying.
HEADER_DEAD_REASON = "x-fedmq-dead-reason"
HEADER_ORIGINAL_TOPIC = "x-fedmq-original-topic"


class BusError(Exception):
    """Base class for bus failures a caller can act on."""


class BrokerUnavailable(BusError):
    """The broker could not be reached (connect, or a publish after the retry window)."""


class Unroutable(BusError):
    """The broker could not route a mandatory publish: no queue is bound for the topic."""


class PublishNotConfirmed(BusError):
    """The broker nacked a publish or the confirm did not arrive in time."""


class RequestTimeout(BusError):
    """No reply arrived within the request's timeout."""


class RequestRejected(BusError):
    """The responder dead-lettered the request; `reason` says why (see `Bus.request`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Reject(Exception):
    """Raised by a handler: dead-letter this message now, with `reason`, and do not retry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; callers branch on these, never on the adapter's class."""

    detects_unroutable: bool
    """An unroutable publish raises `Unroutable` (RabbitMQ mandatory flag) instead of vanishing."""
    persistent: bool
    """Messages survive a broker restart once `publish` returned."""
    native_delivery_limit: bool
    """The broker itself counts deliveries and dead-letters past the limit."""
    max_frame_bytes: int
    """Bodies larger than this are chunked by the bus."""


@dataclass(frozen=True)
class Message:
    """One message to publish."""

    topic: str
    body: bytes
    message_id: str
    headers: Mapping[str, str] = field(default_factory=dict)
    reply_to: str | None = None
    correlation_id: str | None = None


@dataclass(frozen=True)
class Delivery:
    """One message as a handler sees it."""

    topic: str
    body: bytes
    message_id: str
    headers: Mapping[str, str]
    delivery_count: int
    """1 on first delivery; grows with each redelivery."""
    reply_to: str | None = None
    correlation_id: str | None = None
    publisher: str | None = None
    """The publisher's identity as the broker vouches for it (amqp://: the user-id property,
    which RabbitMQ checks against the publishing connection's user; memory://: the publishing
    bus's `identity`); None when the broker cannot vouch for one."""


Handler = Callable[[Delivery], None]

BatchHandler = Callable[[Sequence[Delivery]], Sequence[Delivery]]
"""Handles several deliveries as one unit; see `Bus.subscribe_batched`.

Returns the deliveries (the very objects it was given) that it left for the per-message
handler, e.g. ones it could not decode; every other delivery counts as handled and is acked.
Raising means "none of this batch is settled": the bus then runs the per-message handler on
each delivery, so whatever the batch handler did before raising must be safe to do again
(rolled back, or made idempotent by the inbox's done markers)."""


class Subscription(abc.ABC):
    """A running consumer; `cancel` stops it after the in-flight message is finished or requeued."""

    @abc.abstractmethod
    def cancel(self) -> None: ...


class Bus(abc.ABC):
    """The message bus. Topics are durable queues; publishing to a topic delivers to its queue."""

    capabilities: Capabilities

    @abc.abstractmethod
    def declare(self, topic: str) -> None:
        """Create the topic's durable queue and its dead-letter queue if they do not exist."""

    @abc.abstractmethod
    def publish(self, message: Message) -> None:
        """Publish and return once the broker confirmed it (chunked if large)."""

    def publish_many(self, messages: Iterable[Message]) -> None:
        """Publish several messages, waiting for all confirms at the end (batched confirms)."""
        for message in messages:
            self.publish(message)

    @abc.abstractmethod
    def subscribe(
        self, topic: str, handler: Handler, *, prefetch: int = 64, max_deliveries: int = 5
    ) -> Subscription:
        """Consume `topic` on a background thread, acking after `handler` returns."""

    def subscribe_batched(
        self,
        topic: str,
        handler: Handler,
        batch_handler: BatchHandler,
        *,
        batch_size: int = 64,
        batch_wait: float = 0.0,
        prefetch: int = 64,
        max_deliveries: int = 5,
    ) -> Subscription:
        """Consume `topic`, handing deliveries to `batch_handler` in groups.

        A group is every delivery already waiting, up to `batch_size` (never more than
        `prefetch`); with `batch_wait` > 0 a group that is not full waits up to that many
        seconds for more. What the batch handler returns, or every delivery of the group if it
        raises, goes through `handler` one by one with the usual outcomes (Reject, retries, the
        delivery limit), so a poison message costs its group one fallback and is then retried
        and dead-lettered on its own. Chunked (large) messages always go through `handler`.
        A group is acked after the batch handler returned, in delivery order.

        Adapters that cannot batch (this default) consume one delivery at a time with `handler`;
        the outcome is the same, only slower.
        """
        return self.subscribe(topic, handler, prefetch=prefetch, max_deliveries=max_deliveries)

    @abc.abstractmethod
    def request(
        self, topic: str, body: bytes, *, timeout: float, headers: Mapping[str, str] | None = None
    ) -> Delivery:
        """Publish `body` to `topic` and wait for one reply; raises `RequestTimeout`, or
        `RequestRejected` when the responder's bus dead-lettered the request."""

    async def arequest(
        self, topic: str, body: bytes, *, timeout: float, headers: Mapping[str, str] | None = None
    ) -> Delivery:
        """`request` for a caller on an asyncio event loop: the same message, reply and errors,
        awaited. This default runs `request` on a thread of the loop's default executor; the
        broker adapters wait for the reply on the caller's loop itself (no thread per call)."""
        return await asyncio.to_thread(self.request, topic, body, timeout=timeout, headers=headers)

    @abc.abstractmethod
    def reply(
        self, request: Delivery, body: bytes, *, headers: Mapping[str, str] | None = None
    ) -> None:
        """Answer a delivery that came from `request`."""

    @abc.abstractmethod
    def dead_letters(self, topic: str, *, limit: int = 100) -> list[Delivery]:
        """Take up to `limit` messages off `topic`'s dead-letter queue (for operators and tests).

        Each carries `HEADER_DEAD_REASON` and `HEADER_ORIGINAL_TOPIC`."""

    def delete(self, topic: str) -> None:
        """Remove the topic's queue and dead-letter queue with their messages (tests, operators)."""
        raise NotImplementedError(f"{type(self).__name__} cannot delete topics")

    # -- fan-out -----------------------------------------------------------------------------

    @abc.abstractmethod
    def declare_fanout(self, name: str, patterns: str | Iterable[str]) -> None:
        """Create the durable fan-out subscription `name` if it does not exist, and have it
        receive a copy of every message published from now on to a topic matching one of
        `patterns` ("out.*", "svc.#"; a single string is one pattern). Patterns add up: declaring
        again with other patterns keeps the old ones (`delete_fanout` starts afresh).

        Copies are kept while no consumer runs (durably where `capabilities.persistent`) and
        never hold up a publish. Only topics that have their own queue (`declare`) are
        published to at all; a fan-out subscription does not make a topic routable."""

    @abc.abstractmethod
    def subscribe_fanout(
        self,
        name: str,
        patterns: str | Iterable[str],
        handler: Handler,
        *,
        prefetch: int = 64,
        max_deliveries: int = 5,
        batch_handler: BatchHandler | None = None,
        batch_size: int = 64,
        batch_wait: float = 0.0,
    ) -> Subscription:
        """Declare the fan-out subscription (as `declare_fanout`) and consume it on a background
        thread like `subscribe` (or `subscribe_batched` when `batch_handler` is given).

        Each delivery's `topic` is the topic the message was published on. Several consumers of
        one name share its copies (each copy goes to one of them); a handler failure, `Reject`
        or the delivery limit dead-letters to the subscription's own dead-letter queue
        (`fanout_dead_letters`), never to the topic's."""

    @abc.abstractmethod
    def fanout_dead_letters(self, name: str, *, limit: int = 100) -> list[Delivery]:
        """Take up to `limit` messages off the fan-out subscription's dead-letter queue; each
        carries `HEADER_DEAD_REASON` and, as `HEADER_ORIGINAL_TOPIC`, its published topic."""

    def delete_fanout(self, name: str) -> None:
        """Remove the fan-out subscription with its queue, dead-letter queue and patterns."""
        raise NotImplementedError(f"{type(self).__name__} cannot delete fan-out subscriptions")

    @abc.abstractmethod
    def close(self) -> None:
        """Cancel subscriptions (in-flight messages finish or are requeued) and disconnect."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
