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
    """The header of `raw` (checked to be `fmt` version 1) and the payload after it.

    Only the header is fed to msgpack (in growing prefixes), so a large payload is neither
    copied nor parsed; it is returned as a view.
    """
    view = memoryview(raw).cast("B")
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True)
    fed, step = 0, 1024
    while True:
        unpacker.feed(view[fed : fed + step])
        fed = min(len(view), fed + step)
        try:
            header = unpacker.unpack()
            break
        except msgpack.OutOfData:
            if fed >= len(view):
                raise ValueError(f"not a {fmt} byte string: truncated header") from None
            step *= 2
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
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
