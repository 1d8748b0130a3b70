"""Byte formats: a msgpack header (a map) optionally followed by a raw payload. No pickle.

Every header carries "fmt" (what the bytes are) and "v" (format version); integers that can
exceed 64 bits (n, p, q, bounds) are msgpack bin fields holding little-endian bytes. For a
ciphertext vector the payload is `data.tobytes()` of the limb array (see `limbs`).
"""

from __future__ import annotations

from typing import Any

import msgpack

FORMAT_VERSION = 1


def pack(fmt: str, fields: dict[str, Any], payload: bytes = b"") -> bytes:
    header = {"fmt": fmt, "v": FORMAT_VERSION, **fields}
    return bytes(msgpack.packb(header, use_bin_type=True)) + payload


def unpack(raw: bytes | bytearray | memoryview, fmt: str) -> tuple[dict[str, Any], memoryview]:
    """The header of `raw` (checked to be `fmt` version 1) and the payload after it."""
    view = memoryview(raw)
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=len(view) + 1)
    unpacker.feed(view)
    try:
        header = unpacker.unpack()
    except (msgpack.OutOfData, ValueError, msgpack.ExtraData) as exc:
        raise ValueError(f"not a {fmt} byte string: bad header") from exc
    if not isinstance(header, dict) or header.get("fmt") != fmt:
        raise ValueError(f"not a {fmt} byte string")
    if header.get("v") != FORMAT_VERSION:
        raise ValueError(f"unsupported {fmt} format version {header.get('v')!r}")
    return header, view[unpacker.tell() :]


def field(header: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = header.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ValueError(f"header field {name!r} is missing or has the wrong type")
    return value
