"""memory:// — an in-process broker: the embedded default and the unit-test backend.

Every `InMemoryBus` connected with the same URL authority (memory://party-9999) in one process
shares one broker, so several parties in one process each get their own. It keeps the same
contract as the real adapters: unroutable publishes raise, handlers ack by returning,
`Reject` and the delivery limit dead-letter to "<topic>.dlq" with a reason, large bodies are
chunked and reassembled, request/reply works, and a cancelled or closed consumer's in-flight
message is requeued with a higher delivery count. Nothing survives the process
(capabilities.persistent is False). Consumers take one message at a time (prefetch 1), or with
`subscribe_batched` up to `batch_size` waiting messages at once.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog

from fedbus.bus import (
    BatchHandler,
    Bus,
    Capabilities,
    Delivery,
    Handler,
    Message,
    RequestTimeout,
    Subscription,
    Unroutable,
)
from fedbus.chunking import (
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_REASSEMBLY_TIMEOUT,
    ChunkSweeper,
    Reassembler,
    regroup_dead_letters,
    split,
)
from fedbus.dispatch import Settlement, settle, settle_batch
from fedbus.in_memory_chunk_store import InMemoryChunkStore

log = structlog.get_logger("fedbus")

DLQ_SUFFIX = ".dlq"


@dataclass
class _Entry:
    message: Message
    delivery_count: int
    settled: bool = False


class _Broker:
    """The shared state behind one memory:// authority; guarded by `cond`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cond = threading.Condition()
        self.queues: dict[str, deque[_Entry]] = {}
        self.replies: dict[str, queue.Queue[Delivery]] = {}
        self.chunk_store = InMemoryChunkStore(durable=True)
        self.sweep_lock = threading.Lock()

    def enqueue(self, messages: Iterable[Message]) -> None:
        with self.cond:
            for m in messages:
                if m.topic not in self.queues:
                    raise Unroutable(
                        f"no queue bound for topic {m.topic!r} on memory://{self.name}"
                    )
            for m in messages:
                self.queues[m.topic].append(_Entry(m, 1))
            self.cond.notify_all()

    def requeue(self, entry: _Entry) -> None:
        """Return an unacked entry to the head of its queue (FIFO for a single consumer)."""
        with self.cond:
            if entry.settled:
                return
            entry.settled = True
            q = self.queues.get(entry.message.topic)
            if q is not None:
                q.appendleft(_Entry(entry.message, entry.delivery_count + 1))
                self.cond.notify_all()


_brokers: dict[str, _Broker] = {}
_brokers_lock = threading.Lock()


def broker_for(name: str) -> _Broker:
    with _brokers_lock:
        broker = _brokers.get(name)
        if broker is None:
            broker = _brokers[name] = _Broker(name)
        return broker


@dataclass(frozen=True)
class _Batching:
    handler: BatchHandler
    size: int
    wait: float


class _MemorySubscription(Subscription):
    def __init__(
        self,
        bus: InMemoryBus,
        topic: str,
        handler: Handler,
        max_deliveries: int,
        batching: _Batching | None = None,
    ) -> None:
        self._bus = bus
        self._broker = bus._broker
        self._topic = topic
        self._handler = handler
        self._max_deliveries = max_deliveries
        self._batching = batching
        self._stopping = threading.Event()
        self._inflight: list[_Entry] = []
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(
            target=self._run, name=f"fedbus-memory-{topic}", daemon=True
        )
        self._thread.start()

    def _take(self) -> list[_Entry] | None:
        """The next message (or group of them) off the queue; None once stopping."""
        size = self._batching.size if self._batching is not None else 1
        wait = self._batching.wait if self._batching is not None else 0.0
        cond = self._broker.cond
        with cond:
            while True:
                q = self._broker.queues.get(self._topic)
                while not self._stopping.is_set() and not q:
                    cond.wait(0.2)
                    q = self._broker.queues.get(self._topic)
                deadline = time.monotonic() + wait
                while q and len(q) < size and not self._stopping.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    cond.wait(remaining)
                    q = self._broker.queues.get(self._topic)
                if self._stopping.is_set():
                    return None
                if q:  # else the topic was deleted meanwhile: wait for it again
                    break
            entries = [q.popleft() for _ in range(min(size, len(q)))]
            self._inflight = entries
            self._idle.clear()
            return entries

    def _run(self) -> None:
        while True:
            entries = self._take()
            if entries is None:
                return
            try:
                if self._batching is None:
                    self._process(entries[0])
                else:
                    self._process_group(entries, self._batching.handler)
            finally:
                with self._broker.cond:
                    self._inflight = []
                    self._idle.set()

    @staticmethod
    def _delivery(entry: _Entry) -> Delivery:
        m = entry.message
        return Delivery(
            topic=m.topic,
            body=m.body,
            message_id=m.message_id,
            headers=dict(m.headers),
            delivery_count=entry.delivery_count,
            reply_to=m.reply_to,
            correlation_id=m.correlation_id,
        )

    def _process(self, entry: _Entry) -> None:
        m = entry.message
        try:
            outcome = settle(
                self._delivery(entry),
                self._handler,
                max_deliveries=self._max_deliveries,
                reassembler=self._bus._reassembler,
                max_frame_bytes=self._bus.capabilities.max_frame_bytes,
                dead_letter=self._bus._dead_letter,
            )
        except Exception as exc:  # dead-lettering failed: keep the message
            log.error("bus_settle_failed", topic=m.topic, message_id=m.message_id, error=repr(exc))
            self._broker.requeue(entry)
            return
        self._apply([(entry, outcome)])

    def _process_group(self, entries: list[_Entry], batch_handler: BatchHandler) -> None:
        try:
            outcomes = settle_batch(
                [self._delivery(e) for e in entries],
                self._handler,
                batch_handler,
                max_deliveries=self._max_deliveries,
                reassembler=self._bus._reassembler,
                max_frame_bytes=self._bus.capabilities.max_frame_bytes,
                dead_letter=self._bus._dead_letter,
            )
        except Exception as exc:  # dead-lettering failed: keep the messages
            log.error("bus_settle_failed", topic=self._topic, size=len(entries), error=repr(exc))
            for entry in reversed(entries):
                self._broker.requeue(entry)
            return
        self._apply(list(zip(entries, outcomes, strict=True)))

    def _apply(self, outcomes: list[tuple[_Entry, Settlement]]) -> None:
        # Requeued entries go back to the head of the queue: last first keeps their order.
        for entry, outcome in reversed(outcomes):
            if outcome.action == "requeue":
                self._broker.requeue(entry)
            else:  # "hold" never happens: the broker's chunk store is durable for this process
                with self._broker.cond:
                    entry.settled = True

    def cancel(self, drain_timeout: float | None = None) -> None:
        """Stop taking messages; wait for the in-flight one, else requeue it (dead consumer)."""
        timeout = self._bus._drain_timeout if drain_timeout is None else drain_timeout
        self._stopping.set()
        with self._broker.cond:
            self._broker.cond.notify_all()
        if threading.current_thread() is self._thread:
            return
        if not self._idle.wait(timeout):
            self.abort()
        self._thread.join(timeout=0.5 if self._inflight else 5)

    def abort(self) -> None:
        """Simulate a consumer that died: its unacked messages go back, their outcome is
        ignored."""
        self._stopping.set()
        with self._broker.cond:
            entries = list(self._inflight)
        for entry in reversed(entries):
            self._broker.requeue(entry)


class InMemoryBus(Bus):
    @classmethod
    def from_url(cls, url: str, **options: Any) -> InMemoryBus:
        """memory://NAME: buses with the same NAME in one process share one broker."""
        parsed = urlsplit(url)
        name = parsed.netloc or parsed.path.strip("/") or "default"
        return cls(name, **options)

    def __init__(
        self,
        name: str = "default",
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        reassembly_timeout: float = DEFAULT_REASSEMBLY_TIMEOUT,
        sweep_interval: float | None = None,
        drain_timeout: float = 10.0,
    ) -> None:
        self._broker = broker_for(name)
        self.capabilities = Capabilities(
            detects_unroutable=True,
            persistent=False,
            native_delivery_limit=False,
            max_frame_bytes=max_frame_bytes,
        )
        self._drain_timeout = drain_timeout
        self._reassembler = Reassembler(self._broker.chunk_store)
        self._sweeper = ChunkSweeper(
            self._broker.chunk_store,
            self._dead_letter,
            reassembly_timeout=reassembly_timeout,
            interval=sweep_interval,
            lock=self._broker.sweep_lock,
        )
        self._subscriptions: list[_MemorySubscription] = []
        self._closed = False

    @property
    def name(self) -> str:
        return self._broker.name

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("bus is closed")

    def declare(self, topic: str) -> None:
        self._check_open()
        with self._broker.cond:
            self._broker.queues.setdefault(topic, deque())
            self._broker.queues.setdefault(topic + DLQ_SUFFIX, deque())

    def delete(self, topic: str) -> None:
        with self._broker.cond:
            self._broker.queues.pop(topic, None)
            self._broker.queues.pop(topic + DLQ_SUFFIX, None)

    def publish(self, message: Message) -> None:
        self._check_open()
        self._broker.enqueue(split(message, self.capabilities.max_frame_bytes))

    def publish_many(self, messages: Iterable[Message]) -> None:
        self._check_open()
        parts: list[Message] = []
        for m in messages:
            parts.extend(split(m, self.capabilities.max_frame_bytes))
        self._broker.enqueue(parts)

    def _dead_letter(self, topic: str, messages: list[Message]) -> None:
        with self._broker.cond:
            dlq = self._broker.queues.setdefault(topic + DLQ_SUFFIX, deque())
            for m in messages:
                dlq.append(
                    _Entry(
                        Message(
                            topic=topic + DLQ_SUFFIX,
                            body=m.body,
                            message_id=m.message_id,
                            headers=dict(m.headers),
                            reply_to=m.reply_to,
                            correlation_id=m.correlation_id,
                        ),
                        1,
                    )
                )
            self._broker.cond.notify_all()

    def subscribe(
        self, topic: str, handler: Handler, *, prefetch: int = 64, max_deliveries: int = 5
    ) -> Subscription:
        self._check_open()
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be >= 1")
        self.declare(topic)  # like amqp://: subscribing makes sure the queue exists
        sub = _MemorySubscription(self, topic, handler, max_deliveries)
        self._subscriptions.append(sub)
        self._sweeper.start()
        return sub

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
        self._check_open()
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be >= 1")
        if batch_size < 1 or batch_wait < 0:
            raise ValueError("batch_size must be >= 1 and batch_wait >= 0")
        self.declare(topic)
        # prefetch bounds a group like on amqp://, where no more can be unacked at once.
        batching = _Batching(batch_handler, min(batch_size, max(1, prefetch)), batch_wait)
        sub = _MemorySubscription(self, topic, handler, max_deliveries, batching)
        self._subscriptions.append(sub)
        self._sweeper.start()
        return sub

    def request(
        self, topic: str, body: bytes, *, timeout: float, headers: Mapping[str, str] | None = None
    ) -> Delivery:
        self._check_open()
        reply_to = f"memory.reply.{uuid.uuid4().hex}"
        correlation_id = uuid.uuid4().hex
        inbox: queue.Queue[Delivery] = queue.Queue()
        with self._broker.cond:
            self._broker.replies[reply_to] = inbox
        try:
            self.publish(
                Message(
                    topic=topic,
                    body=body,
                    message_id=correlation_id,
                    headers=dict(headers or {}),
                    reply_to=reply_to,
                    correlation_id=correlation_id,
                )
            )
            try:
                return inbox.get(timeout=timeout)
            except queue.Empty:
                raise RequestTimeout(f"no reply on {topic!r} within {timeout} s") from None
        finally:
            with self._broker.cond:
                self._broker.replies.pop(reply_to, None)

    def reply(
        self, request: Delivery, body: bytes, *, headers: Mapping[str, str] | None = None
    ) -> None:
        self._check_open()
        if request.reply_to is None:
            raise ValueError("the delivery carries no reply_to: it did not come from request()")
        with self._broker.cond:
            inbox = self._broker.replies.get(request.reply_to)
        if inbox is None:
            # Like RabbitMQ direct reply-to: the requester gave up; the reply has nowhere to go.
            log.info("bus_reply_dropped", topic=request.topic, message_id=request.message_id)
            return
        inbox.put(
            Delivery(
                topic=request.reply_to,
                body=body,
                message_id=uuid.uuid4().hex,
                headers=dict(headers or {}),
                delivery_count=1,
                correlation_id=request.correlation_id,
            )
        )

    def dead_letters(self, topic: str, *, limit: int = 100) -> list[Delivery]:
        taken: list[Delivery] = []
        with self._broker.cond:
            dlq = self._broker.queues.get(topic + DLQ_SUFFIX)
            while dlq and len(taken) < limit:
                e = dlq.popleft()
                taken.append(
                    Delivery(
                        topic=e.message.topic,
                        body=e.message.body,
                        message_id=e.message.message_id,
                        headers=dict(e.message.headers),
                        delivery_count=e.delivery_count,
                        reply_to=e.message.reply_to,
                        correlation_id=e.message.correlation_id,
                    )
                )
        return regroup_dead_letters(taken)

    def sweep_chunks(self) -> int:
        """Dead-letter expired chunk sets now (the sweeper thread does this periodically)."""
        return self._sweeper.sweep_once()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in self._subscriptions:
            sub.cancel()
        self._sweeper.stop()
