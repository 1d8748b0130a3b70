"""The relay: local broker -> link -> remote broker, acknowledged at the source only on confirm.

Outbound (`OutboundRelay`): for each configured peer P, ONE consumer with prefetch `window`
takes messages off the local topic "out.<P>" in groups (whatever is waiting, up to `window`).
Each message of a group is decoded (malformed -> dead-lettered at the source), checked to be
addressed to P and to come from this party, signed with the party's signing key if it is
unsigned (the gateway is the only process holding that key), and sent over P's link; the
group's messages are sent side by side (`window` sender threads per peer), so up to `window`
frames are unacknowledged on the link at once. A message is acked at the source only when P's
gateway ACKed it, which it does only after its own broker confirmed the publish (like RabbitMQ
Shovel's on-confirm mode). A REFUSED answer dead-letters the source message with the peer's
reason.

Why one consumer, not `window` consumers of one message each (issue #21): out.<P> is a quorum
queue whose x-delivery-limit (20) counts every return of a message, and when the broker node is
killed and restarts, the queue learns one by one that the consumers of the old connection are
gone. A message returned by the first dead consumer was handed straight to another consumer not
yet known dead, returned again, and so on: with 96 consumers a message in flight at the crash
hopped through 20 dead ones during the node's recovery and was dead-lettered before the relay
ever saw it again (reproduced: a job.status on out.<peer>, no redelivery reached the handler).
With one consumer per peer a crash returns each in-flight message once (+1 to its count, as for
any consumer death), so a message is dead-lettered by the broker only after 20 deaths of its
consumer while it was in flight -- a message that keeps killing the gateway, what the limit is
for -- never by one outage.

Inbound (`RelayInboundSession`): DATA frames from one authenticated peer go through the Verifier
on one thread, are published in batches (publish_many: one wait for many confirms) on another,
and are ACKed after the confirms. A crash anywhere before the ACK makes the sender resend;
duplicates this creates carry the same message id and are dropped by the receiver's inbox.

Traces: each relayed message gets a span, "relay out <type>" (PRODUCER) at the sending gateway
and "relay in <type>" (CONSUMER) at the receiving one, whose parent is the envelope's
traceparent. The gateway cannot stamp its own span into the envelope (the signature covers the
traceparent), so both hang off the publisher's span, next to the handler's span at the other
party: the trace shows when the message crossed each gateway.

Chunked bus messages: the bus reassembles them before the handler runs, so the relay carries
whole envelopes and the receiving bus chunks again if they exceed its frame size.

Logs: every relayed message is a `relayed` event with its job id, task id and attempt, at info
for the first message of a job in each direction and peer and at debug after that
(`RelayJobLog`), so every job, successful ones included, leaves its id in the gateway's log at
the default level without a line per message. Dead letters of out.<peer> are counted by reason
(fedmq_gateway_relay_dead_lettered_total; the peer's own reasons in
fedmq_gateway_peer_refused_total).
"""

from __future__ import annotations

import asyncio
import dataclasses
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import structlog
from fedbus import Bus, Delivery, Message, Reject, Subscription
from fedcommon.tracing import extract_context, span_from_remote
from fedcrypto.signing import SigningKey
from fedschemas import (
    Envelope,
    MalformedMessage,
    canonical_bytes,
    decode_envelope,
    topics,
)
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from fedgateway import compression
from fedgateway.envelope_bytes import wire_bytes
from fedgateway.framing import (
    DataFrame,
    FrameType,
    ProtocolError,
    decode_data,
    encode_ack,
    encode_refused,
    held_size,
)
from fedgateway.link import FrameSender, LinkStopped, MessageRefused, PeerLink
from fedgateway.metrics import GatewayMetrics
from fedgateway.verify import Accepted, Refused, Verifier

log = structlog.get_logger("fedgateway.relay")

OUT_TOPIC_PREFIX = topics.OUT_PREFIX
TRACER_NAME = "fedmq.gateway"


def out_topic(peer_party: str) -> str:
    return f"{OUT_TOPIC_PREFIX}{peer_party}"


class RelayJobLog:
    """The `relayed` log lines: info for the first message of each (direction, peer, job) among
    the last `remember` such keys, debug for the others. Thread-safe."""

    def __init__(self, remember: int = 4096) -> None:
        self._remember = remember
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def relayed(self, direction: str, peer: str, envelope: Envelope, message_id: str) -> None:
        key = (direction, peer, envelope.job_id)
        with self._lock:
            first = key not in self._seen
            self._seen[key] = None
            self._seen.move_to_end(key)
            if len(self._seen) > self._remember:
                self._seen.popitem(last=False)
        (log.info if first else log.debug)(
            "relayed",
            direction=direction,
            peer=peer,
            job_id=envelope.job_id,
            task_id=envelope.task_id or None,
            attempt=envelope.attempt,
            message_type=envelope.type,
            message_id=message_id,
            first_of_job=first,
        )


def _relay_attributes(envelope: Envelope, peer: str, direction: str) -> dict[str, str]:
    return {
        "messaging.system": "fedmq",
        "messaging.message.id": envelope.message_id,
        "fedmq.message_type": envelope.type,
        "fedmq.job_id": envelope.job_id,
        "fedmq.task_id": envelope.task_id,
        "fedmq.source_party": envelope.source.party_id,
        "fedmq.destination_party": envelope.destination.party_id,
        "fedmq.peer": peer,
        "fedmq.relay_direction": direction,
    }


@dataclass(frozen=True)
class Signer:
    key: SigningKey
    key_id: str


def sign_envelope(envelope: Envelope, signer: Signer) -> bytes:
    """The wire bytes of `envelope` signed by this party: `signer_key_id` is set first, as it is
    part of the signed canonical bytes."""
    unsigned = envelope.model_copy(update={"signer_key_id": signer.key_id})
    # The signed bytes hold the payload's SHA-256 (one pass over a large ciphertext); the wire
    # bytes are encode_envelope(signed) with the payload copied once, not packed
    # (envelope_bytes.py).
    signature = signer.key.sign(canonical_bytes(unsigned))
    return wire_bytes(unsigned.model_copy(update={"signature": signature}))


class OutboundRelay:
    """Consumes out.<peer> for every peer and sends each message over that peer's link."""

    def __init__(
        self,
        bus: Bus,
        links: Mapping[str, PeerLink],
        *,
        party_id: str,
        signer: Callable[[], Signer],
        metrics: GatewayMetrics,
        window: int,
        max_deliveries: int,
        max_envelope_bytes: int,
        tracer: Tracer | None = None,
        job_log: RelayJobLog | None = None,
    ) -> None:
        self._bus = bus
        self._tracer = tracer or trace.get_tracer(TRACER_NAME)
        self._job_log = job_log or RelayJobLog()
        self._links = dict(links)
        self._party_id = party_id
        self._signer = signer
        self._metrics = metrics
        self._window = window
        self._max_deliveries = max_deliveries
        self._max_envelope_bytes = max_envelope_bytes
        self._subscriptions: list[Subscription] = []
        self._senders: dict[str, ThreadPoolExecutor] = {}
        # Refusals found while handling a group, by delivery (identity): the bus hands those
        # deliveries to the per-message handler, which raises the same Reject without sending
        # the message again.
        self._refusals: dict[int, Reject] = {}
        self._refusals_lock = threading.Lock()

    def start(self) -> None:
        for peer in self._links:
            topic = out_topic(peer)
            self._bus.declare(topic)
            self._senders[peer] = ThreadPoolExecutor(
                self._window, thread_name_prefix=f"gw-relay-{peer}"
            )
            # One consumer per peer (see the module's docstring: many consumers let a broker
            # restart burn a message's delivery limit); `window` messages in flight at most.
            self._subscriptions.append(
                self._bus.subscribe_batched(
                    topic,
                    partial(self._handle, peer),
                    partial(self._handle_group, peer),
                    batch_size=self._window,
                    prefetch=self._window,
                    max_deliveries=self._max_deliveries,
                )
            )
            log.info("relay_consuming", topic=topic, window=self._window)

    def stop(self) -> None:
        """Stop taking messages; in-flight sends finish (ACKed) or go back to the broker."""
        threads = [threading.Thread(target=s.cancel, daemon=True) for s in self._subscriptions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self._subscriptions.clear()
        for sender in self._senders.values():
            sender.shutdown(wait=False)
        self._senders.clear()

    def _handle_group(self, peer: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """Send a group side by side; return the deliveries that were not relayed (refused,
        or failed: the bus runs `_handle` on each, which dead-letters or requeues it)."""
        futures = [(d, self._senders[peer].submit(self._relay, peer, d)) for d in deliveries]
        left: list[Delivery] = []
        for delivery, future in futures:
            exc = future.exception()
            if exc is None:
                continue
            if isinstance(exc, Reject):
                with self._refusals_lock:
                    self._refusals[id(delivery)] = exc
            left.append(delivery)
        return left

    def _handle(self, peer: str, delivery: Delivery) -> None:
        with self._refusals_lock:
            refused = self._refusals.pop(id(delivery), None)
        if refused is not None:
            raise refused  # counted where it was raised, in the group
        try:
            self._relay(peer, delivery)
        except Reject:
            raise  # counted where it was raised
        except Exception:
            # Requeued by the bus, or dead-lettered by it at the delivery limit: count that.
            if delivery.delivery_count >= self._max_deliveries:
                self._metrics.relay_dead_lettered.labels(peer, "delivery_limit").inc()
            raise

    def _relay(self, peer: str, delivery: Delivery) -> None:
        started = time.perf_counter()
        if delivery.delivery_count > 1:
            log.info(
                "relay_redelivered",
                peer=peer,
                message_id=delivery.message_id,
                delivery_count=delivery.delivery_count,
            )
        try:
            env = decode_envelope(delivery.body, max_bytes=self._max_envelope_bytes)
        except MalformedMessage as exc:
            log.warning(
                "relay_malformed", peer=peer, message_id=delivery.message_id, reason=exc.reason
            )
            self._metrics.relay_dead_lettered.labels(peer, "malformed").inc()
            raise Reject(f"malformed envelope: {exc.reason}") from None
        with span_from_remote(
            self._tracer, f"relay out {env.type}", env.traceparent, kind=SpanKind.PRODUCER
        ) as span:
            span.set_attributes(_relay_attributes(env, peer, "out"))
            span.set_attribute("messaging.delivery_count", delivery.delivery_count)
            self._send(peer, delivery, env, started)

    def _send(self, peer: str, delivery: Delivery, env: Envelope, started: float) -> None:
        if env.destination.party_id != peer:
            self._metrics.relay_dead_lettered.labels(peer, "wrong_destination").inc()
            raise Reject(
                f"envelope addressed to party {env.destination.party_id}, "
                f"published to {out_topic(peer)}"
            )
        if env.source.party_id != self._party_id:
            self._metrics.relay_dead_lettered.labels(peer, "wrong_source").inc()
            raise Reject(
                f"envelope source party {env.source.party_id} is not this party "
                f"({self._party_id}); the gateway relays only its own party's messages"
            )
        body = delivery.body
        if env.signature is None:
            body = sign_envelope(env, self._signer())
        try:
            self._links[peer].send(delivery.message_id, delivery.headers, body)
        except MessageRefused as exc:
            log.warning(
                "relay_refused_by_peer",
                peer=peer,
                message_id=delivery.message_id,
                job_id=env.job_id,
                task_id=env.task_id or None,
                reason=exc.reason,
            )
            self._metrics.count_peer_refusal(peer, exc.reason)
            raise Reject(f"refused by party {peer}: {exc.reason}") from None
        except LinkStopped:
            raise  # the bus requeues it; another gateway run sends it
        self._job_log.relayed("out", peer, env, delivery.message_id)
        self._metrics.relayed.labels("out", peer).inc()
        self._metrics.relayed_bytes.labels("out", peer).inc(len(body))
        self._metrics.relay_seconds.labels(peer).observe(time.perf_counter() - started)


_CLOSE = object()


class RelayInboundSession:
    """The receiving half of one authenticated link connection.

    The loop thread queues raw DATA bodies; `workers` threads each take a batch of whatever is
    queued, verify every frame (REFUSED for the bad ones), publish the good ones with one wait
    for all their confirms, and ACK them. Several workers overlap: one waits for its confirms
    while the next batch is verified and goes out (confirm latency, not CPU, bounds one)."""

    def __init__(
        self,
        *,
        peer_party: str,
        sender: FrameSender,
        verifier: Verifier,
        bus: Bus,
        metrics: GatewayMetrics,
        buffer_bytes: int,
        max_batch: int = 256,
        workers: int = 3,
        retry_interval: float = 0.5,
        tracer: Tracer | None = None,
        job_log: RelayJobLog | None = None,
    ) -> None:
        self.peer_party = peer_party
        self._tracer = tracer or trace.get_tracer(TRACER_NAME)
        self._job_log = job_log or RelayJobLog()
        self._sender = sender
        self._verifier = verifier
        self._bus = bus
        self._metrics = metrics
        self._buffer_bytes = buffer_bytes
        self._max_batch = max_batch
        self._retry_interval = retry_interval
        self._buffered = 0
        self._buffer_lock = threading.Lock()
        self._room: asyncio.Event | None = None
        self._waiting_for_room = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.Queue[object] = queue.Queue()
        self._closed = threading.Event()
        self._workers = workers
        self._threads = [
            threading.Thread(target=self._work, name=f"gw-inbound-{peer_party}", daemon=True)
            for _ in range(workers)
        ]
        for t in self._threads:
            t.start()

    # loop thread ---------------------------------------------------------------------------

    async def on_data(self, body: bytes | DataFrame) -> None:
        if self._room is None:
            self._loop = asyncio.get_running_loop()
            self._room = asyncio.Event()
        # Bounded memory per peer: wait while too many bytes are taken but not yet ACKed.
        size = held_size(body)
        while True:
            with self._buffer_lock:
                if self._buffered == 0 or self._buffered + size <= self._buffer_bytes:
                    self._buffered += size
                    break
                self._room.clear()
                self._waiting_for_room = True
            await self._room.wait()
        self._queue.put(body)

    @property
    def buffered_bytes(self) -> int:
        """Bytes taken off the link and not yet published and ACKed (0 = idle)."""
        with self._buffer_lock:
            return self._buffered

    def close(self) -> None:
        """Connection gone: frames not yet published are dropped (never ACKed: resent later)."""
        self._closed.set()
        for _ in range(self._workers):
            self._queue.put(_CLOSE)

    # worker threads ------------------------------------------------------------------------

    def _release(self, nbytes: int) -> None:
        with self._buffer_lock:
            self._buffered -= nbytes
            wake, self._waiting_for_room = self._waiting_for_room, False
        if wake and self._loop is not None and self._room is not None:
            self._loop.call_soon_threadsafe(self._room.set)

    def _take_batch(self) -> tuple[list[bytes | DataFrame], bool]:
        first = self._queue.get()
        if first is _CLOSE:
            return [], True
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _CLOSE:
                return batch, True  # type: ignore[return-value]
            batch.append(item)
        return batch, False  # type: ignore[return-value]

    def _verify(self, raw: bytes | DataFrame) -> tuple[DataFrame, Accepted] | None:
        try:
            frame = raw.whole() if isinstance(raw, DataFrame) else decode_data(raw)
        except ProtocolError as exc:
            log.warning("link_protocol_error", peer_party=self.peer_party, error=str(exc))
            self._sender.close()
            return None
        try:
            if frame.raw_size is not None:
                frame = self._decompressed(frame)
            accepted = self._verifier.check(
                frame.body, message_id=frame.message_id, peer_party=self.peer_party
            )
        except Refused as exc:
            self._metrics.refused.labels(exc.reason).inc()
            log.warning(
                "message_refused",
                reason=exc.reason,
                detail=exc.detail,
                peer_party=self.peer_party,
                message_id=frame.message_id,
            )
            self._sender.send(FrameType.REFUSED, encode_refused(frame.seq, exc.reason))
            return None
        return frame, accepted

    def _decompressed(self, frame: DataFrame) -> DataFrame:
        """`frame` with its zstd body decompressed (compression.py), or Refused("malformed"):
        the envelope it should hold cannot be read."""
        assert frame.raw_size is not None
        try:
            body = compression.decompress(
                frame.body, frame.raw_size, limit=self._verifier.max_envelope_bytes
            )
        except compression.BadCompression as exc:
            raise Refused("malformed", f"compressed DATA body: {exc}") from None
        return dataclasses.replace(frame, body=body, raw_size=None)

    def _open_span(self, accepted: Accepted) -> Span:
        env = accepted.envelope
        span = self._tracer.start_span(
            f"relay in {env.type}",
            context=extract_context(env.traceparent),
            kind=SpanKind.CONSUMER,
            attributes=_relay_attributes(env, self.peer_party, "in"),
        )
        span.set_attribute("messaging.destination.name", accepted.topic)
        return span

    def _work(self) -> None:
        while True:
            batch, closing = self._take_batch()
            if batch:
                self._handle_batch(batch)
            if closing:
                return

    def _handle_batch(self, batch: list[bytes | DataFrame]) -> None:
        nbytes = sum(map(held_size, batch))
        accepted = [a for a in map(self._verify, batch) if a is not None]
        if accepted:
            # One span per message, from verified to published-and-confirmed (or given up).
            spans = [self._open_span(a) for _, a in accepted]
            messages = [
                Message(topic=a.topic, body=f.body, message_id=f.message_id, headers=f.headers)
                for f, a in accepted
            ]
            started = time.perf_counter()
            published = self._publish(messages)
            for span in spans:
                if not published:
                    span.set_status(Status(StatusCode.ERROR, "link closed before the publish"))
                span.end()
            self._metrics.publish_seconds.labels(self.peer_party).observe(
                time.perf_counter() - started
            )
            self._metrics.publish_batch.labels(self.peer_party).observe(len(messages))
            if published:
                self._sender.send(FrameType.ACK, encode_ack([f.seq for f, _ in accepted]))
                for (frame, verified), span in zip(accepted, spans, strict=True):
                    with trace.use_span(span):  # the line carries its message's trace id
                        self._job_log.relayed(
                            "in", self.peer_party, verified.envelope, frame.message_id
                        )
                self._metrics.relayed.labels("in", self.peer_party).inc(len(accepted))
                self._metrics.relayed_bytes.labels("in", self.peer_party).inc(
                    sum(len(f.body) for f, _ in accepted)
                )
        self._release(nbytes)

    def _publish(self, messages: list[Message]) -> bool:
        """Publish and wait for the confirms, retrying while the connection lasts."""
        while True:
            try:
                self._bus.publish_many(messages)
                return True
            except Exception as exc:  # broker down, nack, unroutable: keep the frames unacked
                log.warning(
                    "relay_publish_failed",
                    peer_party=self.peer_party,
                    count=len(messages),
                    error=f"{type(exc).__name__}: {exc}",
                )
                if self._closed.wait(self._retry_interval):
                    return False
