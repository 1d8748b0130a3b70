"""Large DATA bodies striped across a peer's parallel link connections (docs/wan.md).

One TCP stream on a long, lossy path is limited by its own congestion window; several carry
more, and a stream that resets or stalls need not stop the transfer. A body of at least
`stripe_bytes` is cut into chunks (STRIPE frames, framing.py) that go out on whichever of the
peer's connections has room; the server ACKs each chunk (STRIPE_ACK) once it holds it, in a
store kept per peer party, not per connection. When every chunk is ACKed the client sends an
ordinary DATA frame that names the transfer; the server delivers the reassembled body to the
relay as if it had come in that frame, and ACKs it like any DATA frame. So the relay's promises
(ACK only after the receiver's broker confirmed; resend until ACKed; duplicates dropped by the
inbox) are those of one DATA frame.

Client side (`StripeTransfer`, loop thread only): chunks wait in a queue; a connection takes
the next one while its chunk bytes in flight are under `stream_window`. A connection that
closes gives its un-ACKed chunks back to the queue (they go out on the others, or on it once
it is back); what the server ACKed is never sent again. A connection with chunks in flight
that has ACKed nothing for `stall_after` seconds is routed around: its chunks are queued again
for the others and it gets no new ones until it ACKs again (a late ACK of a chunk also sent
elsewhere counts once).

Server side (`StripeStore`, loop thread only): chunks per transfer; bounded in bytes per peer
(the oldest transfer is evicted beyond it) and in time (a transfer untouched for `ttl_s` is
dropped). A DATA frame naming a transfer it does not hold complete is REFUSED with
STRIPE_MISSING and the client stripes it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from fedgateway.framing import StripeChunk, encode_stripe_prefix, stripe_chunk_bytes

log = structlog.get_logger("fedgateway.stripe")

DEFAULT_CHUNK_BYTES = 1 << 20
DEFAULT_STREAM_WINDOW = 16 << 20
DEFAULT_STALL_AFTER = 5.0
STORE_TTL_S = 600.0


# --- server side -----------------------------------------------------------------------------


@dataclass
class _Assembly:
    count: int
    total: int
    chunks: dict[int, bytes | memoryview] = field(default_factory=dict)
    """Views into the STRIPE frames they came in: joined once, when the transfer is taken."""
    held: int = 0
    touched: float = 0.0


class StripeStore:
    """The chunks one peer party striped to this gateway (loop thread only)."""

    def __init__(self, max_bytes: int, ttl_s: float = STORE_TTL_S) -> None:
        self._max_bytes = max_bytes
        self._ttl_s = ttl_s
        self._transfers: OrderedDict[int, _Assembly] = OrderedDict()
        self.held_bytes = 0

    def add(self, chunk: StripeChunk) -> bool:
        """Keep `chunk` (a repeat is ignored); False when it contradicts its transfer (a
        protocol error: another count or total for the same xid)."""
        now = time.monotonic()
        self._expire(now)
        assembly = self._transfers.get(chunk.xid)
        if assembly is None:
            assembly = _Assembly(count=chunk.count, total=chunk.total)
            self._transfers[chunk.xid] = assembly
        elif assembly.count != chunk.count or assembly.total != chunk.total:
            return False
        assembly.touched = now
        self._transfers.move_to_end(chunk.xid)
        if chunk.index not in assembly.chunks:
            assembly.chunks[chunk.index] = chunk.data
            assembly.held += len(chunk.data)
            self.held_bytes += len(chunk.data)
            self._evict(keep=chunk.xid)
        return True

    def take(self, xid: int, total: int) -> tuple[bytes | memoryview, ...] | None:
        """The chunks of transfer `xid` in order, if every one is here and they are `total`
        bytes long (removed from the store); None otherwise. Not joined here: the link's loop
        thread calls this, and the copy is better made by the thread that reads the body."""
        assembly = self._transfers.get(xid)
        if assembly is None or assembly.total != total or len(assembly.chunks) != assembly.count:
            return None
        del self._transfers[xid]
        self.held_bytes -= assembly.held
        return tuple(assembly.chunks[i] for i in range(assembly.count))

    def _drop(self, xid: int, why: str) -> None:
        assembly = self._transfers.pop(xid)
        self.held_bytes -= assembly.held
        log.info("link_stripe_dropped", xid=xid, reason=why, held_bytes=assembly.held)

    def _expire(self, now: float) -> None:
        while self._transfers:
            xid, oldest = next(iter(self._transfers.items()))
            if now - oldest.touched <= self._ttl_s:
                return
            self._drop(xid, "expired")

    def _evict(self, keep: int) -> None:
        while self.held_bytes > self._max_bytes and len(self._transfers) > 1:
            xid = next(iter(self._transfers))
            if xid == keep:
                return
            self._drop(xid, "store_full")

    def __len__(self) -> int:
        return len(self._transfers)


# --- client side -----------------------------------------------------------------------------


class StripeStream(Protocol):
    """What a transfer needs of one connection (ClientConnection)."""

    @property
    def usable(self) -> bool: ...

    stripe_in_flight: int
    stripe_last_progress: float

    def write_stripe(self, prefix: bytes, chunk: memoryview) -> bool:
        """Queue one STRIPE frame (loop thread); False if the connection is closing."""


class StripeTransfer:
    """The client's half of one striped body (loop thread only)."""

    def __init__(
        self,
        xid: int,
        body: bytes,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        stream_window: int = DEFAULT_STREAM_WINDOW,
        stall_after: float = DEFAULT_STALL_AFTER,
    ) -> None:
        if not body:
            raise ValueError("nothing to stripe")
        self.xid = xid
        self.total = len(body)
        self.count = -(-self.total // max(1, chunk_bytes))
        self._size = stripe_chunk_bytes(self.total, self.count)
        self._view = memoryview(body)
        self._stream_window = stream_window
        self._stall_after = stall_after
        self._todo: deque[int] = deque(range(self.count))
        self._acked = bytearray(self.count)
        self.acked_count = 0
        # connection -> {chunk index: bytes} still un-ACKed on it
        self._in_flight: dict[StripeStream, dict[int, int]] = {}
        # (stream, index) queued again for the others while still in flight on a stalled stream
        self._moved: set[tuple[StripeStream, int]] = set()
        self._wake = asyncio.Event()
        self.chunks_sent = 0
        self.rerouted = 0

    def _chunk(self, index: int) -> memoryview:
        start = index * self._size
        return self._view[start : min(start + self._size, self.total)]

    def acked(self, stream: StripeStream, index: int) -> None:
        """STRIPE_ACK of chunk `index` came in on `stream`."""
        stream.stripe_last_progress = time.monotonic()
        on_stream = self._in_flight.get(stream)
        if on_stream is not None and index in on_stream:
            stream.stripe_in_flight -= on_stream.pop(index)
            self._moved.discard((stream, index))
        if 0 <= index < self.count and not self._acked[index]:
            self._acked[index] = 1
            self.acked_count += 1
        self._wake.set()

    @property
    def done(self) -> bool:
        return self.acked_count == self.count

    def _requeue(self, stream: StripeStream, *, forget: bool) -> int:
        """Queue `stream`'s un-ACKed chunks again (first: they are the oldest); with `forget`
        the stream is gone and its record too. Returns how many were queued."""
        on_stream = self._in_flight.get(stream, {})
        queued = 0
        for index in sorted(on_stream, reverse=True):
            if (stream, index) in self._moved:
                if forget:
                    self._moved.discard((stream, index))
                continue
            if not self._acked[index]:
                self._todo.appendleft(index)
                self.rerouted += 1
                queued += 1
            if not forget:
                self._moved.add((stream, index))
        if forget:
            self._in_flight.pop(stream, None)
        return queued

    def step(self, streams: Sequence[StripeStream], now: float) -> None:
        """Route around closed and stalled streams, then fill the others' windows."""
        for stream in list(self._in_flight):
            if not stream.usable:
                self._requeue(stream, forget=True)
        healthy: list[StripeStream] = []
        for stream in streams:
            if not stream.usable:
                continue
            self._in_flight.setdefault(stream, {})
            stalled = (
                stream.stripe_in_flight > 0
                and now - stream.stripe_last_progress > self._stall_after
            )
            if stalled:
                # Its chunks stay counted in its window (it may still deliver them), but are
                # queued for the others too; it takes no new ones until it ACKs again.
                queued = self._requeue(stream, forget=False)
                if queued:
                    log.info("link_stripe_stream_stalled", xid=self.xid, chunks=queued)
                continue
            healthy.append(stream)
        if not healthy:
            return
        # Round robin over the streams with room, one chunk at a time, so a transfer starts on
        # every stream at once instead of filling the first one's window.
        while self._todo:
            progressed = False
            for stream in healthy:
                if not self._todo:
                    break
                if stream.stripe_in_flight >= self._stream_window:
                    continue
                index = self._todo.popleft()
                if self._acked[index]:
                    progressed = True
                    continue
                chunk = self._chunk(index)
                if stream.stripe_in_flight == 0:
                    stream.stripe_last_progress = now  # the stall clock starts with the work
                prefix = encode_stripe_prefix(self.xid, index, self.count, self.total)
                if not stream.write_stripe(prefix, chunk):
                    self._todo.appendleft(index)
                    continue
                self._in_flight[stream][index] = len(chunk)
                stream.stripe_in_flight += len(chunk)
                self.chunks_sent += 1
                progressed = True
            if not progressed:
                return

    async def run(
        self,
        streams: Callable[[], Sequence[StripeStream]],
        *,
        idle_timeout: float,
        stopped: Callable[[], bool],
    ) -> None:
        """Until every chunk is ACKed. TimeoutError after `idle_timeout` s without one ACK
        (the caller retries with the same transfer: what was ACKed stays ACKed);
        asyncio.CancelledError-free exit when `stopped()` (checked every tick)."""
        last_progress = time.monotonic()
        last_acked = self.acked_count
        while not self.done:
            if stopped():
                raise TransferStopped()
            now = time.monotonic()
            if self.acked_count != last_acked:
                last_acked, last_progress = self.acked_count, now
            elif now - last_progress > idle_timeout:
                raise TimeoutError(
                    f"no chunk of striped transfer {self.xid:x} ACKed for {idle_timeout:.1f} s"
                )
            self.step(streams(), now)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    def release(self) -> None:
        """The transfer stops running (done, or paused after a timeout): its chunks leave the
        streams' windows, and every chunk not ACKed yet is queued for when it runs again."""
        for stream, on_stream in self._in_flight.items():
            stream.stripe_in_flight -= sum(on_stream.values())
            on_stream.clear()
        self._in_flight.clear()
        self._moved.clear()
        self._todo = deque(i for i in range(self.count) if not self._acked[i])


class TransferStopped(Exception):
    """The link is stopping: the striped transfer was abandoned."""
