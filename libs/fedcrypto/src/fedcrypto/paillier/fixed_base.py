"""Fixed-base windowed exponentiation tables (Brickell, Gordon, McCurley and Wilson style).

For a fixed base g, modulus M, exponents of at most `exponent_bits` bits and a window of w bits,
the table holds T[i][d] = g^(d * 2^(w*i)) mod M for every window position i and digit d.
Then g^a = prod_i T[i][a_i] where a_i are the base-2^w digits of a: no squarings at all and
ceil(exponent_bits / w) - 1 multiplications, against roughly exponent_bits squarings for a
variable-base exponentiation. With w = 8 and 1024-bit exponents that is 127 multiplications
per exponentiation; the table costs 2^w * ceil(bits / w) residues of memory (16 MiB for a
2048-bit Paillier key) and about as many multiplications once to build.

Exponents are passed as little-endian byte strings (one row of a uint8 array per exponent) so
that a batch crosses process boundaries as one ndarray.
"""

from __future__ import annotations

import numpy as np
from gmpy2 import mpz
from numpy.typing import NDArray

from .limbs import LimbArray, from_mpz, int_from_bytes, int_to_bytes, limbs_for, to_mpz


def exponent_digits(exponents: NDArray[np.uint8], window: int) -> NDArray[np.int64]:
    """Base-2^window digits (least significant first) of little-endian byte exponents."""
    if window == 8:
        return exponents.astype(np.int64)
    bits = np.unpackbits(exponents, axis=1, bitorder="little")
    pad = (-bits.shape[1]) % window
    if pad:
        bits = np.pad(bits, ((0, 0), (0, pad)))
    weights = np.left_shift(np.int64(1), np.arange(window, dtype=np.int64))
    digits: NDArray[np.int64] = bits.reshape(bits.shape[0], -1, window).astype(np.int64) @ weights
    return digits


class FixedBaseTable:
    """Precomputed powers of one base modulo one modulus for fast g^a with short a."""

    def __init__(self, modulus: mpz, window: int, exponent_bits: int, entries: list[mpz]) -> None:
        self.modulus = mpz(modulus)
        self.window = window
        self.exponent_bits = exponent_bits
        self.positions = -(-exponent_bits // window)
        if len(entries) != self.positions << window:
            raise ValueError("table size does not match window and exponent size")
        self._entries = entries
        self._array: LimbArray | None = None

    @classmethod
    def build(
        cls, base: int | mpz, modulus: int | mpz, exponent_bits: int, window: int = 8
    ) -> FixedBaseTable:
        """Compute the table for `base` (about 2^window * exponent_bits / window products)."""
        if not 1 <= window <= 16:
            raise ValueError("window must be between 1 and 16 bits")
        if exponent_bits % 8:
            raise ValueError("exponent_bits must be a multiple of 8 (exponents are bytes)")
        mod = mpz(modulus)
        size = 1 << window
        positions = -(-exponent_bits // window)
        entries: list[mpz] = []
        g = mpz(base) % mod
        for _ in range(positions):
            row = [mpz(1), g]
            for _d in range(2, size):
                row.append(row[-1] * g % mod)
            entries.extend(row)
            # next position's unit is g^(2^window) = row[size-1] * g
            g = row[-1] * g % mod
        return cls(mod, window, exponent_bits, entries)

    @property
    def exponent_bytes(self) -> int:
        return self.exponent_bits // 8

    def pow_many(self, exponents: NDArray[np.uint8]) -> list[mpz]:
        """g^a mod M for every row a of a (count, exponent_bits/8) little-endian byte array."""
        if exponents.ndim != 2 or exponents.shape[1] != self.exponent_bytes:
            raise ValueError(
                f"exponents must have shape (count, {self.exponent_bytes}), got {exponents.shape}"
            )
        digits = exponent_digits(exponents, self.window).tolist()
        entries = self._entries
        mod = self.modulus
        size = 1 << self.window
        offsets = range(0, self.positions * size, size)
        out: list[mpz] = []
        for row in digits:
            acc = None
            for off, d in zip(offsets, row, strict=True):
                if d:
                    e = entries[off + d]
                    acc = e if acc is None else acc * e % mod
            out.append(mpz(1) if acc is None else acc)
        return out

    def to_array(self) -> LimbArray:
        """The entries as a (positions * 2^window, limbs) limb array (cached)."""
        if self._array is None:
            self._array = from_mpz(self._entries, limbs_for(self.modulus))
        return self._array

    @classmethod
    def from_array(
        cls, array: LimbArray, modulus: int | mpz, exponent_bits: int, window: int
    ) -> FixedBaseTable:
        table = cls(mpz(modulus), window, exponent_bits, to_mpz(array))
        table._array = array
        return table

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # Crossing into a worker process as one limb array (16 MiB for a 2048-bit key) is far
        # cheaper than pickling tens of thousands of mpz objects.
        return (
            _table_from_array,
            (self.to_array(), int_to_bytes(self.modulus), self.exponent_bits, self.window),
        )

    @property
    def nbytes(self) -> int:
        return (self.positions << self.window) * limbs_for(self.modulus) * 8


def _table_from_array(
    array: LimbArray, modulus: bytes, exponent_bits: int, window: int
) -> FixedBaseTable:
    return FixedBaseTable.from_array(array, int_from_bytes(modulus), exponent_bits, window)
