"""Canonical (signed) and wire bytes of an envelope without packing its payload again.

`fedschemas.canonical_bytes` and `encode_envelope` pack the whole msgpack array, payload
included: for a 32 MiB ciphertext vector that is two more 32 MiB copies (msgpack's buffer grows
as it packs) on each side of the link, next to the hashing the signature needs anyway. Both
layouts (docs/wire.md) are

    canonical = array16 header (18, or 19 with a deadline) | fields before the payload |
                bin header | payload | deadline (if set)
    wire      = the same with the count one higher | ... | signature (bin8 of 64 bytes, or nil)

so the bytes around the payload are packed from an envelope whose payload is empty (a few
hundred bytes) and the payload is copied in once. The results are byte for byte those of
`canonical_bytes` and `encode_envelope` (tests/gateway/test_envelope_bytes.py checks it).

On the receiving side `canonical_of_wire` takes the signed bytes out of the wire bytes a peer
sent, after checking that everything but the payload is exactly what packing the decoded
envelope gives (so a peer's non-canonical msgpack -- longer integer or string encodings --
falls back to `canonical_bytes`, and what is verified is always the canonical form of what was
decoded: the audit's envelope_sha256 covers the same bytes the signature does).
"""

from __future__ import annotations

import msgpack
from fedschemas import Envelope, canonical_bytes

_ARRAY16 = 0xDC


def _around_payload(env: Envelope) -> tuple[bytes, bytes]:
    """(canonical bytes up to and including the payload's bin header, bytes after the payload)
    of `env`."""
    empty = canonical_bytes(env.model_copy(update={"payload": b""}))
    # An empty bin is `c4 00`; what follows it is the deadline (or nothing).
    tail_len = 0
    if env.deadline is not None:
        without = canonical_bytes(env.model_copy(update={"payload": b"", "deadline": None}))
        tail_len = len(empty) - len(without)
    if empty[0] != _ARRAY16:
        raise ValueError("envelope array is not an array16 (format changed?)")
    before = empty[: len(empty) - tail_len - 2]
    tail = empty[len(empty) - tail_len :]
    return before + _bin_header(len(env.payload)), tail


def _bin_header(n: int) -> bytes:
    """msgpack's shortest bin header for `n` bytes (bin8, bin16, bin32)."""
    if n < 1 << 8:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 1 << 16:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def _one_more(head: bytes) -> bytes:
    """`head` with its array16 count one higher (the wire array has the signature last)."""
    count = int.from_bytes(head[1:3], "big") + 1
    return head[:1] + count.to_bytes(2, "big") + head[3:]


def _signature_bytes(signature: bytes | None) -> bytes:
    packed: bytes = msgpack.packb(signature, use_bin_type=True)
    return packed


def canonical_and_head(env: Envelope) -> tuple[bytes, int]:
    """(canonical_bytes(env), length of the part before the payload), with one payload copy."""
    head, tail = _around_payload(env)
    return b"".join((head, env.payload, tail)), len(head)


def wire_from_canonical(canonical: bytes, head_len: int, signature: bytes | None) -> bytes:
    """encode_envelope of the envelope whose canonical bytes are `canonical`, with
    `signature` set (one copy)."""
    view = memoryview(canonical)
    return b"".join(
        (_one_more(bytes(view[:head_len])), view[head_len:], _signature_bytes(signature))
    )


def canonical_of_wire(wire: bytes | memoryview, env: Envelope) -> bytes:
    """canonical_bytes(env) for `env` decoded from `wire`, cut out of `wire` when its encoding
    is the canonical one (one copy), packed again otherwise."""
    head, tail = _around_payload(env)
    view = memoryview(wire)
    end = len(head) + len(env.payload)
    trailer = tail + _signature_bytes(env.signature)
    if view[: len(head)] == _one_more(head) and view[end:] == trailer:
        return b"".join((head, view[len(head) : end], tail))
    return canonical_bytes(env)
