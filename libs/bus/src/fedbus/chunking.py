"""Splitting large bodies into chunk messages and putting them back together.

Wire format (every chunk is an ordinary message on the same topic):
- message_id  "<original message_id>:c<index>" (deterministic, so a re-sent chunk dedupes)
- headers     the original message's headers, plus the manifest, repeated on every chunk so
              that any chunk can start a set:
                x-fedmq-chunk-of      original message_id
                x-fedmq-chunk-index   0-based index of this chunk
                x-fedmq-chunk-count   number of chunks in the set
                x-fedmq-chunk-total   length in bytes of the whole body
                x-fedmq-chunk-sha256  lowercase hex SHA-256 of the whole body
- body        bytes [index * size, (index + 1) * size) of the original body
- reply_to / correlation_id copied from the original.

Receivers store chunks in a ChunkStore; the consumer that stores the last missing one
reassembles, verifies length and SHA-256, runs the handler with one Delivery carrying the
original message_id, finishes the set, and only then acks that last chunk. Sets that stay
incomplete past the reassembly timeout are dead-lettered by `ChunkSweeper`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

import structlog

from fedbus.bus import HEADER_DEAD_REASON, HEADER_ORIGINAL_TOPIC, Delivery, Message
from fedbus.chunk_store import ChunkSetInfo, ChunkStore, StoredChunk

log = structlog.get_logger("fedbus")

HEADER_CHUNK_OF = "x-fedmq-chunk-of"
HEADER_CHUNK_INDEX = "x-fedmq-chunk-index"
HEADER_CHUNK_COUNT = "x-fedmq-chunk-count"
HEADER_CHUNK_TOTAL = "x-fedmq-chunk-total"
HEADER_CHUNK_SHA256 = "x-fedmq-chunk-sha256"
CHUNK_HEADERS = frozenset(
    {
        HEADER_CHUNK_OF,
        HEADER_CHUNK_INDEX,
        HEADER_CHUNK_COUNT,
        HEADER_CHUNK_TOTAL,
        HEADER_CHUNK_SHA256,
    }
)

DEFAULT_MAX_FRAME_BYTES = 8 * 1024 * 1024
DEFAULT_REASSEMBLY_TIMEOUT = 600.0


def chunk_id(message_id: str, index: int) -> str:
    return f"{message_id}:c{index}"


def split(message: Message, max_frame_bytes: int) -> list[Message]:
    """The message itself when it fits, else its chunk messages in index order."""
    if max_frame_bytes <= 0:
        raise ValueError("max_frame_bytes must be positive")
    body = message.body
    if len(body) <= max_frame_bytes:
        return [message]
    count = -(-len(body) // max_frame_bytes)
    manifest = {
        HEADER_CHUNK_OF: message.message_id,
        HEADER_CHUNK_COUNT: str(count),
        HEADER_CHUNK_TOTAL: str(len(body)),
        HEADER_CHUNK_SHA256: hashlib.sha256(body).hexdigest(),
    }
    base = {k: v for k, v in message.headers.items() if k not in CHUNK_HEADERS}
    view = memoryview(body)
    return [
        Message(
            topic=message.topic,
            body=bytes(view[i * max_frame_bytes : (i + 1) * max_frame_bytes]),
            message_id=chunk_id(message.message_id, i),
            headers={**base, **manifest, HEADER_CHUNK_INDEX: str(i)},
            reply_to=message.reply_to,
            correlation_id=message.correlation_id,
        )
        for i in range(count)
    ]


def is_chunk(headers: Mapping[str, str]) -> bool:
    return HEADER_CHUNK_OF in headers


def chunk_set_info(topic: str, delivery: Delivery) -> ChunkSetInfo:
    """The manifest a chunk delivery carries. Raises ValueError on a malformed manifest."""
    h = delivery.headers
    try:
        info = ChunkSetInfo(
            topic=topic,
            message_id=h[HEADER_CHUNK_OF],
            count=int(h[HEADER_CHUNK_COUNT]),
            total_bytes=int(h[HEADER_CHUNK_TOTAL]),
            sha256=h[HEADER_CHUNK_SHA256],
            headers={k: v for k, v in h.items() if k not in CHUNK_HEADERS},
            reply_to=delivery.reply_to,
            correlation_id=delivery.correlation_id,
        )
        index = int(h[HEADER_CHUNK_INDEX])
    except (KeyError, ValueError) as exc:
        raise ValueError(f"malformed chunk manifest: {exc}") from exc
    if info.count < 1 or not 0 <= index < info.count or info.total_bytes < 0:
        raise ValueError("malformed chunk manifest: index/count out of range")
    return info


def chunk_index(delivery: Delivery) -> int:
    return int(delivery.headers[HEADER_CHUNK_INDEX])


def chunk_messages(info: ChunkSetInfo, chunks: Iterable[StoredChunk]) -> list[Message]:
    """Rebuild the chunk messages of a (possibly incomplete) stored set, e.g. to dead-letter."""
    manifest = {
        HEADER_CHUNK_OF: info.message_id,
        HEADER_CHUNK_COUNT: str(info.count),
        HEADER_CHUNK_TOTAL: str(info.total_bytes),
        HEADER_CHUNK_SHA256: info.sha256,
    }
    return [
        Message(
            topic=info.topic,
            body=c.body,
            message_id=chunk_id(info.message_id, c.index),
            headers={**info.headers, **manifest, HEADER_CHUNK_INDEX: str(c.index)},
            reply_to=info.reply_to,
            correlation_id=info.correlation_id,
        )
        for c in chunks
    ]


def as_message(delivery: Delivery) -> Message:
    """The message a delivery carries, to publish again (dead copies, a malformed chunk)."""
    return Message(
        topic=delivery.topic,
        body=delivery.body,
        message_id=delivery.message_id,
        headers=dict(delivery.headers),
        reply_to=delivery.reply_to,
        correlation_id=delivery.correlation_id,
    )


def dead_copy(message: Message, reason: str, original_topic: str) -> Message:
    """The copy of `message` that goes to the dead-letter queue, carrying why and from where."""
    headers = {**message.headers, HEADER_DEAD_REASON: reason, HEADER_ORIGINAL_TOPIC: original_topic}
    return replace(message, headers=headers)


def verify(info: ChunkSetInfo, chunks: list[StoredChunk]) -> bytes | str:
    """The whole body when the set checks out, else the reason it does not."""
    if [c.index for c in chunks] != list(range(info.count)):
        return f"incomplete: {len(chunks)} of {info.count} chunks"
    body = b"".join(c.body for c in chunks)
    if len(body) != info.total_bytes:
        return f"checksum mismatch: length {len(body)} != {info.total_bytes}"
    if hashlib.sha256(body).hexdigest() != info.sha256:
        return "checksum mismatch"
    return body


# What `Reassembler.accept` found; the adapter acts on it.
@dataclass(frozen=True)
class Whole:
    """Not a chunk: handle the delivery as it is."""

    delivery: Delivery


@dataclass(frozen=True)
class Stored:
    """A chunk was stored and its set is still incomplete."""

    info: ChunkSetInfo


@dataclass(frozen=True)
class Complete:
    """This chunk completed its set: handle `delivery`, then `finish` and ack this chunk."""

    delivery: Delivery
    info: ChunkSetInfo


@dataclass(frozen=True)
class Invalid:
    """The set is complete but corrupt (or the manifest is malformed): dead-letter `messages`."""

    reason: str
    info: ChunkSetInfo | None
    messages: list[Message]


@dataclass(frozen=True)
class AlreadyDone:
    """A late duplicate chunk of a set that was already handled: just ack it."""


Accepted = Whole | Stored | Complete | Invalid | AlreadyDone


class Reassembler:
    """Feeds chunk deliveries into a ChunkStore and hands back whole messages."""

    def __init__(self, store: ChunkStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock

    def accept(self, delivery: Delivery, *, queue: str | None = None) -> Accepted:
        """`queue`: where the chunk was consumed from (default: its topic); sets are kept per
        queue, so a topic's consumers and a fan-out subscription never share one."""
        if not is_chunk(delivery.headers):
            return Whole(delivery)
        try:
            info = chunk_set_info(delivery.topic if queue is None else queue, delivery)
        except ValueError as exc:
            return Invalid(str(exc), None, [as_message(delivery)])
        stored = self.store.put(info, chunk_index(delivery), delivery.body, now=self._clock())
        if stored < 0:
            return AlreadyDone()
        if stored < info.count:
            return Stored(info)
        chunks = self.store.load(info.topic, info.message_id)
        if len(chunks) < info.count:
            # Another consumer completed, handled and finished the set between our count and
            # our load: the message was handled; this chunk is a duplicate.
            return AlreadyDone()
        body = verify(info, chunks)
        if isinstance(body, str):
            return Invalid(body, info, chunk_messages(info, chunks))
        whole = Delivery(
            topic=delivery.topic,
            body=body,
            message_id=info.message_id,
            headers=dict(info.headers),
            delivery_count=delivery.delivery_count,
            reply_to=info.reply_to,
            correlation_id=info.correlation_id,
            # The completing chunk's publisher (docs/security.md: chunks of one set are not
            # checked to share one publisher).
            publisher=delivery.publisher,
        )
        return Complete(whole, info)

    def finish(self, info: ChunkSetInfo) -> None:
        self.store.finish(info.topic, info.message_id, now=self._clock())


def regroup_dead_letters(deliveries: list[Delivery]) -> list[Delivery]:
    """Reassemble chunk sets found among drained dead letters; leave the rest as they are.

    Chunks of sets that are incomplete or corrupt stay individual deliveries (their headers
    name the set, index and reason), so an operator loses nothing."""
    groups: dict[tuple[str, str], list[Delivery]] = {}
    out: list[Delivery | tuple[str, str]] = []
    for d in deliveries:
        if not is_chunk(d.headers):
            out.append(d)
            continue
        key = (d.headers.get(HEADER_ORIGINAL_TOPIC, d.topic), d.headers[HEADER_CHUNK_OF])
        if key not in groups:
            groups[key] = []
            out.append(key)
        groups[key].append(d)
    result: list[Delivery] = []
    for item in out:
        if isinstance(item, Delivery):
            result.append(item)
            continue
        members = groups[item]
        try:
            info = chunk_set_info(members[0].topic, members[0])
            unique = {chunk_index(d): d for d in members}
            chunks = [StoredChunk(i, unique[i].body) for i in sorted(unique)]
        except (ValueError, KeyError):
            result.extend(members)
            continue
        body = verify(info, chunks)
        if isinstance(body, str):
            result.extend(members)
            continue
        result.append(
            Delivery(
                topic=members[0].topic,
                body=body,
                message_id=info.message_id,
                headers=dict(info.headers),
                delivery_count=members[-1].delivery_count,
                reply_to=info.reply_to,
                correlation_id=info.correlation_id,
            )
        )
    return result


class ChunkSweeper:
    """Dead-letters chunk sets that stayed incomplete past the reassembly timeout.

    `dead_letter(topic, messages)` must publish the dead copies durably (confirmed) before it
    returns; only then is the set forgotten. `on_finished(info)` lets an adapter release
    chunk deliveries it held unacknowledged for a non-durable store.
    """

    def __init__(
        self,
        store: ChunkStore,
        dead_letter: Callable[[str, list[Message]], None],
        *,
        reassembly_timeout: float = DEFAULT_REASSEMBLY_TIMEOUT,
        interval: float | None = None,
        on_finished: Callable[[ChunkSetInfo], None] | None = None,
        clock: Callable[[], float] = time.time,
        lock: threading.Lock | None = None,
    ) -> None:
        # `lock` serialises sweepers that share one store in one process (memory:// buses).
        self._lock = lock if lock is not None else threading.Lock()
        self._store = store
        self._dead_letter = dead_letter
        self._timeout = reassembly_timeout
        self._interval = (
            interval if interval is not None else max(0.05, min(30.0, reassembly_timeout / 4))
        )
        self._on_finished = on_finished
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="fedbus-chunk-sweeper", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.sweep_once()
            except Exception as exc:  # the sweeper must outlive a broker hiccup
                log.warning("bus_chunk_sweep_failed", error=f"{type(exc).__name__}: {exc}")

    def sweep_once(self) -> int:
        """Dead-letter every expired set now; returns how many sets went."""
        with self._lock:
            return self._sweep()

    def _sweep(self) -> int:
        now = self._clock()
        swept = 0
        for expired in self._store.expired(now - self._timeout):
            info = expired.info
            chunks = self._store.load(info.topic, info.message_id)
            if not chunks:
                continue
            reason = (
                f"incomplete: {len(chunks)} of {info.count} chunks after "
                f"{int(now - expired.first_seen)} s"
            )
            dead = [dead_copy(m, reason, info.topic) for m in chunk_messages(info, chunks)]
            self._dead_letter(info.topic, dead)
            self._store.finish(info.topic, info.message_id, now=now)
            if self._on_finished is not None:
                self._on_finished(info)
            log.warning(
                "bus_chunk_set_dead_lettered",
                topic=info.topic,
                message_id=info.message_id,
                stored=len(chunks),
                count=info.count,
            )
            swept += 1
        self._store.purge_finished(now - 2 * self._timeout)
        return swept
