"""amqp:// and amqps:// — RabbitMQ through aio-pika on an internal event-loop thread.

Topology (declare): one durable direct exchange (default "fedmq") and one durable direct
dead-letter exchange ("fedmq.dlx"). Per topic a durable QUORUM queue named after the topic,
bound with routing key = topic, with x-delivery-limit (the broker's backstop, a bit above any
subscriber's max_deliveries), x-dead-letter-exchange = the DLX and at-least-once
dead-lettering; and a quorum queue "<topic>.dlq" bound to the DLX with the same key.
Request/reply uses RabbitMQ direct reply-to (`amq.rabbitmq.reply-to`), which is not a queue.
Transient topics (`transient_topics`, default fedschemas.topics.TRANSIENT: online serving's
request/reply topics, whose requests are worthless past their deadline) get a non-durable
CLASSIC queue instead (same bindings and dead-letter exchange, no delivery limit, messages
kept in memory: no Raft round or fsync before the publisher's confirm). Where such a topic's
queue already exists as declared before (a quorum queue), it is used as it is.

Fan-out: a durable topic exchange ("fedmq.fanout"), bound to the main exchange once per
declared topic (exchange-to-exchange, binding key = topic), so every message routed to a topic
also reaches the topic exchange. Each fan-out subscription is a durable quorum queue
"fedmq.fanout.<name>" (same delivery limit and at-least-once dead-lettering, dead-letter
routing key = its own name, so broker-side dead letters land in its own "<queue>.dlq") bound
to the topic exchange with each of its patterns. The broker copies messages while routing: a
publisher's confirm covers the fan-out copies too (RabbitMQ confirms once every queue it routed
to has the message), and nothing waits for a fan-out consumer.

Publisher identity: every publish carries the AMQP user-id property set to the connection's
user (the URL's user name; `stamp_user_id=False` turns it off), and RabbitMQ refuses a publish
whose user-id differs from the authenticated user, so a consumer's `Delivery.publisher` is the
broker-validated identity of whoever published it (None when the publisher did not set one).
Dead copies the adapter publishes carry the dead-lettering consumer's user; replies too.

Publishing: persistent (delivery_mode 2), mandatory, with publisher confirms; `publish`
returns after the confirm and raises `Unroutable` on basic.return. The loop thread pipelines
confirms, so concurrent publishers and `publish_many` do not wait for each other. Replies
(`reply`) are the exception: sent on a channel without confirms, see `_send_reply`.
A request is confirmed too, but its caller waits only for the reply (a failed publish fails
that wait; `_send_request`), and nothing waits for a reply's publish.

Consuming: one channel per subscription with basic.qos = prefetch; deliveries are handed to the
subscription's worker thread (fedbus.broker_bus) in bursts; acks and nacks go back to the loop
thread, coalesced into basic.ack(multiple), one flush at a time per subscription (so frames
reach the broker in delivery order). Dead copies are published to the DLX and confirmed before
the original is acked. Connections are robust (aio-pika reconnects with backoff and
re-declares; the first connect retries with tenacity); unacked deliveries of a lost connection
are redelivered by the broker with a higher x-delivery-count.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar, cast

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from fedschemas import topics as _topics
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from fedbus.broker_bus import BrokerBus, BrokerConsumer
from fedbus.bus import (
    HEADER_DEAD_REASON,
    HEADER_ORIGINAL_TOPIC,
    BrokerUnavailable,
    BusError,
    Capabilities,
    Delivery,
    Message,
    PublishNotConfirmed,
    Unroutable,
)
from fedbus.bus_factory import url_identity
from fedbus.chunk_store import ChunkStore
from fedbus.chunking import DEFAULT_MAX_FRAME_BYTES, DEFAULT_REASSEMBLY_TIMEOUT
from fedbus.fanout import FANOUT_QUEUE_PREFIX, fanout_queue, normalize_patterns

log = structlog.get_logger("fedbus")

T = TypeVar("T")


def _new_loop() -> asyncio.AbstractEventLoop:
    """The IO thread's loop: uvloop where installed (its wake-ups, socket reads and writes cost
    less CPU per message than the selector loop's), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


DLQ_SUFFIX = ".dlq"
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
# Where a publish goes: the aio-pika channel that owns it and the exchange name.
_Target = tuple[AbstractChannel, str]
# Errors after which a publish is retried on the (robust, reconnecting) connection.
_TRANSIENT = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
)


def _header_text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    return None


def _delivery_count(message: AbstractIncomingMessage) -> int:
    # Quorum queues count returns (nack/requeue, consumer death) in x-delivery-count; it is
    # absent on the first delivery.
    raw = (message.headers or {}).get("x-delivery-count")
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw + 1
    return 2 if message.redelivered else 1


def _to_delivery(topic: str, message: AbstractIncomingMessage) -> Delivery:
    raw = message.headers or {}
    headers = {k: t for k, v in raw.items() if (t := _header_text(v)) is not None}
    headers.pop("x-delivery-count", None)
    deaths: Any = raw.get("x-death")
    if HEADER_DEAD_REASON not in headers and isinstance(deaths, list | tuple):
        # Dead-lettered by the broker itself (x-delivery-limit backstop), not by the adapter.
        first = deaths[0] if deaths and isinstance(deaths[0], Mapping) else {}
        headers[HEADER_DEAD_REASON] = f"broker: {_header_text(first.get('reason')) or 'unknown'}"
        died_in = _header_text(first.get("queue")) or topic
        if died_in.startswith(FANOUT_QUEUE_PREFIX):
            # A fan-out subscription's copy: its original topic is the routing key.
            keys: Any = first.get("routing-keys")
            if isinstance(keys, list | tuple) and keys:
                died_in = _header_text(keys[0]) or died_in
        headers[HEADER_ORIGINAL_TOPIC] = died_in
    return Delivery(
        topic=topic,
        body=message.body,
        message_id=message.message_id or "",
        headers=headers,
        delivery_count=_delivery_count(message),
        reply_to=message.reply_to,
        correlation_id=message.correlation_id,
        publisher=message.user_id or None,
    )


def _properties(message: Message, user_id: str | None) -> aiormq.spec.Basic.Properties:
    return aiormq.spec.Basic.Properties(
        headers=dict(message.headers),
        message_id=message.message_id,
        delivery_mode=2,  # persistent
        reply_to=message.reply_to,
        correlation_id=message.correlation_id,
        content_type="application/octet-stream",
        # Checked by RabbitMQ against the connection's user: what makes Delivery.publisher
        # trustworthy for the receiver (docs/security.md).
        user_id=user_id,
    )


async def _close_quietly(channel: AbstractChannel) -> None:
    """Close a channel no one uses any more; it may be closed or broken already."""
    with contextlib.suppress(Exception):
        await channel.close()


def _routing_key(message: AbstractIncomingMessage) -> str:
    return message.routing_key or ""


class _AmqpConsumer(BrokerConsumer):
    """One subscription's channel: basic.consume with qos, ack coalescing, held chunks."""

    def __init__(
        self,
        bus: AmqpBus,
        queue_name: str,
        topic_of: Callable[[AbstractIncomingMessage], str],
        prefetch: int,
    ) -> None:
        self._bus = bus
        self.queue_name = queue_name
        self._topic_of = topic_of
        self._prefetch = prefetch
        # Deliveries cross from the IO loop to the worker thread in bursts: the loop collects
        # what one socket read delivered and hands it over with one put, so the worker is woken
        # once per burst instead of once per message (the wake-up was ~15% of consumer CPU).
        self._inbox: queue.Queue[list[AbstractIncomingMessage] | None] = queue.Queue()
        self._arrived: list[AbstractIncomingMessage] = []  # loop thread only
        self._pending: deque[AbstractIncomingMessage] = deque()  # worker thread only
        self._stopping = threading.Event()
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._settled: list[tuple[AbstractIncomingMessage, bool]] = []
        self._settled_lock = threading.Lock()
        self._flush_scheduled = False
        # One flush at a time (see _flush); created lazily on the loop thread.
        self._flush_lock: asyncio.Lock | None = None
        # Deliveries of this channel held for chunk reassembly whose own ack is not yet in
        # aiormq's frame queue; while any is, a multiple-ack could cover it (under _settled_lock).
        self._held_unsent = 0

    async def start(self, declare: Callable[[AbstractChannel], Awaitable[AbstractQueue]]) -> None:
        connection = self._bus._require_connection()
        self._channel = await connection.channel(publisher_confirms=False)
        self._channel.close_callbacks.add(self._on_channel_closed)
        await self._channel.set_qos(prefetch_count=self._prefetch)
        self._queue = await declare(self._channel)
        self._consumer_tag = await self._queue.consume(self._on_message, no_ack=False)

    def _on_channel_closed(self, _channel: object, exc: BaseException | None) -> None:
        if not self._stopping.is_set():
            self._bus._count_channel_close(self.queue_name, exc)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if not self._arrived:
            # Runs after the callbacks of every delivery already parsed from the socket.
            self._bus._loop.call_soon(self._hand_off)
        self._arrived.append(message)

    def _hand_off(self) -> None:
        burst, self._arrived = self._arrived, []
        self._inbox.put(burst)

    # -- worker thread -----------------------------------------------------------------------

    def fetch(self, max_count: int, wait: float) -> list[Any] | None:
        pending = self._pending
        if not pending:
            if self._stopping.is_set():
                return None
            burst = self._inbox.get()
            if burst is None or self._stopping.is_set():
                return None  # what is left unacked goes back when the channel closes
            pending.extend(burst)
        if len(pending) < max_count:
            self._top_up(max_count, wait)
        return [pending.popleft() for _ in range(min(max_count, len(pending)))]

    def _top_up(self, max_count: int, wait: float) -> None:
        """Add what else is waiting, plus (with a wait) what arrives within `wait` seconds."""
        deadline = time.monotonic() + wait
        while len(self._pending) < max_count:
            try:
                burst = self._inbox.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    burst = self._inbox.get(timeout=remaining)
                except queue.Empty:
                    return
            if burst is None:
                self._inbox.put(None)  # seen again by the next fetch
                return
            self._pending.extend(burst)

    def delivery(self, raw: Any) -> Delivery:
        message = cast(AbstractIncomingMessage, raw)
        return _to_delivery(self._topic_of(message), message)

    def settle(self, settled: list[tuple[Any, bool]]) -> None:
        """Queue acks/nacks for the loop thread; one flush carries all that piled up."""
        with self._settled_lock:
            self._settled.extend(settled)
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        self._bus._post(self._schedule_flush)

    def hold(self, raw: Any) -> None:
        # Counted before any later delivery is settled, so no flush that carries a later ack
        # can miss it.
        with self._settled_lock:
            self._held_unsent += 1

    def _schedule_flush(self) -> None:
        self._bus._loop.create_task(self._flush())

    async def _flush(self) -> None:
        # Flushes of one subscription never interleave. Each send awaits (aiormq's frame queue
        # holds 10 frames; a put into a full queue waits and can be overtaken by a later put),
        # so two flushes running at once could put a later basic.ack(multiple) on the wire
        # ahead of an earlier flush's nack or ack: the multiple-ack settles those tags, the
        # broker then gets a second settlement for one of them and closes the channel with
        # PRECONDITION_FAILED "unknown delivery tag" (and acks still queued for the dead
        # channel then hit CHANNEL_ERROR "expected 'channel.open'", closing the connection).
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        async with self._flush_lock:
            with self._settled_lock:
                batch, self._settled = self._settled, []
                self._flush_scheduled = False
                held_unsent = self._held_unsent
            # The worker settles deliveries in delivery order and the flushes go out one after
            # the other, so one basic.ack(multiple) up to the last ack covers only earlier
            # tags that are settled already (or in this batch); a nack is sent before any
            # later ack so that the multiple-ack cannot swallow it. A delivery held for chunk
            # reassembly is acked on its own later: no coalescing while one's ack is unsent.
            coalesce = held_unsent == 0
            pending_ack: AbstractIncomingMessage | None = None
            for message, ack in batch:
                if ack and coalesce:
                    pending_ack = message
                    continue
                if pending_ack is not None:
                    await self._send_settlement(pending_ack, ack=True, multiple=True)
                    pending_ack = None
                await self._send_settlement(message, ack=ack, multiple=False)
            if pending_ack is not None:
                await self._send_settlement(pending_ack, ack=True, multiple=True)

    def ack_held(self, raw: Any) -> None:
        """Ack a delivery that was held for chunk reassembly (any thread)."""
        message = cast(AbstractIncomingMessage, raw)

        async def go() -> None:
            try:
                await self._send_settlement(message, ack=True, multiple=False)
            finally:  # its frame is queued (or its channel is gone): coalescing may resume
                with self._settled_lock:
                    self._held_unsent -= 1

        self._bus._spawn(go())

    async def _send_settlement(
        self, message: AbstractIncomingMessage, *, ack: bool, multiple: bool
    ) -> None:
        # One failure must not stop the rest: after a reconnect, a batch can hold deliveries
        # of the dead channel (their ack fails; the broker redelivers them anyway) before
        # deliveries of the new one, whose acks must still go out.
        try:
            if ack:
                await message.ack(multiple=multiple)
            else:
                await message.nack(requeue=True)
        except Exception as exc:
            log.info("bus_settle_dropped", topic=self.queue_name, error=repr(exc))

    # -- stopping ----------------------------------------------------------------------------

    async def _stop_consuming(self) -> None:
        if self._queue is not None and self._consumer_tag is not None:
            try:
                await self._queue.cancel(self._consumer_tag)
            except Exception as exc:
                log.info("bus_cancel_failed", topic=self.queue_name, error=repr(exc))

    async def _close_channel(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            try:
                await self._channel.close()
            except Exception as exc:
                log.info("bus_channel_close_failed", topic=self.queue_name, error=repr(exc))

    def stop(self) -> None:
        self._stopping.set()
        if self._bus._loop.is_running():
            self._bus._call(self._stop_consuming())

    def close(self) -> None:
        if not self._bus._loop.is_running():
            # The bus is closed already (its connection took the channel along).
            self._inbox.put(None)
            return
        # Send the acks the worker settled before closing: frames leave in the order they were
        # queued, so they reach the broker ahead of the channel close (a flush already
        # scheduled runs first; this one takes whatever is left). Closing the channel returns
        # every unacked delivery to the queue.
        self._bus._call(self._flush())
        self._bus._call(self._close_channel())
        self._inbox.put(None)


class AmqpBus(BrokerBus):
    requests_in_background = True

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AmqpBus:
        return cls(url, **options)

    def __init__(
        self,
        url: str,
        *,
        exchange: str = "fedmq",
        dead_letter_exchange: str = "fedmq.dlx",
        fanout_exchange: str = "fedmq.fanout",
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        broker_delivery_limit: int = 20,
        confirm_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        connect_attempts: int = 5,
        publish_retry_window: float = 30.0,
        reconnect_interval: float = 1.0,
        drain_timeout: float = 10.0,
        chunk_store: ChunkStore | None = None,
        reassembly_timeout: float = DEFAULT_REASSEMBLY_TIMEOUT,
        sweep_interval: float | None = None,
        connection_name: str | None = None,
        stamp_user_id: bool = True,
        transient_topics: Iterable[str] | None = None,
    ) -> None:
        super().__init__(
            capabilities=Capabilities(
                detects_unroutable=True,
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
        self._url = url
        self.user_id: str | None = url_identity(url) if stamp_user_id else None
        """The user-id property stamped on every publish (the URL's user), or None."""
        # Shown in the broker's connection list; unique so operators (and tests) can find it.
        self.connection_name = connection_name or f"fedbus-{uuid.uuid4().hex[:12]}"
        self._exchange_name = exchange
        self._dlx_name = dead_letter_exchange
        self._fanout_name = fanout_exchange
        self._broker_delivery_limit = broker_delivery_limit
        self.transient_topics: frozenset[str] = (
            _topics.TRANSIENT if transient_topics is None else frozenset(transient_topics)
        )
        """Topics whose queue is a non-durable classic queue (see the module docstring)."""
        self._confirm_timeout = confirm_timeout
        self._connect_timeout = connect_timeout
        self._connect_attempts = connect_attempts
        self._publish_retry_window = publish_retry_window
        self._reconnect_interval = reconnect_interval
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._dlx: AbstractExchange | None = None
        self._reply_channel: AbstractChannel | None = None
        self._unconfirmed: AbstractChannel | None = None
        self._reply_lock: asyncio.Lock | None = None
        # Health counters, written on the loop thread only (see `reconnects`, `channel_closes`).
        self._reconnects = 0
        self._channel_closes = 0
        # Work handed to the loop from other threads (see `_post`), under _posted_lock.
        self._posted: list[Callable[[], object]] = []
        self._post_scheduled = False
        self._posted_lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()  # spawned, kept until done
        self._loop = _new_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fedbus-amqp-io", daemon=True
        )
        self._thread.start()
        try:
            self._call(self._connect())
        except (*_TRANSIENT, OSError, TimeoutError) as exc:
            self._stop_loop()
            raise BrokerUnavailable(f"cannot connect to RabbitMQ: {exc}") from exc
        except BaseException:
            self._stop_loop()
            raise

    @property
    def reconnects(self) -> int:
        """How many times the connection was re-established after it was lost (0 when healthy)."""
        return self._reconnects

    @property
    def channel_closes(self) -> int:
        """Channels of this bus that the broker closed (a channel error such as PRECONDITION_FAILED,
        or the connection going down) rather than `cancel`/`close`; each costs redeliveries."""
        return self._channel_closes

    def _count_channel_close(self, topic: str | None, exc: BaseException | None) -> None:
        if self._closed:
            return
        self._channel_closes += 1
        log.warning("bus_channel_closed", topic=topic, error=repr(exc))

    def _on_reconnect(self, _connection: object) -> None:
        self._reconnects += 1
        # The robust connection restores declared queues' consumers, not the direct reply-to
        # one (no queue): requests published on the restored reply channel would be refused
        # for ever ("fast reply consumer does not exist"). The next request opens a new one.
        stale, self._reply_channel = self._reply_channel, None
        if stale is not None:
            self._loop.create_task(_close_quietly(stale))
        log.warning("bus_reconnected", connection_name=self.connection_name)

    # -- loop plumbing ---------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the IO loop and wait for it (never call from the loop thread)."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def _post(self, callback: Callable[[], object]) -> None:
        """Run `callback` on the IO loop soon (from any thread but the loop's). Callbacks
        posted before the loop got to the earlier ones share one wake-up: a reply and its
        request's ack, or a burst of settlements, cost one self-pipe write and one loop pass
        instead of one each (those wake-ups were most of a hop's CPU; issue #15). After
        `close` (the loop closed) the callback is dropped, as a stopped loop never ran it."""
        if self._loop.is_closed():
            return
        with self._posted_lock:
            self._posted.append(callback)
            if self._post_scheduled:
                return
            self._post_scheduled = True
        self._loop.call_soon_threadsafe(self._run_posted)

    def _run_posted(self) -> None:
        with self._posted_lock:
            posted, self._posted = self._posted, []
            self._post_scheduled = False
        for callback in posted:
            try:
                callback()
            except Exception as exc:
                log.error("bus_loop_callback_failed", error=f"{type(exc).__name__}: {exc}")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` on the IO loop without waiting for it (any thread but the loop's); it
        handles its own errors."""

        def start() -> None:
            task = self._loop.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._post(start)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        # A stopped loop still holds its descriptors (uvloop: epoll, io_uring, eventfd, two
        # pipes and a spare /dev/null; asyncio's: epoll and a self-pipe): six per bus a process
        # opened, until it exits. Closed once its thread is done with it.
        if not self._thread.is_alive():
            self._loop.close()

    def _require_connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise BusError("not connected")
        return self._connection

    async def _connect(self) -> None:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((*_TRANSIENT, OSError, TimeoutError)),
            stop=stop_after_attempt(self._connect_attempts),
            wait=wait_exponential(multiplier=0.2, max=5),
            reraise=True,
        ):
            with attempt:
                self._connection = await aio_pika.connect_robust(
                    self._url,
                    timeout=self._connect_timeout,
                    client_properties={"connection_name": self.connection_name},
                    reconnect_interval=self._reconnect_interval,
                )
        connection = self._require_connection()
        connection.reconnect_callbacks.add(self._on_reconnect)
        self._channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        self._channel.close_callbacks.add(
            lambda _channel, exc: self._count_channel_close(None, exc)
        )
        self._unconfirmed = await connection.channel(publisher_confirms=False)
        self._exchange = await self._channel.declare_exchange(
            self._exchange_name, aio_pika.ExchangeType.DIRECT, durable=True
        )
        self._dlx = await self._channel.declare_exchange(
            self._dlx_name, aio_pika.ExchangeType.DIRECT, durable=True
        )
        self._reply_lock = asyncio.Lock()

    # -- topology ----------------------------------------------------------------------------

    def _queue_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self._broker_delivery_limit,
            "x-dead-letter-exchange": self._dlx_name,
            # at-least-once: the broker keeps a message until its dead copy is confirmed by
            # the DLQ; it requires reject-publish overflow.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    async def _declare_exchanges(
        self, channel: AbstractChannel
    ) -> tuple[AbstractExchange, AbstractExchange, AbstractExchange]:
        exchange = await channel.declare_exchange(
            self._exchange_name, aio_pika.ExchangeType.DIRECT, durable=True
        )
        dlx = await channel.declare_exchange(
            self._dlx_name, aio_pika.ExchangeType.DIRECT, durable=True
        )
        fanout = await channel.declare_exchange(
            self._fanout_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        return exchange, dlx, fanout

    async def _declare_queue(
        self,
        channel: AbstractChannel,
        name: str,
        arguments: dict[str, Any],
        bindings: list[tuple[AbstractExchange, str]],
        dlx: AbstractExchange,
    ) -> AbstractQueue:
        """A quorum queue with its bindings, and its quorum DLQ "<name>.dlq" fed by the DLX
        with routing key `name` (what `_dead_letter(name, ...)` publishes with)."""
        q = await channel.declare_queue(name, durable=True, arguments=arguments)
        for exchange, key in bindings:
            await q.bind(exchange, routing_key=key)
        dlq = await channel.declare_queue(
            name + DLQ_SUFFIX, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dlq.bind(dlx, routing_key=name)
        return q

    async def _declare_transient(
        self,
        channel: AbstractChannel,
        topic: str,
        exchange: AbstractExchange,
        dlx: AbstractExchange,
    ) -> AbstractQueue:
        """A transient topic's queue: non-durable classic, or the durable queue already there.

        The queue is declared with its arguments, never passively, even when another
        connection created it first: the robust connection replays this declaration after a
        reconnect, and a broker restart loses a non-durable queue, so a passive replay would
        fail (NOT_FOUND) and close the channel with every consumer on it. The probe channel
        tells a durable queue from before the topic became transient (declaring it with other
        arguments is PRECONDITION_FAILED) -- that one outlives a restart and is taken as it is.
        """
        arguments: dict[str, Any] = {
            "x-queue-type": "classic",
            "x-dead-letter-exchange": self._dlx_name,
        }
        probe = await self._require_connection().channel(publisher_confirms=False)
        try:
            await probe.declare_queue(topic, durable=False, arguments=arguments)
            durable_before = False
        except aiormq.exceptions.ChannelPreconditionFailed:
            durable_before = True
        finally:
            if not probe.is_closed:
                await probe.close()
        if durable_before:
            q = await channel.declare_queue(topic, passive=True)
        else:
            q = await channel.declare_queue(topic, durable=False, arguments=arguments)
        await q.bind(exchange, routing_key=topic)
        dlq = await channel.declare_queue(
            topic + DLQ_SUFFIX, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dlq.bind(dlx, routing_key=topic)
        return q

    async def _declare_on(self, channel: AbstractChannel, topic: str) -> AbstractQueue:
        exchange, dlx, fanout = await self._declare_exchanges(channel)
        if topic in self.transient_topics:
            q = await self._declare_transient(channel, topic, exchange, dlx)
        else:
            q = await self._declare_queue(
                channel, topic, self._queue_arguments(), [(exchange, topic)], dlx
            )
        # Everything routed to the topic also reaches the fan-out exchange, where fan-out
        # subscriptions' patterns pick it up; with none bound, the copy goes nowhere.
        await fanout.bind(exchange, routing_key=topic)
        return q

    async def _declare_fanout_on(
        self, channel: AbstractChannel, name: str, patterns: tuple[str, ...]
    ) -> AbstractQueue:
        queue_name = fanout_queue(name)
        _exchange, dlx, fanout = await self._declare_exchanges(channel)
        arguments = self._queue_arguments()
        # Without it the broker's own dead letters would keep the topic as routing key and
        # land in the topic's DLQ; the subscription's poison belongs in its own.
        arguments["x-dead-letter-routing-key"] = queue_name
        return await self._declare_queue(
            channel, queue_name, arguments, [(fanout, p) for p in patterns], dlx
        )

    async def _on_declare_channel(
        self, declare: Callable[[AbstractChannel], Awaitable[AbstractQueue]]
    ) -> None:
        # A separate channel: a PRECONDITION_FAILED (queue exists with other arguments)
        # closes the channel it happens on, and must not take the publish channel with it.
        channel = await self._require_connection().channel(publisher_confirms=False)
        try:
            await declare(channel)
        finally:
            if not channel.is_closed:
                await channel.close()

    def declare(self, topic: str) -> None:
        self._check_open()
        self._check_topic(topic)
        self._call(self._on_declare_channel(lambda channel: self._declare_on(channel, topic)))

    def declare_fanout(self, name: str, patterns: str | Iterable[str]) -> None:
        self._check_open()
        wanted = normalize_patterns(patterns)
        self._call(
            self._on_declare_channel(lambda channel: self._declare_fanout_on(channel, name, wanted))
        )

    async def _delete_queues(self, queue_name: str, unbind_topic: bool) -> None:
        channel = await self._require_connection().channel(publisher_confirms=False)
        try:
            await channel.queue_delete(queue_name)
            await channel.queue_delete(queue_name + DLQ_SUFFIX)
            if unbind_topic:
                # The topic's exchange-to-exchange binding: it would otherwise outlive the
                # topic (harmless, but one per deleted test topic adds up).
                underlay = await channel.get_underlay_channel()
                await underlay.exchange_unbind(
                    destination=self._fanout_name,
                    source=self._exchange_name,
                    routing_key=queue_name,
                )
        finally:
            if not channel.is_closed:
                await channel.close()

    def delete(self, topic: str) -> None:
        self._check_open()
        self._call(self._delete_queues(topic, True))

    def delete_fanout(self, name: str) -> None:
        self._check_open()
        self._call(self._delete_queues(fanout_queue(name), False))

    # -- publishing --------------------------------------------------------------------------

    async def _publish_confirmed(
        self, target: _Target, message: Message, routing_key: str, mandatory: bool
    ) -> None:
        owner, exchange_name = target
        if owner.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError("channel closed")
        # Straight onto aiormq's channel: aio_pika.Message/Exchange.publish cost a noticeable
        # share of the per-message CPU budget and add nothing here.
        # The concrete aiormq Channel: its abstract base does not declare `wait`.
        channel = cast(aiormq.Channel, await owner.get_underlay_channel())
        try:
            await channel.basic_publish(
                message.body,
                exchange=exchange_name,
                routing_key=routing_key,
                properties=_properties(message, self.user_id),
                mandatory=mandatory,
                timeout=self._confirm_timeout,
                # Do not hold the channel lock until the frames reach the socket: the confirm
                # is what we wait for, and a connection lost before the write fails the
                # pending confirm (retried below), so the drain wait only serialised publishes.
                wait=False,
            )
        except aiormq.exceptions.PublishError as exc:
            raise Unroutable(
                f"no queue bound for {routing_key!r} on exchange {exchange_name!r}"
            ) from exc
        except aiormq.exceptions.DeliveryError as exc:
            raise PublishNotConfirmed(f"broker nacked {message.message_id!r}") from exc
        except TimeoutError as exc:
            raise PublishNotConfirmed(
                f"no confirm for {message.message_id!r} within {self._confirm_timeout} s"
            ) from exc

    async def _publish_one(
        self,
        target: _Target,
        message: Message,
        routing_key: str,
        mandatory: bool,
    ) -> None:
        """Publish (confirmed where the target's channel confirms), retrying while the
        connection recovers."""
        try:  # the fast path: no retry machinery per message
            await self._publish_confirmed(target, message, routing_key, mandatory)
            return
        except _TRANSIENT as exc:
            log.warning("bus_publish_retrying", message_id=message.message_id, error=repr(exc))
        try:
            async for attempt in AsyncRetrying(
                # While the robust connection reconnects (and re-declares), keep retrying: the
                # same message id published twice is a duplicate the receiver drops, a message
                # never published is a loss.
                retry=retry_if_exception_type(_TRANSIENT),
                stop=stop_after_delay(self._publish_retry_window),
                wait=wait_exponential(multiplier=0.05, max=1),
                reraise=True,
            ):
                with attempt:
                    await self._publish_confirmed(target, message, routing_key, mandatory)
        except _TRANSIENT as exc:
            raise BrokerUnavailable(
                f"publish of {message.message_id!r} gave up after "
                f"{self._publish_retry_window} s: {exc}"
            ) from exc

    async def _publish_all(
        self, target: _Target, messages: list[Message], routing_key: str | None = None
    ) -> None:
        # All publishes are in flight at once; their confirms come back pipelined.
        # routing_key None: each message goes by its own topic.
        if len(messages) == 1:  # no task of its own (gather makes one per message)
            only = messages[0]
            await self._publish_one(
                target, only, only.topic if routing_key is None else routing_key, True
            )
            return
        results = await asyncio.gather(
            *(
                self._publish_one(target, m, m.topic if routing_key is None else routing_key, True)
                for m in messages
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _main_exchange(self) -> _Target:
        if self._channel is None:
            raise BusError("not connected")
        return (self._channel, self._exchange_name)

    def _publish_parts(self, parts: list[Message]) -> None:
        if len(parts) == 1:
            message = parts[0]
            self._call(self._publish_one(self._main_exchange(), message, message.topic, True))
        else:
            self._call(self._publish_all(self._main_exchange(), parts))

    def _dead_letter(self, queue: str, messages: list[Message]) -> None:
        """Publish dead copies to the DLX (routing key = the queue) and wait for confirms."""
        if self._channel is None:
            raise BusError("not connected")
        self._call(self._publish_all((self._channel, self._dlx_name), messages, queue))

    # -- consuming ---------------------------------------------------------------------------

    def _consume_topic(self, topic: str, prefetch: int) -> BrokerConsumer:
        consumer = _AmqpConsumer(self, topic, lambda _message: topic, prefetch)
        self._call(consumer.start(lambda channel: self._declare_on(channel, topic)))
        return consumer

    def _consume_fanout(
        self, name: str, patterns: tuple[str, ...], prefetch: int
    ) -> BrokerConsumer:
        # A fan-out copy keeps the routing key it was published with: its topic.
        consumer = _AmqpConsumer(self, fanout_queue(name), _routing_key, prefetch)
        self._call(consumer.start(lambda channel: self._declare_fanout_on(channel, name, patterns)))
        return consumer

    # -- request / reply ---------------------------------------------------------------------

    async def _on_reply(self, message: aiormq.abc.DeliveredMessage) -> None:
        # Straight from aiormq: one task per reply (aio-pika's consume wraps each delivery in
        # a second task and an IncomingMessage), and a reply needs none of a topic delivery's
        # bookkeeping (no ack, no delivery count, no dead-letter headers).
        properties = message.header.properties
        raw = properties.headers or {}
        self._deliver_reply(
            Delivery(
                topic=DIRECT_REPLY_TO,
                body=message.body,
                message_id=properties.message_id or "",
                headers={k: t for k, v in raw.items() if (t := _header_text(v)) is not None},
                delivery_count=1,
                correlation_id=properties.correlation_id,
                publisher=properties.user_id or None,
            )
        )

    async def _ensure_reply_channel(self) -> _Target:
        assert self._reply_lock is not None
        async with self._reply_lock:
            if self._reply_channel is None:
                # Direct reply-to: consume the pseudo-queue with no_ack on a channel, then
                # publish requests on that same channel with reply_to = amq.rabbitmq.reply-to.
                channel = await self._require_connection().channel(
                    publisher_confirms=True, on_return_raises=True
                )
                underlay = await channel.get_underlay_channel()
                await underlay.basic_consume(DIRECT_REPLY_TO, self._on_reply, no_ack=True)
                self._reply_channel = channel
            return (self._reply_channel, self._exchange_name)

    def _reply_address(self) -> str:
        # Nothing to wait for on the IO loop: the request's publish opens the reply channel
        # first if it is not open (the first request, or after a reconnect dropped it).
        return DIRECT_REPLY_TO

    def _send_request(self, parts: list[Message], answer: Future[Delivery]) -> None:
        # The caller does not wait for the publish's confirm on its own: it waits once, for
        # the reply, and a failed publish (unroutable, nacked, broker gone past the retry
        # window) fails the reply's future instead. That is one thread wake-up less per
        # request; a caller that stops waiting cancels `answer`, which stops a retrying publish.
        async def go() -> None:
            try:
                await self._publish_request_parts(parts, answer)
            except Exception as exc:
                self._fail_request(answer, exc)

        self._spawn(go())

    async def _publish_request_parts(self, parts: list[Message], answer: Future[Delivery]) -> None:
        """Publish on the reply channel, retried on a fresh one while the connection recovers:
        a channel lost with the connection, or one the robust connection restored without its
        direct reply-to consumer (the broker refuses a request there, PRECONDITION_FAILED
        "fast reply consumer does not exist", and closes it). Stops when the caller stops
        waiting, or with BrokerUnavailable after the retry window."""
        retry = (*_TRANSIENT, aiormq.exceptions.ChannelPreconditionFailed)
        give_up = time.monotonic() + self._publish_retry_window
        pause = 0.05
        while True:
            target: _Target | None = None
            try:
                target = await self._ensure_reply_channel()
                if len(parts) == 1:
                    await self._publish_confirmed(target, parts[0], parts[0].topic, True)
                else:
                    await self._publish_all(target, parts)
                return
            except retry as exc:
                if target is not None:
                    self._drop_reply_channel(target[0])
                if answer.done():
                    return  # the caller stopped waiting: nobody wants it sent now
                if time.monotonic() >= give_up:
                    raise BrokerUnavailable(
                        f"request {parts[0].message_id!r} not published within "
                        f"{self._publish_retry_window} s: {exc}"
                    ) from exc
                log.info("bus_request_retrying", message_id=parts[0].message_id, error=repr(exc))
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    def _drop_reply_channel(self, channel: AbstractChannel) -> None:
        """Forget a reply channel that failed (the next request opens a new one)."""
        if self._reply_channel is channel:
            self._reply_channel = None
            self._loop.create_task(_close_quietly(channel))

    def _send_reply(self, reply_to: str, reply: Message) -> None:
        if self._unconfirmed is None:
            raise BusError("not connected")
        # Not mandatory: a requester that gave up has no reply-to consumer any more, and its
        # reply is meant to vanish (same as memory://). Not confirmed either: a confirm cannot
        # tell that the requester got the reply (direct reply-to drops it silently when the
        # requester is gone), and a reply lost with the connection is a request the requester
        # times out on, confirmed or not (its request, unacked, is delivered again). Waiting
        # for the confirm cost the responder one more round trip to the broker per reply,
        # before its delivery's ack (issue #15). Nor does the responder's thread wait for the
        # publish: the reply goes to the loop ahead of the delivery's ack (both through
        # `_post`, in that order), and a failure is logged (the requester times out).
        self._spawn(self._publish_reply(reply_to, reply))

    async def _publish_reply(self, reply_to: str, reply: Message) -> None:
        try:
            if self._unconfirmed is None:
                raise BusError("not connected")
            await self._publish_one((self._unconfirmed, ""), reply, reply_to, False)
        except Exception as exc:
            log.warning(
                "bus_reply_not_sent",
                correlation_id=reply.correlation_id,
                error=f"{type(exc).__name__}: {exc}",
            )

    # -- operators ---------------------------------------------------------------------------

    async def _drain_dlq(self, queue_name: str, limit: int) -> list[Delivery]:
        channel = await self._require_connection().channel(publisher_confirms=False)
        taken: list[Delivery] = []
        try:
            try:
                dlq = await channel.declare_queue(queue_name + DLQ_SUFFIX, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return []  # never declared: nothing was dead-lettered
            last: AbstractIncomingMessage | None = None
            while len(taken) < limit:
                message = await dlq.get(no_ack=False, fail=False, timeout=10)
                if message is None:
                    break
                taken.append(_to_delivery(queue_name + DLQ_SUFFIX, message))
                last = message
            if last is not None:
                await last.ack(multiple=True)
        finally:
            if not channel.is_closed:
                await channel.close()
        return taken

    def _take_dead_letters(self, queue: str, limit: int) -> list[Delivery]:
        return self._call(self._drain_dlq(queue, limit))

    def _disconnect(self) -> None:
        if self._connection is not None:
            try:
                self._call(self._connection.close(), timeout=10)
            except Exception as exc:
                log.info("bus_connection_close_failed", error=repr(exc))
        self._stop_loop()
        log.debug("bus_closed", connection_name=self.connection_name)
