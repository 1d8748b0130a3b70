"""What every bus adapter shares, written once: adapters implement only broker primitives.

`BrokerBus` carries the logic that used to be repeated per adapter: the consumer thread of each
subscription (fetch, group, settle, ack in delivery order), batching, shutdown and drain,
request/reply correlation, chunk reassembly bookkeeping (holding chunk deliveries unacked for a
non-durable chunk store), dead-letter draining and fan-out subscriptions. An adapter provides:

- connect/disconnect (`__init__`, `_disconnect`);
- topology: `declare`, `delete`, `declare_fanout`, `delete_fanout`;
- a confirmed basic publish (`_publish_parts`), the dead-letter move (`_dead_letter`) and
  taking dead letters off a queue (`_take_dead_letters`);
- a consumer per subscription (`_consume_topic`, `_consume_fanout`), a `BrokerConsumer`:
  fetch waiting deliveries, turn one into a `Delivery`, ack/requeue, stop, close;
- the reply path (`_reply_address`, `_send_reply`, optionally `_publish_request`); replies that
  arrive go to `_deliver_reply`.

Threads: each subscription has one worker thread that runs the handler; `BrokerConsumer.fetch`
is called only there. Settlements are handed to the consumer in delivery order (an adapter that
coalesces acks into one multiple-ack relies on it).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import structlog

from fedbus.bus import (
    HEADER_DEAD_REASON,
    BatchHandler,
    Bus,
    Capabilities,
    Delivery,
    Handler,
    Message,
    RequestRejected,
    RequestTimeout,
    Subscription,
)
from fedbus.chunk_store import ChunkSetInfo, ChunkStore
from fedbus.chunking import ChunkSweeper, Reassembler, regroup_dead_letters, split
from fedbus.dispatch import Settlement, SettleOptions, settle, settle_batch
from fedbus.fanout import check_topic, fanout_queue, normalize_patterns
from fedbus.in_memory_chunk_store import InMemoryChunkStore

log = structlog.get_logger("fedbus")

# How many message ids a subscription remembers its own requeue count for.
_REQUEUE_MEMORY = 10_000


class BrokerConsumer(abc.ABC):
    """One subscription's hold on a broker queue. `Raw` deliveries are the broker's own objects;
    they never leave the adapter and the shared subscription thread."""

    @abc.abstractmethod
    def fetch(self, max_count: int, wait: float) -> list[Any] | None:
        """Block until a delivery is there; return up to `max_count` of those waiting (with
        `wait` > 0, waiting up to that many seconds for the group to fill). None once stopped.
        Deliveries fetched are unsettled until `settle`; `close` gives unsettled ones back."""

    @abc.abstractmethod
    def delivery(self, raw: Any) -> Delivery:
        """The handler's view of a raw delivery (topic: the topic it was published on)."""

    @abc.abstractmethod
    def settle(self, settled: list[tuple[Any, bool]]) -> None:
        """Ack (True) or requeue (False) each, in the given (delivery) order."""

    def hold(self, raw: Any) -> None:  # noqa: B027 - most brokers need no bookkeeping
        """`raw` stays unacked until `ack_held` (a chunk kept for a non-durable chunk store);
        called before any later delivery of this consumer is settled."""

    @abc.abstractmethod
    def ack_held(self, raw: Any) -> None:
        """Ack a delivery that `hold` kept back (any thread)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Take no more deliveries; a blocked or later `fetch` returns None."""

    @abc.abstractmethod
    def close(self) -> None:
        """Let go of the queue: every unsettled delivery goes back to it (for a consumer that
        died, redelivered with a higher count). Called once, after `stop`."""


@dataclass(frozen=True)
class Batching:
    handler: BatchHandler
    size: int
    wait: float


class BrokerSubscription(Subscription):
    """A running consumer: one worker thread that fetches, runs the handler(s) and settles."""

    def __init__(
        self,
        bus: BrokerBus,
        queue: str,
        consumer: BrokerConsumer,
        handler: Handler,
        max_deliveries: int,
        batching: Batching | None,
        *,
        prefetch: int = 1,
        answers_requests: bool = True,
    ) -> None:
        self._bus = bus
        self.queue = queue
        self._consumer = consumer
        # A held chunk takes one of the prefetch slots until its set completes: at most
        # prefetch - 1 are held, so one slot always stays free for other messages (an orphan
        # chunk must never stall the queue; on a prefetch-1 RPC queue nothing is held at all).
        # A chunk past that budget is acked once stored: its set no longer survives a crash of
        # this consumer (a lost set is dead-lettered by the sweeper, not silently dropped).
        self._hold_budget = max(0, prefetch - 1)
        self._held_here = 0
        self._held_lock = threading.Lock()
        # Fan-out copies are not the request: only the topic's own consumer answers it.
        self._refuse = bus._refuse_request if answers_requests else None
        self._handler = handler
        self._max_deliveries = max_deliveries
        self._batching = batching
        self._stopping = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        self._close_lock = threading.Lock()
        self._requeues: OrderedDict[str, int] = OrderedDict()  # worker thread only
        self._thread = threading.Thread(target=self._run, name=f"fedbus-{queue}", daemon=True)

    @property
    def topic(self) -> str:
        return self.queue

    def start(self) -> None:
        self._thread.start()

    # -- worker thread -----------------------------------------------------------------------

    def _run(self) -> None:
        size = self._batching.size if self._batching is not None else 1
        wait = self._batching.wait if self._batching is not None else 0.0
        try:
            while True:
                raws = self._consumer.fetch(size, wait)
                if raws is None:
                    return
                # Cleared before the stop check: `cancel` sets the flag and then waits for idle,
                # so either we see the flag here or it sees us busy.
                self._idle.clear()
                try:
                    if self._stopping.is_set() or not raws:
                        continue  # left unsettled: `close` gives them back
                    if self._batching is None:
                        self._process(raws[0])
                    else:
                        self._process_group(raws, self._batching.handler)
                finally:
                    self._idle.set()
        finally:
            if self._stopping.is_set():
                self._close_consumer()  # cancelled from inside a handler: close once it returned

    def _delivery(self, raw: Any) -> Delivery:
        delivery = self._consumer.delivery(raw)
        # The broker's count is the shared one; this consumer's own tally of requeues is the
        # floor, so a broker that did not count a nack-requeue (versions differ) still reaches
        # max_deliveries instead of redelivering forever.
        if self._requeues:
            seen = self._requeues.get(delivery.message_id, 0) + 1
            if seen > delivery.delivery_count:
                delivery = replace(delivery, delivery_count=seen)
        return delivery

    def _remember(self, delivery: Delivery, settlement: Settlement) -> None:
        if settlement.action == "requeue":
            self._requeues[delivery.message_id] = delivery.delivery_count
            self._requeues.move_to_end(delivery.message_id)
            while len(self._requeues) > _REQUEUE_MEMORY:
                self._requeues.popitem(last=False)
        elif self._requeues:
            self._requeues.pop(delivery.message_id, None)

    def _settle_options(self) -> SettleOptions:
        return SettleOptions(
            max_deliveries=self._max_deliveries,
            reassembler=self._bus._reassembler,
            max_frame_bytes=self._bus.capabilities.max_frame_bytes,
            dead_letter=self._bus._dead_letter,
            queue=self.queue,
            refuse=self._refuse,
        )

    def _process(self, raw: Any) -> None:
        delivery = self._delivery(raw)
        try:
            settlement = settle(
                delivery,
                self._handler,
                **self._settle_options(),
            )
        except Exception as exc:  # dead-lettering failed: the original must not be acked
            log.error(
                "bus_settle_failed",
                topic=self.queue,
                message_id=delivery.message_id,
                error=f"{type(exc).__name__}: {exc}",
            )
            self._consumer.settle([(raw, False)])
            return
        self._remember(delivery, settlement)
        self._apply([(raw, settlement)])

    def _process_group(self, raws: list[Any], batch_handler: BatchHandler) -> None:
        deliveries = [self._delivery(r) for r in raws]
        try:
            settlements = settle_batch(
                deliveries,
                self._handler,
                batch_handler,
                **self._settle_options(),
            )
        except Exception as exc:  # dead-lettering failed: none of the group may be acked
            log.error(
                "bus_settle_failed",
                topic=self.queue,
                size=len(raws),
                error=f"{type(exc).__name__}: {exc}",
            )
            self._consumer.settle([(r, False) for r in raws])
            return
        for delivery, settlement in zip(deliveries, settlements, strict=True):
            self._remember(delivery, settlement)
        self._apply(list(zip(raws, settlements, strict=True)))

    def _apply(self, outcomes: list[tuple[Any, Settlement]]) -> None:
        """Carry out settlements, in delivery order."""
        to_settle: list[tuple[Any, bool]] = []
        released: list[ChunkSetInfo] = []
        for raw, settlement in outcomes:
            if settlement.action == "hold":
                assert settlement.chunk_set is not None
                if self._take_hold_slot():
                    self._consumer.hold(raw)
                    self._bus._hold(settlement.chunk_set, self, raw)
                    continue
                log.info(
                    "bus_chunk_acked_unheld",
                    topic=self.queue,
                    message_id=settlement.chunk_set.message_id,
                    held=self._hold_budget,
                )
                to_settle.append((raw, True))
                continue
            to_settle.append((raw, settlement.action == "ack"))
            if settlement.chunk_set is not None:
                released.append(settlement.chunk_set)
        if to_settle:
            self._consumer.settle(to_settle)
        for info in released:
            self._bus._release(info)

    def _take_hold_slot(self) -> bool:
        with self._held_lock:
            if self._held_here >= self._hold_budget:
                return False
            self._held_here += 1
            return True

    # -- any thread --------------------------------------------------------------------------

    def ack_held(self, raw: Any) -> None:
        """Ack a delivery held for its chunk set, freeing its hold slot."""
        with self._held_lock:
            self._held_here -= 1
        self._consumer.ack_held(raw)

    def _close_consumer(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._consumer.close()
        except Exception as exc:
            log.info("bus_consumer_close_failed", topic=self.queue, error=repr(exc))

    def cancel(self, drain_timeout: float | None = None) -> None:
        """Stop consuming; let the in-flight handler finish (up to drain_timeout), then let go
        of the queue so that every unacked delivery goes back to it."""
        if self._stopping.is_set():
            return
        timeout = self._bus._drain_timeout if drain_timeout is None else drain_timeout
        self._stopping.set()
        self._consumer.stop()
        if threading.current_thread() is self._thread:
            return  # a handler cancelled its own subscription: the worker closes on its way out
        drained = self._idle.wait(timeout)
        self._close_consumer()
        self._thread.join(timeout=5 if drained else 0.5)

    def abort(self) -> None:
        """Simulate a consumer that died: its unacked deliveries go back at once; what its
        handler does with them afterwards is ignored (tests, the in-process SIGKILL)."""
        self._stopping.set()
        self._consumer.stop()
        self._close_consumer()


class BrokerBus(Bus):
    """A `Bus` built from broker primitives (see the module docstring)."""

    replies_have_frame_limit: ClassVar[bool] = True
    """Replies are never chunked: where the broker has a frame limit, a larger reply is refused."""
    requests_in_background: ClassVar[bool] = False
    """`_send_request` returns before the publish is done (failing the answer if it fails)."""

    def __init__(
        self,
        *,
        capabilities: Capabilities,
        chunk_store: ChunkStore | None,
        reassembly_timeout: float,
        sweep_interval: float | None,
        drain_timeout: float,
        delivery_limit: int | None,
        sweep_lock: threading.Lock | None = None,
    ) -> None:
        self.capabilities = capabilities
        self._drain_timeout = drain_timeout
        self._delivery_limit = delivery_limit
        # Without a shared store, chunk parts live in this process (held unacked until their
        # set completes, so a crashed consumer gets them all redelivered).
        chunk_store = chunk_store if chunk_store is not None else InMemoryChunkStore()
        self._chunk_store = chunk_store
        self._reassembler = Reassembler(chunk_store)
        self._sweeper = ChunkSweeper(
            chunk_store,
            self._dead_letter,
            reassembly_timeout=reassembly_timeout,
            interval=sweep_interval,
            on_finished=self._release,
            lock=sweep_lock,
        )
        self._held: dict[tuple[str, str], list[tuple[BrokerSubscription, Any]]] = {}
        self._held_lock = threading.Lock()
        self._subscriptions: list[BrokerSubscription] = []
        self._pending_replies: dict[str, Future[Delivery]] = {}
        self._replies_lock = threading.Lock()
        self._closed = False

    # -- primitives --------------------------------------------------------------------------

    @abc.abstractmethod
    def _publish_parts(self, parts: list[Message]) -> None:
        """Publish (already split) messages to their topics; return once all are confirmed."""

    @abc.abstractmethod
    def _dead_letter(self, queue: str, messages: list[Message]) -> None:
        """Publish dead copies to `queue`'s dead-letter queue; return once all are confirmed."""

    @abc.abstractmethod
    def _take_dead_letters(self, queue: str, limit: int) -> list[Delivery]:
        """Take up to `limit` messages off `queue`'s dead-letter queue (as they are, chunks too)."""

    @abc.abstractmethod
    def _consume_topic(self, topic: str, prefetch: int) -> BrokerConsumer:
        """Start consuming the topic's queue (declaring it if needed)."""

    @abc.abstractmethod
    def _consume_fanout(
        self, name: str, patterns: tuple[str, ...], prefetch: int
    ) -> BrokerConsumer:
        """Start consuming the fan-out subscription's queue (declaring it if needed)."""

    @abc.abstractmethod
    def _reply_address(self) -> str:
        """The reply_to of this bus's requests; makes sure replies sent there are consumed."""

    def _publish_request(self, parts: list[Message]) -> None:
        self._publish_parts(parts)

    @abc.abstractmethod
    def _send_reply(self, reply_to: str, reply: Message) -> None:
        """Send a reply to a requester's address (not mandatory: a gone requester drops it)."""

    @abc.abstractmethod
    def _disconnect(self) -> None:
        """Close the broker connection (subscriptions are cancelled already)."""

    # -- publishing --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("bus is closed")

    def publish(self, message: Message) -> None:
        self._check_open()
        self._publish_parts(split(message, self.capabilities.max_frame_bytes))

    def publish_many(self, messages: Iterable[Message]) -> None:
        self._check_open()
        parts: list[Message] = []
        for m in messages:
            parts.extend(split(m, self.capabilities.max_frame_bytes))
        if parts:
            self._publish_parts(parts)

    # -- consuming ---------------------------------------------------------------------------

    def _check_max_deliveries(self, max_deliveries: int) -> None:
        if self._delivery_limit is None:
            if max_deliveries < 1:
                raise ValueError("max_deliveries must be >= 1")
        elif not 1 <= max_deliveries < self._delivery_limit:
            raise ValueError(
                f"max_deliveries must be in [1, {self._delivery_limit}): the broker's "
                "delivery limit is the backstop above it"
            )

    @staticmethod
    def _batching(
        batch_handler: BatchHandler | None, batch_size: int, batch_wait: float, prefetch: int
    ) -> Batching | None:
        if batch_handler is None:
            return None
        if batch_size < 1 or batch_wait < 0:
            raise ValueError("batch_size must be >= 1 and batch_wait >= 0")
        # A group never exceeds prefetch: on a broker no more can be unacked at once.
        return Batching(batch_handler, min(batch_size, max(1, prefetch)), batch_wait)

    def _start(
        self,
        queue: str,
        open_consumer: Callable[[], BrokerConsumer],
        handler: Handler,
        max_deliveries: int,
        batching: Batching | None,
        *,
        prefetch: int,
        answers_requests: bool,
    ) -> Subscription:
        self._check_open()
        self._check_max_deliveries(max_deliveries)
        sub = BrokerSubscription(
            self,
            queue,
            open_consumer(),
            handler,
            max_deliveries,
            batching,
            prefetch=prefetch,
            answers_requests=answers_requests,
        )
        sub.start()
        self._subscriptions.append(sub)
        self._sweeper.start()
        return sub

    def subscribe(
        self, topic: str, handler: Handler, *, prefetch: int = 64, max_deliveries: int = 5
    ) -> Subscription:
        return self._start(
            topic,
            lambda: self._consume_topic(topic, prefetch),
            handler,
            max_deliveries,
            None,
            prefetch=prefetch,
            answers_requests=True,
        )

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
        self._check_max_deliveries(max_deliveries)
        batching = self._batching(batch_handler, batch_size, batch_wait, prefetch)
        return self._start(
            topic,
            lambda: self._consume_topic(topic, prefetch),
            handler,
            max_deliveries,
            batching,
            prefetch=prefetch,
            answers_requests=True,
        )

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
        self._check_open()
        queue = fanout_queue(name)
        wanted = normalize_patterns(patterns)
        self._check_max_deliveries(max_deliveries)
        batching = self._batching(batch_handler, batch_size, batch_wait, prefetch)
        return self._start(
            queue,
            lambda: self._consume_fanout(name, wanted, prefetch),
            handler,
            max_deliveries,
            batching,
            prefetch=prefetch,
            answers_requests=False,
        )

    def _hold(self, info: ChunkSetInfo, holder: BrokerSubscription, raw: Any) -> None:
        with self._held_lock:
            self._held.setdefault((info.topic, info.message_id), []).append((holder, raw))

    def _release(self, info: ChunkSetInfo) -> None:
        with self._held_lock:
            held = self._held.pop((info.topic, info.message_id), [])
        # Each chunk is acked by the consumer (channel) it was delivered on.
        for holder, raw in held:
            holder.ack_held(raw)

    def _refuse_request(self, request: Delivery, reason: str) -> None:
        """Answer a dead-lettered request with its reason: an empty reply whose
        HEADER_DEAD_REASON makes the requester's `request` raise RequestRejected."""
        try:
            self.reply(request, b"", headers={HEADER_DEAD_REASON: reason[:1000]})
        except Exception as exc:  # the dead copy is safe; the requester will time out
            log.info(
                "bus_refusal_not_sent",
                message_id=request.message_id,
                error=f"{type(exc).__name__}: {exc}",
            )

    # -- request / reply ---------------------------------------------------------------------

    def _send_request(self, parts: list[Message], answer: Future[Delivery]) -> None:
        """Publish a request's parts. By default confirmed before this returns (a failure
        raises); an adapter may instead return at once and fail `answer` with the publish's
        error (`_fail_request`), so the caller's thread waits only once, for the reply."""
        self._publish_request(parts)

    @staticmethod
    def _fail_request(answer: Future[Delivery], exc: BaseException) -> None:
        """The request's publish failed (any thread): its caller raises `exc`."""
        with contextlib.suppress(InvalidStateError):  # answered, timed out or cancelled
            answer.set_exception(exc)

    def _start_request(
        self, topic: str, body: bytes, headers: Mapping[str, str] | None
    ) -> tuple[str, Future[Delivery]]:
        """Publish a request; the future its reply (or its publish's failure) completes."""
        self._check_open()
        reply_to = self._reply_address()
        correlation_id = uuid.uuid4().hex
        answer: Future[Delivery] = Future()
        with self._replies_lock:
            self._pending_replies[correlation_id] = answer
        request = Message(
            topic=topic,
            body=body,
            message_id=correlation_id,
            headers=dict(headers or {}),
            reply_to=reply_to,
            correlation_id=correlation_id,
        )
        try:
            self._send_request(split(request, self.capabilities.max_frame_bytes), answer)
        except BaseException:
            self._forget_request(correlation_id)
            raise
        return correlation_id, answer

    def _forget_request(self, correlation_id: str) -> None:
        with self._replies_lock:
            self._pending_replies.pop(correlation_id, None)

    @staticmethod
    def _answered(topic: str, answer: Delivery) -> Delivery:
        refused = answer.headers.get(HEADER_DEAD_REASON)
        if refused is not None:
            raise RequestRejected(f"{topic} refused the request: {refused}")
        return answer

    def request(
        self, topic: str, body: bytes, *, timeout: float, headers: Mapping[str, str] | None = None
    ) -> Delivery:
        correlation_id, answer = self._start_request(topic, body, headers)
        try:
            try:
                reply = answer.result(timeout)
            except TimeoutError:
                answer.cancel()  # a publish still retrying stops; a late reply is dropped
                raise RequestTimeout(f"no reply on {topic!r} within {timeout} s") from None
            return self._answered(topic, reply)
        finally:
            self._forget_request(correlation_id)

    async def arequest(
        self, topic: str, body: bytes, *, timeout: float, headers: Mapping[str, str] | None = None
    ) -> Delivery:
        """`request` awaited on the caller's event loop: the reply (or the publish's failure)
        wakes the loop once, through the loop's own thread-safe call; no thread is held.
        Adapters whose `_send_request` waits for the publish run `request` on a thread."""
        if not self.requests_in_background:
            return await super().arequest(topic, body, timeout=timeout, headers=headers)
        correlation_id, answer = self._start_request(topic, body, headers)
        try:
            try:
                reply = await asyncio.wait_for(asyncio.wrap_future(answer), timeout)
            except TimeoutError:
                answer.cancel()  # a publish still retrying stops; a late reply is dropped
                raise RequestTimeout(f"no reply on {topic!r} within {timeout} s") from None
            return self._answered(topic, reply)
        finally:
            self._forget_request(correlation_id)

    def _deliver_reply(self, reply: Delivery) -> None:
        """A reply arrived (any thread): wake the request waiting for it, if it still does."""
        with self._replies_lock:
            future = self._pending_replies.pop(reply.correlation_id or "", None)
        if future is not None:
            with contextlib.suppress(InvalidStateError):  # done: timed out or cancelled
                future.set_result(reply)
                return
        # The requester gave up: a late reply has nowhere to go.
        log.info("bus_reply_dropped", correlation_id=reply.correlation_id)

    def reply(
        self, request: Delivery, body: bytes, *, headers: Mapping[str, str] | None = None
    ) -> None:
        self._check_open()
        if request.reply_to is None:
            raise ValueError("the delivery carries no reply_to: it did not come from request()")
        if self.replies_have_frame_limit and len(body) > self.capabilities.max_frame_bytes:
            raise ValueError("replies are not chunked: keep them under max_frame_bytes")
        self._send_reply(
            request.reply_to,
            Message(
                topic=request.reply_to,
                body=body,
                message_id=uuid.uuid4().hex,
                headers=dict(headers or {}),
                correlation_id=request.correlation_id,
            ),
        )

    # -- operators ---------------------------------------------------------------------------

    def dead_letters(self, topic: str, *, limit: int = 100) -> list[Delivery]:
        self._check_open()
        return regroup_dead_letters(self._take_dead_letters(topic, limit))

    def fanout_dead_letters(self, name: str, *, limit: int = 100) -> list[Delivery]:
        self._check_open()
        return regroup_dead_letters(self._take_dead_letters(fanout_queue(name), limit))

    def sweep_chunks(self) -> int:
        """Dead-letter expired chunk sets now (the sweeper thread does this periodically)."""
        return self._sweeper.sweep_once()

    @staticmethod
    def _check_topic(topic: str) -> None:
        check_topic(topic)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sweeper.stop()
        for sub in self._subscriptions:
            try:
                sub.cancel()
            except Exception as exc:
                log.info("bus_subscription_cancel_failed", topic=sub.queue, error=repr(exc))
        self._disconnect()
