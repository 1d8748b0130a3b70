"""Montgomery constants of a modulus, shared by the numpy reference and the kernels.

For an odd modulus m held in ``words`` 32-bit words, R = 2^(32 words) and
minv = -m^-1 mod 2^32. The kernels get the constants as one ``(4, words)`` block
(m, R^2 mod m, R mod m, R^3 mod m) plus minv; the reference reads the same fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from fedaccel.limbs import Words, int_to_words, words_for

KERNEL_WORDS: tuple[int, ...] = (16, 32, 48, 64, 96, 128, 192)
"""Limb counts the CUDA kernels are instantiated for (-DFA_LIMBS). 64/128/192 are n^2 for
1024/2048/3072-bit keys, 32/64/96 the p^2 of CRT decryption, 16/32/48 the primes."""


def kernel_words(words: int) -> int:
    """Smallest kernel limb count that holds ``words`` words."""
    for k in KERNEL_WORDS:
        if k >= words:
            return k
    raise ValueError(
        f"modulus of {32 * words} bits exceeds the largest kernel size ({32 * KERNEL_WORDS[-1]})"
    )


@dataclass(frozen=True)
class Modulus:
    """An odd modulus with its Montgomery constants for R = 2^(32 words)."""

    value: int
    words: int
    minv: int
    r2: int
    one: int
    r3: int
    limbs: Words = field(repr=False, compare=False)

    @property
    def r(self) -> int:
        return 1 << (32 * self.words)

    def block(self) -> Words:
        """(4, words) uint32: m, R^2, R, R^3 mod m, the kernels' modulus argument."""
        return np.stack(
            [
                self.limbs,
                int_to_words(self.r2, self.words),
                int_to_words(self.one, self.words),
                int_to_words(self.r3, self.words),
            ]
        )

    def to_mont(self, x: int) -> int:
        return (x * self.one) % self.value


@lru_cache(maxsize=64)
def modulus(value: int, words: int | None = None) -> Modulus:
    """Montgomery constants of ``value`` in ``words`` words (default: the fewest that fit)."""
    if value < 3 or value % 2 == 0:
        raise ValueError("Montgomery arithmetic needs an odd modulus > 2")
    need = words_for(value)
    w = need if words is None else words
    if w < need:
        raise ValueError(f"modulus needs {need} words, {w} given")
    r = 1 << (32 * w)
    minv = (-pow(value, -1, 1 << 32)) % (1 << 32)
    return Modulus(
        value=value,
        words=w,
        minv=minv,
        r2=(r * r) % value,
        one=r % value,
        r3=pow(r, 3, value),
        limbs=int_to_words(value, w),
    )
