"""zstd on the site link: compress a DATA body only when it pays (docs/wan.md, "Compression").

Most of what crosses the link in bulk is ciphertext (Paillier vectors, encrypted gradients):
random bytes that no compressor shrinks, so compressing them costs CPU for nothing. The sender
therefore compresses a few samples of the body first (`SAMPLE_BYTES` each, spread over it) and
compresses the whole only when they shrink to at most `WORTH` of their size; a body of
ciphertext costs three small trial compressions, not a 32 MiB one. Plaintext bulk (tables,
models, JSON, repeated ids) compresses, and on a path of a few hundred Mbit/s that is
throughput.

The receiver never trusts the sender's sizes: the DATA frame declares the decompressed size
(meta "z", framing.py), which must be within its envelope limit and equal the size written
in the zstd frame's own header, and the output must be exactly that long. So a peer cannot
make it allocate more than one envelope's worth of memory, whatever the frame says.

zstandard releases the GIL while it works, so compression runs on the relay's sender threads
and decompression on the inbound workers, beside the link loop.
"""

from __future__ import annotations

import threading

import zstandard

MIN_BYTES = 4096
"""Bodies below this are sent as they are (a few round trips of header overhead, no gain)."""
SAMPLE_BYTES = 16 << 10
SAMPLES = 3
WORTH = 0.85
"""Compress the body when its samples shrink to at most this share of their size."""

_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("c", {})
    found = cache.get(level)
    if found is None:
        found = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return found


def _samples(body: bytes | memoryview) -> list[memoryview]:
    view = memoryview(body)
    if len(view) <= SAMPLES * SAMPLE_BYTES:
        return [view]
    step = (len(view) - SAMPLE_BYTES) // (SAMPLES - 1)
    return [view[i * step : i * step + SAMPLE_BYTES] for i in range(SAMPLES)]


def worth_compressing(body: bytes | memoryview, level: int) -> bool:
    """Whether samples of `body` compress to at most WORTH of their size at `level`."""
    compressor = _compressor(level)
    samples = _samples(body)
    packed = sum(len(compressor.compress(s)) for s in samples)
    return packed <= WORTH * sum(len(s) for s in samples)


def compress_if_worth(body: bytes, level: int) -> bytes | None:
    """`body` as one zstd frame (its size in the frame header) if that pays; None otherwise
    (too small, incompressible, or compressing it saved less than 1 - WORTH)."""
    if level <= 0 or len(body) < MIN_BYTES or not worth_compressing(body, level):
        return None
    packed = _compressor(level).compress(body)
    return packed if len(packed) <= WORTH * len(body) else None


class BadCompression(ValueError):
    """A compressed DATA body that does not decompress to what its frame declares."""


def decompress(data: bytes | memoryview, raw_size: int, *, limit: int) -> bytes:
    """The `raw_size` bytes `data` (one zstd frame) decompresses to; BadCompression when
    `raw_size` exceeds `limit`, the frame's header declares another size (or none), or the
    output is not exactly `raw_size` bytes."""
    if raw_size > limit:
        raise BadCompression(f"declared decompressed size {raw_size} exceeds the limit {limit}")
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise BadCompression(f"not a zstd frame: {exc}") from None
    if declared != raw_size:
        raise BadCompression(f"zstd frame declares {declared} bytes, the DATA frame {raw_size}")
    try:
        out = zstandard.ZstdDecompressor().decompress(data, max_output_size=raw_size)
    except zstandard.ZstdError as exc:
        raise BadCompression(f"zstd: {exc}") from None
    if len(out) != raw_size:
        raise BadCompression(f"decompressed to {len(out)} bytes, declared {raw_size}")
    return out
