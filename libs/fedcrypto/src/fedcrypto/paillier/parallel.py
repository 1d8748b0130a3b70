"""Splitting a batch into chunks for a caller-supplied executor.

The library never creates processes or threads. A caller that wants several cores passes a
`concurrent.futures.Executor`; batch functions then cut their work into contiguous chunks and
map a top-level kernel (from `kernels`) over them. The work inside a kernel depends on nothing
but its arguments.

- ThreadPoolExecutor (the recommended one when the C extension is built): the extension
  releases the GIL for a whole chunk, so threads run chunks in parallel with nothing copied or
  pickled; chunks can be small, and there are several per worker so that a core slowed by
  other load does not hold up the batch. Without the extension the gmpy2 kernels mostly hold
  the GIL and threads gain little.
- ProcessPoolExecutor (and any other executor): arguments are bytes, ints and ndarrays, so they
  pickle cheaply, but a chunk must carry enough work to pay for shipping them; fixed-base
  tables (16 MiB) need big chunks.
Chunk boundaries fall on multiples of 8 where possible: the extension's SIMD engine works on 8
residues at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
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
# Threads ship nothing: a chunk only has to outweigh a task hand-off (tens of microseconds).
THREAD_MIN_CHUNK = 256
# Multi-exponentiation chunks (bases per chunk) must outweigh their own bucket folding.
MULTIEXP_MIN_ROWS = 256
_THREAD_CHUNKS_PER_WORKER = 4
LANES = 8


def chunk_bounds(
    count: int,
    executor: Executor | None,
    chunk_size: int | None,
    *,
    min_chunk: int = MIN_CHUNK,
) -> list[tuple[int, int]]:
    """[lo, hi) ranges covering range(count): one range without an executor.

    With an executor and no chunk_size: about two chunks per worker (four for a
    ThreadPoolExecutor, whose chunks need only exceed THREAD_MIN_CHUNK), but no more chunks than
    count // min_chunk (one chunk means the work stays in the calling thread); element chunks
    (min_chunk >= LANES) are rounded up to a multiple of LANES elements.
    """
    if count == 0:
        return []
    if chunk_size is None:
        if executor is None:
            return [(0, count)]
        threads = isinstance(executor, ThreadPoolExecutor)
        per_worker = _THREAD_CHUNKS_PER_WORKER if threads else _CHUNKS_PER_WORKER
        if threads:
            min_chunk = min(min_chunk, THREAD_MIN_CHUNK)
        workers = getattr(executor, "_max_workers", None)
        wanted = workers * per_worker if isinstance(workers, int) else _DEFAULT_CHUNKS
        chunks = max(1, min(wanted, count // max(1, min_chunk)))
        chunk_size = -(-count // chunks)
        if chunks > 1 and min_chunk >= LANES:
            chunk_size = -(-chunk_size // LANES) * LANES
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    return [(lo, min(count, lo + chunk_size)) for lo in range(0, count, chunk_size)]


def split_evenly(count: int, executor: Executor | None, *, min_part: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges: one per worker of `executor` (parts of at least min_part), else one."""
    if count == 0:
        return []
    workers = getattr(executor, "_max_workers", None) if executor is not None else 1
    parts = workers if isinstance(workers, int) else _DEFAULT_CHUNKS
    parts = max(1, min(parts, count // max(1, min_part)))
    size = -(-count // parts)
    return [(lo, min(count, lo + size)) for lo in range(0, count, size)]


def map_chunks(
    fn: Callable[..., T],
    bounds: list[tuple[int, int]],
    make_args: Callable[[int, int], tuple[Any, ...]],
    executor: Executor | None,
) -> list[T]:
    """fn(*make_args(lo, hi)) for every chunk, in order, on the executor when one is given.

    A chunk kept in the calling thread (one chunk only) still goes through the executor's
    `run_here(fn, *args)` when it has one: an executor that observes the kernels it runs (the
    worker's metered pool) then sees every kernel call, not only the batches it was handed."""
    if executor is None or len(bounds) <= 1:
        run_here = getattr(executor, "run_here", None)
        if run_here is not None:
            return [run_here(fn, *make_args(lo, hi)) for lo, hi in bounds]
        return [fn(*make_args(lo, hi)) for lo, hi in bounds]
    futures = [executor.submit(fn, *make_args(lo, hi)) for lo, hi in bounds]
    return [f.result() for f in futures]


def concat_limbs(parts: list[LimbArray], limbs: int) -> LimbArray:
    if not parts:
        return np.zeros((0, limbs), dtype=np.uint64)
    if len(parts) == 1:
        return np.ascontiguousarray(parts[0])
    return np.ascontiguousarray(np.concatenate(parts, axis=0))
