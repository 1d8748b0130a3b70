"""Wire bytes of an envelope without packing its payload again.

`fedschemas.encode_envelope` packs the whole msgpack array, payload included: for a 32 MiB
ciphertext vector that is about two 32 MiB copies (msgpack's buffer grows as it packs). The
wire layout (docs/wire.md) is

    wire = array16 header (19, or 20 with a deadline) | fields before the payload |
           bin header | payload | deadline (if set) | signature (bin8 of 64 bytes, or nil)

so the bytes around the payload are packed from the envelope with an empty payload (a few
hundred bytes) and the payload is copied in once. The result is byte for byte
`encode_envelope` (tests/gateway/test_envelope_bytes.py checks it).

The signed bytes need no such help: `fedschemas.canonical_bytes` holds the payload's SHA-256,
not the payload, so they are a few hundred bytes whatever the payload's size, and a verifier
recomputes them from the decoded envelope (one SHA-256 pass over the payload).
"""

from __future__ import annotations

import msgpack
from fedschemas import Envelope, encode_envelope
from fedschemas.base import datetime_to_micros

_ARRAY16 = 0xDC
_EMPTY_BIN = b"\xc4\x00"


def _bin_header(n: int) -> bytes:
    """msgpack's shortest bin header for `n` bytes (bin8, bin16, bin32)."""
    if n < 1 << 8:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 1 << 16:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def wire_bytes(env: Envelope) -> bytes:
    """encode_envelope(env), with one copy of the payload (no size limit is applied: the
    caller's envelope came through one)."""
    empty = encode_envelope(env.model_copy(update={"payload": b""}))
    if empty[0] != _ARRAY16:
        raise ValueError("envelope array is not an array16 (format changed?)")
    # After the (empty) payload come the deadline, if set, and the signature.
    tail: bytes = msgpack.packb(env.signature, use_bin_type=True)
    if env.deadline is not None:
        tail = msgpack.packb(datetime_to_micros(env.deadline)) + tail
    head_end = len(empty) - len(tail) - len(_EMPTY_BIN)
    if empty[head_end : head_end + len(_EMPTY_BIN)] != _EMPTY_BIN:
        raise ValueError("no empty payload where the layout puts it (format changed?)")
    return b"".join(
        (
            empty[:head_end],
            _bin_header(len(env.payload)),
            env.payload,
            empty[head_end + len(_EMPTY_BIN) :],
        )
    )
