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

The entries are held as one limb array (the shared layout). With the C extension the table is
built and used there; its AVX-512 engine reads a radix-2^52 copy of the entries
(`native_table`, made once per table object, 20 MiB for a 2048-bit key). gmpy2 integers of the
entries are made only when the gmpy2 path needs them.
"""

from __future__ import annotations

import gmpy2
import numpy as np
from gmpy2 import mpz
from numpy.typing import NDArray

from .limbs import (
    LimbArray,
    from_mpz,
    int_from_bytes,
    int_to_bytes,
    limbs_for,
    native,
    native_simd,
    to_mpz,
)


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

    def __init__(
        self,
        modulus: mpz,
        window: int,
        exponent_bits: int,
        entries: list[mpz] | None = None,
        *,
        array: LimbArray | None = None,
    ) -> None:
        self.modulus = mpz(modulus)
        self.window = window
        self.exponent_bits = exponent_bits
        self.positions = -(-exponent_bits // window)
        size = self.positions << window
        if entries is None and array is None:
            raise ValueError("a table needs its entries")
        if entries is not None and len(entries) != size:
            raise ValueError("table size does not match window and exponent size")
        if array is not None and array.shape != (size, limbs_for(self.modulus)):
            raise ValueError("table size does not match window and exponent size")
        self._entries = entries
        self._array = array
        self._native_table: NDArray[np.uint64] | None = None

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
        g = mpz(base) % mod
        if native is not None:
            return cls(mod, window, exponent_bits, array=_build_native(g, mod, positions, window))
        entries: list[mpz] = []
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
        entries = self.entries()
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

    def entries(self) -> list[mpz]:
        """The entries as gmpy2 integers (made from the limb array on first use)."""
        if self._entries is None:
            assert self._array is not None
            self._entries = to_mpz(self._array)
        return self._entries

    def to_array(self) -> LimbArray:
        """The entries as a (positions * 2^window, limbs) limb array (cached)."""
        if self._array is None:
            assert self._entries is not None
            self._array = from_mpz(self._entries, limbs_for(self.modulus))
        return self._array

    def native_table(self) -> NDArray[np.uint64]:
        """The entries in radix 2^52 for the extension's AVX-512 engine (cached).

        Made in the calling thread before a batch is spread over workers, so threads share one
        copy; a process worker makes its own from the pickled limb array.
        """
        if native is None or not native_simd:
            raise RuntimeError("the AVX-512 engine of fedcrypto._native is not available")
        if self._native_table is None:
            mod_b = int_to_bytes(self.modulus)
            raw = native.prepare_table(self.to_array(), limbs_for(self.modulus), mod_b)
            self._native_table = np.frombuffer(raw, dtype=np.uint64).reshape(
                self.positions << self.window, -1
            )
        return self._native_table

    @classmethod
    def from_array(
        cls, array: LimbArray, modulus: int | mpz, exponent_bits: int, window: int
    ) -> FixedBaseTable:
        return cls(mpz(modulus), window, exponent_bits, array=array)

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


def _build_native(g: mpz, mod: mpz, positions: int, window: int) -> LimbArray:
    """The table as limbs, row d of every position at once: T[i][d] = T[i][d-1] * T[i][1].

    The position units g^(2^(w i)) come from repeated squaring; then each digit column is one
    batched product over all positions (the extension multiplies them in parallel lanes).
    """
    assert native is not None
    limbs = limbs_for(mod)
    size = 1 << window
    mod_b = int_to_bytes(mod)
    units = [g]
    for _ in range(positions - 1):
        units.append(gmpy2.powmod(units[-1], size, mod))
    # digit-major while building (each column contiguous), position-major in the result
    table = np.empty((size, positions, limbs), dtype=np.uint64)
    table[0] = from_mpz([1] * positions, limbs)
    table[1] = from_mpz(units, limbs)
    for d in range(2, size):
        native.mulmod(table[d], table[d - 1], table[1], mod_b, limbs, native_simd)
    return np.ascontiguousarray(table.transpose(1, 0, 2)).reshape(positions * size, limbs)
