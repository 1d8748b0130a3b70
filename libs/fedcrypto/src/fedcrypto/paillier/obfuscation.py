"""A pool of precomputed obfuscators, each handed out exactly once.

Precomputing obfuscators moves the expensive part of encryption (hs^a or r^n) off the critical
path: encrypting with a pool costs one short product per element. Using one obfuscator twice
would leak the plaintext difference (c1 / c2 = (1 + n)^(m1 - m2)), so reuse is made impossible
by construction: `take` copies rows out, overwrites them in the pool with zeros, and only ever
moves a cursor forward; nothing else reads the pool's storage. The storage is the block being
handed out (`_store`, read from `_cursor` on) and the blocks queued behind it, each an array
that only the pool holds, so adding obfuscators never copies the pool. Rows only ever enter
the pool from its own computation (fresh CSPRNG bytes per row): there is no way to put given
obfuscators into it.

`prefetch` computes more in the background on an executor the caller supplies (the library
makes no threads): a protocol party that knows how many encryptions its next step needs asks
for them right after its current encryption, and the work runs while it waits for its peer.
All state changes happen under one lock, so `take` may run while background chunks land.
"""

from __future__ import annotations

import collections
import functools
import threading
from concurrent.futures import Executor, Future

import numpy as np

from . import kernels
from .errors import ObfuscatorPoolExhausted
from .keys import Obfuscation, PrivateKey, PublicKey, random_bytes
from .limbs import LimbArray
from .parallel import chunk_bounds, concat_limbs, map_chunks

PREFETCH_CHUNK = 128
"""Obfuscators per background job (about 10 ms of one core at 2048 bits): short, so that a
background thread holds a core only briefly when it runs at a low priority, yet long next to
the job's few Python steps (each one holds the GIL)."""


def make_obfuscators(
    key: PublicKey | PrivateKey,
    count: int,
    *,
    obfuscation: Obfuscation = "djn",
    executor: Executor | None = None,
    chunk_size: int | None = None,
) -> LimbArray:
    """`count` fresh obfuscators modulo n^2 as limbs (CRT when given the private key)."""
    public = key if isinstance(key, PublicKey) else key.public_key
    spec = key.obfuscation_spec(obfuscation)
    rand = random_bytes(count, kernels.randomness_bytes(spec))
    parts = map_chunks(
        kernels.k_obfuscators,
        chunk_bounds(count, executor, chunk_size, min_chunk=kernels.min_chunk(spec)),
        lambda lo, hi: (spec, rand[lo:hi]),
        executor,
    )
    return concat_limbs(parts, public.limbs)


class ObfuscatorPool:
    """Obfuscators computed ahead of time for one key; each leaves the pool when taken.

    With refill=False (default) asking for more than `remaining` raises ObfuscatorPoolExhausted;
    with refill=True the shortfall is computed on the spot, on `take`'s executor (else the one
    given here, else the calling thread). `prefetch` tops the pool up in the background.
    """

    def __init__(
        self,
        key: PublicKey | PrivateKey,
        size: int = 0,
        *,
        obfuscation: Obfuscation = "djn",
        refill: bool = False,
        executor: Executor | None = None,
        chunk_size: int | None = None,
    ) -> None:
        if size < 0:
            raise ValueError("size must be non-negative")
        self._key = key
        self.public_key: PublicKey = key if isinstance(key, PublicKey) else key.public_key
        self.obfuscation: Obfuscation = obfuscation
        self.refill = refill
        self._executor = executor
        self._lock = threading.Lock()
        self._store = make_obfuscators(
            key, size, obfuscation=obfuscation, executor=executor, chunk_size=chunk_size
        )
        self._cursor = 0
        self._queued: collections.deque[LimbArray] = collections.deque()
        self._queued_rows = 0
        self._in_flight = 0  # obfuscators being computed in the background, not yet pooled
        self._jobs: set[Future[None]] = set()
        self._closed = False
        self._error: BaseException | None = None

    @property
    def remaining(self) -> int:
        with self._lock:
            return self._available()

    def _available(self) -> int:  # with the lock held
        return int(self._store.shape[0]) - self._cursor + self._queued_rows

    @property
    def in_flight(self) -> int:
        """Obfuscators that background jobs are computing (they join the pool when done)."""
        with self._lock:
            return self._in_flight

    def __len__(self) -> int:
        return self.remaining

    def take(self, count: int, *, executor: Executor | None = None) -> LimbArray:
        """Remove and return `count` obfuscators (limb rows); they can never be taken again."""
        if count < 0:
            raise ValueError("count must be non-negative")
        with self._lock:
            if self._error is not None:
                error, self._error = self._error, None
                raise RuntimeError("a background obfuscator job failed") from error
            available = min(count, self._available())
            if available < count and not self.refill:
                raise ObfuscatorPoolExhausted(
                    f"asked for {count} obfuscators, {available} left in the pool"
                )
            parts = []
            wanted = available
            while wanted:
                if self._cursor == self._store.shape[0]:  # this block is used up: the next
                    self._store = self._queued.popleft()
                    self._queued_rows -= int(self._store.shape[0])
                    self._cursor = 0
                lo = self._cursor
                hi = min(int(self._store.shape[0]), lo + wanted)
                parts.append(self._store[lo:hi].copy())
                self._store[lo:hi] = 0
                self._cursor = hi
                wanted -= hi - lo
            taken = concat_limbs(parts, self.public_key.limbs)
        if available < count:
            # Not waiting for background jobs: they may run at a low priority; what they make
            # stays in the pool for the next take.
            extra = make_obfuscators(
                self._key,
                count - available,
                obfuscation=self.obfuscation,
                executor=executor or self._executor,
            )
            taken = np.concatenate([taken, extra], axis=0)
        return taken

    def fill(self, count: int, *, executor: Executor | None = None) -> None:
        """Compute `count` more obfuscators now (on `executor` if given) and pool them."""
        if count < 0:
            raise ValueError("count must be non-negative")
        self._append(
            make_obfuscators(
                self._key, count, obfuscation=self.obfuscation, executor=executor or self._executor
            )
        )

    def prefetch(self, target: int, executor: Executor, *, chunk_size: int = PREFETCH_CHUNK) -> int:
        """Start background jobs on `executor` so that the pool plus what is being computed
        reaches `target` obfuscators; returns how many were asked for (0 if none needed).

        Each job computes up to `chunk_size` obfuscators in the executor's thread and adds
        them to the pool. Give an executor of its own (e.g. one low-priority thread): jobs
        queued on the executor of the protocol's critical work would delay it."""
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        with self._lock:
            if self._closed:
                raise RuntimeError("the obfuscator pool is closed")
            have = self._available() + self._in_flight
            missing = max(0, target - have)
            self._in_flight += missing
        for lo in range(0, missing, chunk_size):
            count = min(chunk_size, missing - lo)
            try:
                job = executor.submit(self._background_job, count)
            except RuntimeError:  # the executor was shut down: nothing more gets queued
                with self._lock:
                    self._in_flight -= missing - lo
                return lo
            with self._lock:
                self._jobs.add(job)
            job.add_done_callback(functools.partial(self._job_done, count=count))
        return missing

    def _background_job(self, count: int) -> None:
        if self._closed:
            return
        self._append(make_obfuscators(self._key, count, obfuscation=self.obfuscation))

    def _job_done(self, job: Future[None], *, count: int) -> None:
        with self._lock:
            self._jobs.discard(job)
            self._in_flight -= count
            if not job.cancelled() and job.exception() is not None and self._error is None:
                self._error = job.exception()

    def _append(self, rows: LimbArray) -> None:
        with self._lock:
            if self._closed:
                rows[:] = 0
                return
            self._queued.append(rows)
            self._queued_rows += int(rows.shape[0])

    def close(self) -> None:
        """Cancel queued background jobs and wipe the pool; later takes compute (refill) or
        fail, later prefetches are refused."""
        with self._lock:
            self._closed = True
            jobs = list(self._jobs)
            self._store[:] = 0
            self._cursor = int(self._store.shape[0])
            for block in self._queued:
                block[:] = 0
            self._queued.clear()
            self._queued_rows = 0
        for job in jobs:
            job.cancel()

    def __enter__(self) -> ObfuscatorPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
