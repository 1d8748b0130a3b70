"""The site link's wire format: length-prefixed frames over the TLS stream.

Every frame is

    u32 length (big-endian; counts the type byte and the body, not itself)
    u8  type
    body (length - 1 bytes)

Frame types and bodies:

    HELLO     (1)  msgpack map {"v": 1, "party": str, "certs": [PEM bytes...],
                   "features": [str...]} — the sender's party id and its certificates (current
                   first, then earlier generations still valid), so the receiver learns every
                   signing key it may see; "features" (optional) names what the sender
                   understands beyond the first six frame types ("ping", "rpc", "keepalive");
                   "keepalive_s" (optional float, only with "keepalive") is how often the
                   sender, as a server, sends a frame on every connection at the least.
    HELLO_OK  (2)  same layout, sent back by the accepting gateway.
    DATA      (3)  u64 seq | u32 meta length | meta (msgpack map {"id": message id,
                   "h": {bus header: value}}) | the encoded envelope bytes (to the frame's end).
                   `seq` is per connection, chosen by the sender, strictly increasing.
    ACK       (4)  n x u64 seq: these DATA frames were published into the receiver's broker and
                   confirmed by it. Batched: one ACK frame covers many DATA frames.
    REFUSED   (5)  u64 seq | UTF-8 reason: the receiver refused this DATA frame (bad signature,
                   replay, ...); it will never be published, so the sender must not resend it.
    GOODBYE   (6)  empty: the peer is shutting down; no new DATA will be taken on this connection.
    PING      (7)  u64 nonce: the client measures the link's round trip; sent only to a server
                   whose HELLO_OK lists the "ping" feature (an older gateway would close the
                   connection on an unknown frame type).
    PONG      (8)  the PING's body, echoed by the server at once. A server whose HELLO_OK lists
                   "keepalive" also sends PONG with nonce 0 on its own every "keepalive_s"
                   seconds, to a client whose HELLO lists "keepalive": a heartbeat written by
                   the server's loop whether or not it is reading (it stops reading under
                   backpressure, and a PING may wait behind a large DATA frame), so a client
                   that hears nothing for a few heartbeats knows the connection is dead even
                   though TCP has not noticed (docs/gateway.md, "Liveness"). Client PINGs
                   never use nonce 0.
    REQUEST   (9)  u64 rid | the encoded envelope of an rpc.request (to the frame's end): a
                   correlated call; `rid` is per connection, chosen by the client. Sent only to
                   a server whose HELLO_OK lists the "rpc" feature. Never ACKed: the answer is
                   one REPLY, or nothing when the request was dropped at its deadline.
    REPLY     (10) u64 rid | u8 outcome | body: outcome 0 (REPLY_OK): body is the encoded
                   envelope of the rpc.reply, signed by the server's party; 1 (REPLY_REFUSED):
                   the server refused the request (verification, authorization), body is the
                   UTF-8 reason; 2 (REPLY_FAILED): accepted but no answer can come (no local
                   responder, its deadline passed there), body is the UTF-8 reason.
    STRIPE    (11) u64 xid | u32 index | u32 count | u64 total | chunk bytes: piece `index` of
                   `count` of a large DATA body of `total` bytes, striped by the client across
                   its parallel connections to the same server (docs/wan.md). `xid` names the
                   transfer (random, chosen by the client); chunks are `total / count` bytes
                   rounded up, the last one shorter. The server keeps the chunks per peer party
                   (not per connection), so a connection that resets loses nothing it ACKed.
                   Sent only to a server whose HELLO_OK lists the "stripe" feature.
    STRIPE_ACK (12) n x (u64 xid | u32 index): the server holds these chunks; they are never
                   sent again, whichever connection carries the rest.
    A DATA frame whose meta has "z": n (sent only to a server whose HELLO_OK lists the "zstd"
    feature) carries its envelope bytes (or names a striped transfer of them) compressed as one
    zstd frame that decompresses to exactly n bytes; n is at most the frame limit, so the server
    knows the memory it needs before decompressing. Compressed or not, the envelope bytes that
    come out are what the signature covers.
    A DATA frame whose meta has "x": [xid, total] carries no envelope bytes: its body is the
    striped transfer `xid`, whose every chunk the server has ACKed. The server answers it like
    any DATA (ACK or REFUSED); REFUSED with the reason STRIPE_MISSING means it no longer holds
    the transfer (expired, evicted, or already delivered before an ACK was lost): the client
    stripes the body again (a duplicate the receiver's inbox drops).

The envelope bytes travel untouched (they are what the signature covers, via
fedschemas.canonical_bytes); the frame carries them without copying them into msgpack.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import msgpack

PROTOCOL_VERSION = 1
_HEADER = struct.Struct(">IB")
_SEQ = struct.Struct(">Q")
_DATA_PREFIX = struct.Struct(">QI")
HEADER_SIZE = _HEADER.size
_REQUEST_PREFIX = struct.Struct(">Q")
_REPLY_PREFIX = struct.Struct(">QB")
_STRIPE_PREFIX = struct.Struct(">QIIQ")
STRIPE_PREFIX_SIZE = _STRIPE_PREFIX.size
_STRIPE_ACK = struct.Struct(">QI")
FEATURE_PING = "ping"
FEATURE_RPC = "rpc"
FEATURE_KEEPALIVE = "keepalive"
FEATURE_STRIPE = "stripe"
FEATURE_ZSTD = "zstd"
FEATURES: tuple[str, ...] = (
    FEATURE_PING,
    FEATURE_RPC,
    FEATURE_KEEPALIVE,
    FEATURE_STRIPE,
    FEATURE_ZSTD,
)
"""What this gateway announces in HELLO / HELLO_OK."""
MAX_CONTROL_FRAME = 1 << 20
"""Non-DATA frames are small; a larger one is a protocol error (bounded memory per peer)."""
MAX_KEEPALIVE_S = 3600.0
"""A HELLO announcing rarer heartbeats than this is malformed (a client waits a few of them)."""
HEARTBEAT_NONCE = 0
"""The nonce of a server's unsolicited PONG (keepalive); a client's PINGs start at 1."""
STRIPE_MISSING = "stripe_missing"
"""REFUSED reason: the server does not hold the striped transfer a DATA frame names (resend)."""
MAX_STRIPE_CHUNKS = 1 << 20


class FrameType(enum.IntEnum):
    HELLO = 1
    HELLO_OK = 2
    DATA = 3
    ACK = 4
    REFUSED = 5
    GOODBYE = 6
    PING = 7
    PONG = 8
    REQUEST = 9
    REPLY = 10
    STRIPE = 11
    STRIPE_ACK = 12


class ReplyOutcome(enum.IntEnum):
    """The second field of a REPLY frame."""

    OK = 0
    REFUSED = 1
    FAILED = 2


class ProtocolError(Exception):
    """The peer broke the link protocol; the connection is closed."""


@dataclass(frozen=True)
class Hello:
    party_id: str
    certificates: tuple[bytes, ...]
    version: int = PROTOCOL_VERSION
    features: tuple[str, ...] = FEATURES
    keepalive_s: float | None = None
    """As a server: a frame goes to every client at least this often (None: no promise)."""


@dataclass(frozen=True)
class DataFrame:
    seq: int
    message_id: str
    headers: Mapping[str, str]
    body: bytes
    stripe: tuple[int, int] | None = None
    """(xid, total) of the striped transfer that is this frame's body (the body is then empty)."""
    raw_size: int | None = None
    """The body (or the striped transfer) is zstd-compressed; this is its decompressed size."""
    pieces: tuple[bytes | memoryview, ...] | None = None
    """The body still in the pieces it was striped in (then `body` is empty): joined by
    `whole()` on the thread that needs it, not on the link's loop."""

    def whole(self) -> DataFrame:
        """This frame with its body in one piece."""
        if self.pieces is None:
            return self
        return dataclasses.replace(self, body=b"".join(self.pieces), pieces=None)


def frame_header(frame_type: FrameType, body_length: int) -> bytes:
    return _HEADER.pack(body_length + 1, frame_type)


def parse_header(header: bytes, *, max_frame_bytes: int) -> tuple[FrameType, int]:
    """Return (type, body length) of a frame header; refuse unknown types and oversize frames."""
    length, raw_type = _HEADER.unpack(header)
    try:
        frame_type = FrameType(raw_type)
    except ValueError:
        raise ProtocolError(f"unknown frame type {raw_type}") from None
    if length < 1:
        raise ProtocolError("frame length 0")
    carries_envelope = frame_type in (
        FrameType.DATA,
        FrameType.REQUEST,
        FrameType.REPLY,
        FrameType.STRIPE,
    )
    limit = max_frame_bytes if carries_envelope else MAX_CONTROL_FRAME
    if length - 1 > limit:
        raise ProtocolError(f"{frame_type.name} frame of {length - 1} bytes exceeds {limit}")
    return frame_type, length - 1


def encode_hello(hello: Hello) -> bytes:
    fields: dict[str, object] = {
        "v": hello.version,
        "party": hello.party_id,
        "certs": list(hello.certificates),
        "features": list(hello.features),
    }
    if hello.keepalive_s is not None:
        fields["keepalive_s"] = hello.keepalive_s
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def decode_hello(body: bytes) -> Hello:
    try:
        data = msgpack.unpackb(body, raw=False)
        version, party, certs = data["v"], data["party"], data["certs"]
        # Absent in an older gateway's HELLO: it understands none of the later frame types.
        features = data.get("features", [])
        keepalive = data.get("keepalive_s")
    except Exception as exc:
        raise ProtocolError(f"malformed hello: {exc}") from None
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported link protocol version {version!r}")
    if (
        not isinstance(party, str)
        or not isinstance(certs, list)
        or not all(isinstance(c, bytes) for c in certs)
        or not isinstance(features, list)
        or not all(isinstance(f, str) for f in features)
    ):
        raise ProtocolError("malformed hello: wrong field types")
    if keepalive is not None and (
        isinstance(keepalive, bool)
        or not isinstance(keepalive, int | float)
        or not 0 < keepalive <= MAX_KEEPALIVE_S
    ):
        raise ProtocolError(f"malformed hello: keepalive_s {keepalive!r}")
    return Hello(
        party_id=party,
        certificates=tuple(certs),
        version=version,
        features=tuple(features),
        keepalive_s=float(keepalive) if keepalive is not None else None,
    )


def encode_data_prefix(
    seq: int,
    message_id: str,
    headers: Mapping[str, str],
    stripe: tuple[int, int] | None = None,
    raw_size: int | None = None,
) -> bytes:
    """Everything of a DATA body before the envelope bytes (sent separately: no copy)."""
    fields: dict[str, object] = {"id": message_id, "h": dict(headers)}
    if stripe is not None:
        fields["x"] = list(stripe)
    if raw_size is not None:
        fields["z"] = raw_size
    meta: bytes = msgpack.packb(fields, use_bin_type=True)
    return _DATA_PREFIX.pack(seq, len(meta)) + meta


def stripe_ref_of(body: bytes) -> DataFrame | None:
    """The decoded DATA frame if `body` names a striped transfer (its `stripe` is set, its
    body empty); None for an ordinary DATA body (read without copying its envelope bytes)."""
    view = memoryview(body)
    if len(view) < _DATA_PREFIX.size:
        raise ProtocolError("DATA frame too short")
    _, meta_len = _DATA_PREFIX.unpack_from(view)
    if len(view) != _DATA_PREFIX.size + meta_len:
        return None  # envelope bytes follow the meta: not a reference
    frame = decode_data(view)
    return frame if frame.stripe is not None else None


def held_size(body: bytes | DataFrame) -> int:
    """The memory a DATA frame needs at the receiver: its length, or for a compressed body the
    size it decompresses to (read from the meta only; a malformed meta counts as its length,
    decode_data refuses it later)."""
    if isinstance(body, DataFrame):
        held = len(body.body) + sum(len(p) for p in body.pieces or ())
        return max(held, body.raw_size or 0)
    view = memoryview(body)
    if len(view) < _DATA_PREFIX.size:
        return len(view)
    _, meta_len = _DATA_PREFIX.unpack_from(view)
    try:
        raw_size = msgpack.unpackb(
            view[_DATA_PREFIX.size : _DATA_PREFIX.size + meta_len], raw=False
        ).get("z")
    except Exception:
        return len(view)
    if isinstance(raw_size, int) and not isinstance(raw_size, bool) and raw_size > len(view):
        return raw_size
    return len(view)


def decode_data(body: bytes | memoryview) -> DataFrame:
    view = memoryview(body)
    if len(view) < _DATA_PREFIX.size:
        raise ProtocolError("DATA frame too short")
    seq, meta_len = _DATA_PREFIX.unpack_from(view)
    start = _DATA_PREFIX.size
    if start + meta_len > len(view):
        raise ProtocolError("DATA meta runs past the frame")
    try:
        meta = msgpack.unpackb(view[start : start + meta_len], raw=False)
        message_id, headers = meta["id"], meta["h"]
        stripe = meta.get("x")
        raw_size = meta.get("z")
    except Exception as exc:
        raise ProtocolError(f"malformed DATA meta: {exc}") from None
    if (
        not isinstance(message_id, str)
        or not isinstance(headers, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    ):
        raise ProtocolError("malformed DATA meta: wrong field types")
    ref: tuple[int, int] | None = None
    if stripe is not None:
        if (
            not isinstance(stripe, list)
            or len(stripe) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in stripe)
            or len(view) != start + meta_len
        ):
            raise ProtocolError("malformed DATA meta: bad stripe reference")
        ref = (stripe[0], stripe[1])
    if raw_size is not None and (
        not isinstance(raw_size, int) or isinstance(raw_size, bool) or raw_size <= 0
    ):
        raise ProtocolError(f"malformed DATA meta: bad decompressed size {raw_size!r}")
    return DataFrame(
        seq=seq,
        message_id=message_id,
        headers=headers,
        body=bytes(view[start + meta_len :]),
        stripe=ref,
        raw_size=raw_size,
    )


def encode_ack(seqs: Sequence[int]) -> bytes:
    return struct.pack(f">{len(seqs)}Q", *seqs)


def decode_ack(body: bytes) -> tuple[int, ...]:
    if len(body) % 8:
        raise ProtocolError("ACK body is not a whole number of u64")
    return struct.unpack(f">{len(body) // 8}Q", body)


def encode_refused(seq: int, reason: str) -> bytes:
    return _SEQ.pack(seq) + reason.encode()[:1000]


def encode_ping(nonce: int) -> bytes:
    return _SEQ.pack(nonce)


def decode_ping(body: bytes) -> int:
    """The nonce of a PING or PONG body."""
    if len(body) != _SEQ.size:
        raise ProtocolError("PING/PONG body is not one u64")
    nonce: int = _SEQ.unpack(body)[0]
    return nonce


def decode_refused(body: bytes) -> tuple[int, str]:
    if len(body) < 8:
        raise ProtocolError("REFUSED frame too short")
    return _SEQ.unpack_from(body)[0], body[8:].decode(errors="replace")


def encode_request_prefix(rid: int) -> bytes:
    """A REQUEST body before the envelope bytes (sent separately: no copy)."""
    return _REQUEST_PREFIX.pack(rid)


def decode_request(body: bytes) -> tuple[int, bytes]:
    """(rid, envelope bytes) of a REQUEST body."""
    if len(body) < _REQUEST_PREFIX.size:
        raise ProtocolError("REQUEST frame too short")
    rid: int = _REQUEST_PREFIX.unpack_from(body)[0]
    return rid, body[_REQUEST_PREFIX.size :]


def encode_reply_prefix(rid: int, outcome: ReplyOutcome) -> bytes:
    return _REPLY_PREFIX.pack(rid, outcome)


def decode_reply(body: bytes) -> tuple[int, ReplyOutcome, bytes]:
    """(rid, outcome, envelope bytes or UTF-8 reason) of a REPLY body."""
    if len(body) < _REPLY_PREFIX.size:
        raise ProtocolError("REPLY frame too short")
    rid, raw = _REPLY_PREFIX.unpack_from(body)
    try:
        outcome = ReplyOutcome(raw)
    except ValueError:
        raise ProtocolError(f"unknown REPLY outcome {raw}") from None
    return rid, outcome, body[_REPLY_PREFIX.size :]


@dataclass(frozen=True)
class StripeChunk:
    xid: int
    index: int
    count: int
    total: int
    data: bytes | memoryview
    """A view into the frame it came in (not copied: the store joins the chunks once)."""


def stripe_chunk_bytes(total: int, count: int) -> int:
    """The size of every chunk but the last of a transfer of `total` bytes in `count`."""
    return -(-total // count)


def encode_stripe_prefix(xid: int, index: int, count: int, total: int) -> bytes:
    """A STRIPE body before the chunk bytes (sent separately: no copy)."""
    return _STRIPE_PREFIX.pack(xid, index, count, total)


def decode_stripe(body: bytes, *, max_total: int) -> StripeChunk:
    """One STRIPE body, checked: the chunk has the size its index implies, the transfer is no
    larger than `max_total`, and it has no more than MAX_STRIPE_CHUNKS chunks."""
    if len(body) < _STRIPE_PREFIX.size:
        raise ProtocolError("STRIPE frame too short")
    xid, index, count, total = _STRIPE_PREFIX.unpack_from(body)
    if not 0 < count <= MAX_STRIPE_CHUNKS or index >= count or total > max_total or total < count:
        raise ProtocolError(f"bad STRIPE header: index {index} of {count}, total {total}")
    size = stripe_chunk_bytes(total, count)
    expected = size if index < count - 1 else total - size * (count - 1)
    data = memoryview(body)[_STRIPE_PREFIX.size :]
    if expected <= 0 or len(data) != expected:
        raise ProtocolError(f"STRIPE chunk {index} has {len(data)} bytes, expected {expected}")
    return StripeChunk(xid=xid, index=index, count=count, total=total, data=data)


def encode_stripe_ack(chunks: Sequence[tuple[int, int]]) -> bytes:
    return b"".join(_STRIPE_ACK.pack(xid, index) for xid, index in chunks)


def decode_stripe_ack(body: bytes) -> list[tuple[int, int]]:
    if len(body) % _STRIPE_ACK.size:
        raise ProtocolError("STRIPE_ACK body is not a whole number of (u64, u32)")
    return [_STRIPE_ACK.unpack_from(body, off) for off in range(0, len(body), _STRIPE_ACK.size)]
