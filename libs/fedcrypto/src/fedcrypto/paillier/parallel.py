"""Splitting a batch into chunks for a caller-supplied executor.

The library never creates processes or threads. A caller that wants several cores passes a
`concurrent.futures.Executor`; batch functions then cut their work into contiguous chunks and
map a top-level kernel (from `kernels`) over them. Kernel arguments are bytes, ints and
ndarrays, so a ProcessPoolExecutor pickles them cheaply, and the gmpy2 work inside a kernel
does not depend on anything but its arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import numpy as np

from .limbs import LimbArray

T = TypeVar("T")

_CHUNKS_PER_WORKER = 2
_DEFAULT_CHUNKS = 8
# Below this many elements per chunk, shipping arguments and converting them costs more than
# the work saved. Kernels that ship a fixed-base table (16 MiB, about 0.15 s to send and turn
# back into gmpy2 integers) need far bigger chunks than element-wise ones.
MIN_CHUNK = 64
CHEAP_MIN_CHUNK = 2048  # kernels of one or a few products per element
TABLE_MIN_CHUNK = 1024


def chunk_bounds(
    count: int,
    executor: Executor | None,
    chunk_size: int | None,
    *,
    min_chunk: int = MIN_CHUNK,
) -> list[tuple[int, int]]:
    """[lo, hi) ranges covering range(count): one range without an executor.

    With an executor and no chunk_size: about two chunks per worker, but no more chunks than
    count // min_chunk (one chunk means the work stays in the calling process).
    """
    if count == 0:
        return []
    if chunk_size is None:
        if executor is None:
            return [(0, count)]
        workers = getattr(executor, "_max_workers", None)
        wanted = workers * _CHUNKS_PER_WORKER if isinstance(workers, int) else _DEFAULT_CHUNKS
        chunks = max(1, min(wanted, count // max(1, min_chunk)))
        chunk_size = -(-count // chunks)
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    return [(lo, min(count, lo + chunk_size)) for lo in range(0, count, chunk_size)]


def map_chunks(
    fn: Callable[..., T],
    bounds: list[tuple[int, int]],
    make_args: Callable[[int, int], tuple[Any, ...]],
    executor: Executor | None,
) -> list[T]:
    """fn(*make_args(lo, hi)) for every chunk, in order, on the executor when one is given."""
    if executor is None or len(bounds) <= 1:
        return [fn(*make_args(lo, hi)) for lo, hi in bounds]
    futures = [executor.submit(fn, *make_args(lo, hi)) for lo, hi in bounds]
    return [f.result() for f in futures]


def concat_limbs(parts: list[LimbArray], limbs: int) -> LimbArray:
    if not parts:
        return np.zeros((0, limbs), dtype=np.uint64)
    if len(parts) == 1:
        return np.ascontiguousarray(parts[0])
    return np.ascontiguousarray(np.concatenate(parts, axis=0))
