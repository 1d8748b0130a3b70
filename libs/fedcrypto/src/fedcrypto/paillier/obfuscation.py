"""A pool of precomputed obfuscators, each handed out exactly once.

Precomputing obfuscators moves the expensive part of encryption (hs^a or r^n) off the critical
path: encrypting with a pool costs one short product per element. Using one obfuscator twice
would leak the plaintext difference (c1 / c2 = (1 + n)^(m1 - m2)), so reuse is made impossible
by construction: `take` copies rows out, overwrites them in the pool with zeros, and only ever
moves a cursor forward; nothing else reads the pool's storage.
"""

from __future__ import annotations

from concurrent.futures import Executor

import numpy as np

from . import kernels
from .errors import ObfuscatorPoolExhausted
from .keys import Obfuscation, PrivateKey, PublicKey, random_bytes
from .limbs import LimbArray
from .parallel import chunk_bounds, concat_limbs, map_chunks


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
    with refill=True the shortfall is computed on the spot (on the calling thread).
    """

    def __init__(
        self,
        key: PublicKey | PrivateKey,
        size: int,
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
        self._store = make_obfuscators(
            key, size, obfuscation=obfuscation, executor=executor, chunk_size=chunk_size
        )
        self._cursor = 0

    @property
    def remaining(self) -> int:
        return int(self._store.shape[0]) - self._cursor

    def __len__(self) -> int:
        return self.remaining

    def take(self, count: int) -> LimbArray:
        """Remove and return `count` obfuscators (limb rows); they can never be taken again."""
        if count < 0:
            raise ValueError("count must be non-negative")
        available = min(count, self.remaining)
        if available < count and not self.refill:
            raise ObfuscatorPoolExhausted(
                f"asked for {count} obfuscators, {self.remaining} left in the pool"
            )
        lo, hi = self._cursor, self._cursor + available
        taken = self._store[lo:hi].copy()
        self._store[lo:hi] = 0
        self._cursor = hi
        if available < count:
            extra = make_obfuscators(self._key, count - available, obfuscation=self.obfuscation)
            taken = np.concatenate([taken, extra], axis=0)
        return taken
