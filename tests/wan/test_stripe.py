"""Striping's bookkeeping without a network (stripe.py, framing.py): what the server keeps and
what the client sends again when a stream resets or stalls."""

from __future__ import annotations

import time

import pytest
from fedgateway.framing import (
    ProtocolError,
    decode_stripe,
    decode_stripe_ack,
    encode_stripe_ack,
    encode_stripe_prefix,
)
from fedgateway.stripe import StripeStore, StripeTransfer


class FakeStream:
    """A connection that records the chunk indexes written to it."""

    def __init__(self) -> None:
        self.usable = True
        self.stripe_in_flight = 0
        self.stripe_last_progress = time.monotonic()
        self.written: list[int] = []

    def write_stripe(self, prefix: bytes, chunk: memoryview) -> bool:
        chunk_info = decode_stripe(prefix + bytes(chunk), max_total=1 << 30)
        self.written.append(chunk_info.index)
        return True


def chunk_frame(xid: int, index: int, count: int, body: bytes) -> bytes:
    size = -(-len(body) // count)
    return (
        encode_stripe_prefix(xid, index, count, len(body)) + body[index * size : (index + 1) * size]
    )


def test_the_store_reassembles_a_body_from_chunks_in_any_order_and_ignores_repeats() -> None:
    body = bytes(range(256)) * 40  # 10240 bytes in 3 chunks
    store = StripeStore(max_bytes=1 << 20)
    for index in (2, 0, 2, 1):
        assert store.add(decode_stripe(chunk_frame(7, index, 3, body), max_total=1 << 20))
    assert store.take(7, len(body) + 1) is None  # a reference with another size gets nothing
    assert b"".join(store.take(7, len(body)) or ()) == body
    assert store.take(7, len(body)) is None  # delivered once: gone
    assert store.held_bytes == 0


def test_the_store_refuses_contradicting_chunks_and_evicts_the_oldest_transfer_when_full() -> None:
    body = b"a" * 3000
    store = StripeStore(max_bytes=2500)
    assert store.add(decode_stripe(chunk_frame(1, 0, 3, body), max_total=1 << 20))
    other = encode_stripe_prefix(1, 1, 4, len(body)) + b"a" * 750
    assert not store.add(decode_stripe(other, max_total=1 << 20))
    for index in range(3):
        store.add(decode_stripe(chunk_frame(2, index, 3, body), max_total=1 << 20))
    assert store.take(1, len(body)) is None  # evicted: the client will be told to resend
    assert b"".join(store.take(2, len(body)) or ()) == body


@pytest.mark.parametrize(
    "frame",
    [
        encode_stripe_prefix(1, 3, 3, 30) + b"x" * 10,  # index past the count
        encode_stripe_prefix(1, 0, 3, 30) + b"x" * 9,  # chunk shorter than its share
        encode_stripe_prefix(1, 0, 1, 1 << 21) + b"x",  # larger than the frame limit
        b"short",
    ],
)
def test_malformed_stripe_frames_are_protocol_errors(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_stripe(frame, max_total=1 << 20)


def test_stripe_acks_round_trip() -> None:
    acks = [(1 << 62, 0), (5, 1 << 20)]
    assert decode_stripe_ack(encode_stripe_ack(acks)) == acks


def test_a_reset_stream_resends_only_what_the_peer_did_not_acknowledge() -> None:
    # Prepare: 8 chunks over two streams, window of 2 chunks each
    transfer = StripeTransfer(9, b"z" * 8000, chunk_bytes=1000, stream_window=2000)
    a, b = FakeStream(), FakeStream()
    transfer.step([a, b], time.monotonic())
    assert sorted(a.written + b.written) == [0, 1, 2, 3]
    # Execute: a's first chunk is ACKed, then a resets
    transfer.acked(a, a.written[0])  # type: ignore[arg-type]
    a.usable = False
    transfer.step([a, b], time.monotonic())
    for index in list(b.written):
        transfer.acked(b, index)  # type: ignore[arg-type]
    transfer.step([a, b], time.monotonic())
    while not transfer.done:
        for index in list(b.written):
            transfer.acked(b, index)  # type: ignore[arg-type]
        transfer.step([a, b], time.monotonic())
    # Assert: a's unACKed chunk went to b; its ACKed chunk was never sent again
    assert a.written[0] not in b.written
    assert a.written[1] in b.written
    assert sorted(set(a.written[:1] + b.written)) == list(range(8))


def test_a_stalled_stream_is_routed_around() -> None:
    transfer = StripeTransfer(
        3, b"q" * 4000, chunk_bytes=1000, stream_window=2000, stall_after=0.05
    )
    slow, fast = FakeStream(), FakeStream()
    start = time.monotonic()
    transfer.step([slow, fast], start)
    stuck = list(slow.written)
    for index in list(fast.written):
        transfer.acked(fast, index)  # type: ignore[arg-type]
    # Execute: time passes without an ACK from `slow`
    transfer.step([slow, fast], start + 1.0)
    for index in list(fast.written):
        transfer.acked(fast, index)  # type: ignore[arg-type]
    # Assert: slow's chunks went out on the fast stream and the transfer finished without it
    assert set(stuck) <= set(fast.written)
    assert transfer.done
    assert slow.written == stuck  # no new chunk for the stalled stream


def test_a_transfer_paused_after_a_timeout_resends_every_unacknowledged_chunk() -> None:
    transfer = StripeTransfer(4, b"r" * 5000, chunk_bytes=1000, stream_window=3000)
    first = FakeStream()
    transfer.step([first], time.monotonic())
    transfer.acked(first, first.written[0])  # type: ignore[arg-type]
    # Execute: the run ends (no ACK in time), the streams are replaced, the run resumes
    transfer.release()
    assert first.stripe_in_flight == 0
    second = FakeStream()
    while not transfer.done:
        transfer.step([second], time.monotonic())
        for index in list(second.written):
            transfer.acked(second, index)  # type: ignore[arg-type]
    # Assert: everything but the one ACKed chunk went out again, once
    assert sorted(second.written) == [1, 2, 3, 4]
