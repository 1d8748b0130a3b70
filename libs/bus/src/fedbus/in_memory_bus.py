"""memory:// — an in-process broker: the embedded default and the unit-test backend.

Every `InMemoryBus` connected with the same URL authority (memory://party-9999) in one process
shares one broker, so several parties in one process each get their own. It keeps the same
contract as the real adapters: unroutable publishes raise, handlers ack by returning,
`Reject` and the delivery limit dead-letter to "<queue>.dlq" with a reason, large bodies are
chunked and reassembled, request/reply works, fan-out subscriptions get a copy of every
message on a matching topic, and a cancelled or closed consumer's in-flight message is
requeued with a higher delivery count. Nothing survives the process (capabilities.persistent is
False). Consumers take one message at a time (prefetch 1), or with `subscribe_batched` up to
`batch_size` waiting messages at once. A bus may carry an `identity` (memory://USER@NAME or
the `identity` option): its messages' `Delivery.publisher` is that identity, which the process
vouches for itself (in-process, every publisher is trusted code); None without one. The
consumer thread, batching, shutdown and request/reply live in `fedbus.broker_bus`; this module
is the broker.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog

from fedbus.broker_bus import BrokerBus, BrokerConsumer
from fedbus.bus import Capabilities, Delivery, Message, Unroutable
from fedbus.chunking import DEFAULT_MAX_FRAME_BYTES, DEFAULT_REASSEMBLY_TIMEOUT
from fedbus.fanout import fanout_queue, matches, normalize_patterns
from fedbus.in_memory_chunk_store import InMemoryChunkStore

log = structlog.get_logger("fedbus")

DLQ_SUFFIX = ".dlq"


@dataclass
class _Entry:
    message: Message
    delivery_count: int
    queue: str
    settled: bool = False
    publisher: str | None = None


class _Broker:
    """The shared state behind one memory:// authority; guarded by `cond`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cond = threading.Condition()
        self.queues: dict[str, deque[_Entry]] = {}
        # fan-out subscription name -> its topic patterns (its queue: fanout_queue(name))
        self.fanouts: dict[str, tuple[str, ...]] = {}
        self.replies: dict[str, Callable[[Delivery], None]] = {}
        self.chunk_store = InMemoryChunkStore(durable=True)
        self.sweep_lock = threading.Lock()

    def enqueue(self, messages: Iterable[Message], publisher: str | None = None) -> None:
        with self.cond:
            for m in messages:
                if m.topic not in self.queues:
                    raise Unroutable(
                        f"no queue bound for topic {m.topic!r} on memory://{self.name}"
                    )
            for m in messages:
                self.queues[m.topic].append(_Entry(m, 1, m.topic, publisher=publisher))
                # The copies are queued in the same step as the original: a subscription with
                # no consumer only grows its queue, the publisher never waits on it.
                for name, patterns in self.fanouts.items():
                    if matches(patterns, m.topic):
                        queue = fanout_queue(name)
                        self.queues[queue].append(_Entry(m, 1, queue, publisher=publisher))
            self.cond.notify_all()

    def requeue(self, entry: _Entry) -> None:
        """Return an unacked entry to the head of its queue (FIFO for a single consumer)."""
        with self.cond:
            if entry.settled:
                return
            entry.settled = True
            q = self.queues.get(entry.queue)
            if q is not None:
                q.appendleft(
                    _Entry(
                        entry.message,
                        entry.delivery_count + 1,
                        entry.queue,
                        publisher=entry.publisher,
                    )
                )
                self.cond.notify_all()


def _delivery_of(message: Message, delivery_count: int, publisher: str | None = None) -> Delivery:
    return Delivery(
        topic=message.topic,
        body=message.body,
        message_id=message.message_id,
        headers=dict(message.headers),
        delivery_count=delivery_count,
        reply_to=message.reply_to,
        correlation_id=message.correlation_id,
        publisher=publisher,
    )


_brokers: dict[str, _Broker] = {}
_brokers_lock = threading.Lock()


def broker_for(name: str) -> _Broker:
    with _brokers_lock:
        broker = _brokers.get(name)
        if broker is None:
            broker = _brokers[name] = _Broker(name)
        return broker


class _MemoryConsumer(BrokerConsumer):
    def __init__(self, broker: _Broker, queue: str) -> None:
        self._broker = broker
        self._queue = queue
        self._stopping = threading.Event()
        self._inflight: list[_Entry] = []

    def fetch(self, max_count: int, wait: float) -> list[Any] | None:
        cond = self._broker.cond
        with cond:
            while True:
                q = self._broker.queues.get(self._queue)
                while not self._stopping.is_set() and not q:
                    cond.wait(0.2)
                    q = self._broker.queues.get(self._queue)
                deadline = time.monotonic() + wait
                while q and len(q) < max_count and not self._stopping.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    cond.wait(remaining)
                    q = self._broker.queues.get(self._queue)
                if self._stopping.is_set():
                    return None
                if q:  # else the queue was deleted meanwhile: wait for it again
                    break
            entries = [q.popleft() for _ in range(min(max_count, len(q)))]
            self._inflight = entries
            return list(entries)

    def delivery(self, raw: Any) -> Delivery:
        return _delivery_of(raw.message, raw.delivery_count, raw.publisher)

    def settle(self, settled: list[tuple[Any, bool]]) -> None:
        # Requeued entries go back to the head of the queue: last first keeps their order.
        for entry, ack in reversed(settled):
            if ack:
                with self._broker.cond:
                    entry.settled = True
            else:
                self._broker.requeue(entry)

    def ack_held(self, raw: Any) -> None:
        # Never needed in practice: the broker's chunk store is durable for this process.
        with self._broker.cond:
            raw.settled = True

    def stop(self) -> None:
        self._stopping.set()
        with self._broker.cond:
            self._broker.cond.notify_all()

    def close(self) -> None:
        with self._broker.cond:
            entries = list(self._inflight)
            self._inflight = []
        for entry in reversed(entries):
            self._broker.requeue(entry)  # settled ones stay settled


class InMemoryBus(BrokerBus):
    replies_have_frame_limit = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> InMemoryBus:
        """memory://NAME: buses with the same NAME in one process share one broker;
        memory://USER@NAME gives the bus the identity USER."""
        parsed = urlsplit(url)
        user, _, authority = parsed.netloc.rpartition("@")
        name = authority or parsed.path.strip("/") or "default"
        if user and "identity" not in options:
            options = {**options, "identity": unquote(user)}
        return cls(name, **options)

    def __init__(
        self,
        name: str = "default",
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        reassembly_timeout: float = DEFAULT_REASSEMBLY_TIMEOUT,
        sweep_interval: float | None = None,
        drain_timeout: float = 10.0,
        identity: str | None = None,
    ) -> None:
        self._broker = broker_for(name)
        self.identity = identity
        """What this bus's messages carry as `Delivery.publisher`."""
        super().__init__(
            capabilities=Capabilities(
                detects_unroutable=True,
                persistent=False,
                native_delivery_limit=False,
                max_frame_bytes=max_frame_bytes,
            ),
            chunk_store=self._broker.chunk_store,
            reassembly_timeout=reassembly_timeout,
            sweep_interval=sweep_interval,
            drain_timeout=drain_timeout,
            delivery_limit=None,
            sweep_lock=self._broker.sweep_lock,
        )
        self._reply_to = f"memory.reply.{uuid.uuid4().hex}"

    @property
    def name(self) -> str:
        return self._broker.name

    # -- topology ----------------------------------------------------------------------------

    def declare(self, topic: str) -> None:
        self._check_open()
        self._check_topic(topic)
        with self._broker.cond:
            self._broker.queues.setdefault(topic, deque())
            self._broker.queues.setdefault(topic + DLQ_SUFFIX, deque())

    def delete(self, topic: str) -> None:
        with self._broker.cond:
            self._broker.queues.pop(topic, None)
            self._broker.queues.pop(topic + DLQ_SUFFIX, None)

    def declare_fanout(self, name: str, patterns: str | Iterable[str]) -> None:
        self._check_open()
        queue = fanout_queue(name)
        wanted = normalize_patterns(patterns)
        with self._broker.cond:
            known = self._broker.fanouts.get(name, ())
            # Patterns add up, as bindings do on RabbitMQ.
            self._broker.fanouts[name] = known + tuple(p for p in wanted if p not in known)
            self._broker.queues.setdefault(queue, deque())
            self._broker.queues.setdefault(queue + DLQ_SUFFIX, deque())

    def delete_fanout(self, name: str) -> None:
        queue = fanout_queue(name)
        with self._broker.cond:
            self._broker.fanouts.pop(name, None)
            self._broker.queues.pop(queue, None)
            self._broker.queues.pop(queue + DLQ_SUFFIX, None)

    # -- primitives --------------------------------------------------------------------------

    def _publish_parts(self, parts: list[Message]) -> None:
        self._broker.enqueue(parts, self.identity)

    def _dead_letter(self, queue: str, messages: list[Message]) -> None:
        dlq_name = queue + DLQ_SUFFIX
        with self._broker.cond:
            dlq = self._broker.queues.setdefault(dlq_name, deque())
            for m in messages:
                dead = Message(
                    topic=dlq_name,
                    body=m.body,
                    message_id=m.message_id,
                    headers=dict(m.headers),
                    reply_to=m.reply_to,
                    correlation_id=m.correlation_id,
                )
                dlq.append(_Entry(dead, 1, dlq_name, publisher=self.identity))
            self._broker.cond.notify_all()

    def _take_dead_letters(self, queue: str, limit: int) -> list[Delivery]:
        taken: list[Delivery] = []
        with self._broker.cond:
            dlq = self._broker.queues.get(queue + DLQ_SUFFIX)
            while dlq and len(taken) < limit:
                e = dlq.popleft()
                taken.append(_delivery_of(e.message, e.delivery_count, e.publisher))
        return taken

    def _consume_topic(self, topic: str, prefetch: int) -> BrokerConsumer:
        self.declare(topic)  # like amqp://: subscribing makes sure the queue exists
        return _MemoryConsumer(self._broker, topic)

    def _consume_fanout(
        self, name: str, patterns: tuple[str, ...], prefetch: int
    ) -> BrokerConsumer:
        self.declare_fanout(name, patterns)
        return _MemoryConsumer(self._broker, fanout_queue(name))

    def _reply_address(self) -> str:
        with self._broker.cond:
            self._broker.replies.setdefault(self._reply_to, self._deliver_reply)
        return self._reply_to

    def _send_reply(self, reply_to: str, reply: Message) -> None:
        with self._broker.cond:
            deliver = self._broker.replies.get(reply_to)
        if deliver is None:
            # Like RabbitMQ direct reply-to: the requester is gone; the reply has nowhere to go.
            log.info("bus_reply_dropped", topic=reply_to, message_id=reply.message_id)
            return
        deliver(_delivery_of(reply, 1, self.identity))

    def _disconnect(self) -> None:
        with self._broker.cond:
            self._broker.replies.pop(self._reply_to, None)
