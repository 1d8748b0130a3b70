"""Screening of Paillier ciphertext rows, as an auditor checks every ciphertext that crosses.

Rows are the limb layout of `fedcrypto.paillier.limbs` (a (count, limbs) ``<u8`` array). Two
questions are answered for a whole batch at once:

- `scan_rows`: each row's 16-byte digest (BLAKE2b-128 of the row's bytes, for repeat
  detection: equal rows always have equal digests, so a collision could only ever cause a false
  "repeated", never hide a repeat), how many rows equal 1, and how many lie outside (0, top);
- `shares_factor`: whether any row shares a factor with any of the moduli, from one gcd per
  modulus: gcd(prod rows mod n, n) != 1 exactly when some row's gcd with n is not 1 (coprimality
  is multiplicative). Which rows are the culprits is the caller's (rare) second pass.

The C extension (fedcrypto._native's scan_rows and product_gcd) does both with no Python object
per row: limb comparisons, its own BLAKE2b and a Montgomery product modulo n; where the CPU has
AVX-512 IFMA, eight rows at a time in vector lanes (both the hashes and the product), else one
row at a time (GMP's mpn functions for the product). Where the extension is missing (or an
older build lacks these functions), hashlib, numpy and gmpy2 give the same answers, digests
included, bit for bit; `use_native=False` forces that path (for tests and benchmarks). Pure
functions: arrays and integers in, answers out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from gmpy2 import gcd, mpz

from .paillier.limbs import LIMB_DTYPE, LimbArray, int_to_bytes, native, native_simd, to_mpz

__all__ = ["DIGEST_BYTES", "RowScan", "native_scan_available", "scan_rows", "shares_factor"]

DIGEST_BYTES = 16

_native_scan = getattr(native, "scan_rows", None)
_native_product_gcd = getattr(native, "product_gcd", None)


def native_scan_available() -> bool:
    """Whether the C extension screens the rows (else gmpy2 and hashlib do)."""
    return _native_scan is not None and _native_product_gcd is not None


@dataclass(frozen=True)
class RowScan:
    """One batch's screening: `digests` holds DIGEST_BYTES per row, in row order."""

    digests: bytes
    equal_to_one: int
    outside: int


def _limb_rows(rows: LimbArray) -> LimbArray:
    if rows.ndim != 2:
        raise ValueError(f"expected a (count, limbs) array, got shape {rows.shape}")
    return np.ascontiguousarray(rows, dtype=LIMB_DTYPE)


def scan_rows(
    rows: LimbArray, top: int | mpz | None, *, use_native: bool = True, simd: bool = True
) -> RowScan:
    """Digests of the rows, and how many equal 1 and how many lie outside (0, top) (both 0
    when `top` is None: no bound known). `simd=False` keeps the extension to one row at a time
    (else it hashes eight rows at once in AVX-512 lanes on CPUs with the IFMA engine)."""
    data = _limb_rows(rows)
    count, limbs = data.shape
    if use_native and _native_scan is not None and limbs > 0:
        digests = bytearray(DIGEST_BYTES * count)
        bound = int_to_bytes(top) if top is not None else b"\x00"
        trivial, outside = _native_scan(digests, data, limbs, bound, simd and native_simd)
        if top is None:
            trivial = outside = 0
        return RowScan(bytes(digests), trivial, outside)
    raw, width = data.tobytes(), limbs * 8
    blake2b = hashlib.blake2b
    digests_b = (
        b"".join(
            blake2b(raw[i : i + width], digest_size=DIGEST_BYTES).digest()
            for i in range(0, len(raw), width)
        )
        if width
        else blake2b(b"", digest_size=DIGEST_BYTES).digest() * count
    )
    if top is None:
        return RowScan(digests_b, 0, 0)
    trivial, outside = _limb_counts(data, mpz(top))
    return RowScan(digests_b, trivial, outside)


def _limb_counts(data: LimbArray, top: mpz) -> tuple[int, int]:
    """(rows equal to 1, rows outside (0, top)) by comparing limbs with numpy: a row is >= top
    when it equals top's limbs or differs first (from the most significant limb) by a larger
    limb. No integer per row."""
    count, limbs = data.shape
    if limbs == 0:
        return 0, count
    nonzero = data.any(axis=1)
    trivial = int(np.count_nonzero((data[:, 0] == 1) & ~data[:, 1:].any(axis=1)))
    if int(top).bit_length() > 64 * limbs:  # every row is below top
        return trivial, int(count - np.count_nonzero(nonzero))
    bound = np.frombuffer(int(top).to_bytes(8 * limbs, "little"), dtype=LIMB_DTYPE)
    high_first, bound_high_first = data[:, ::-1], bound[::-1]
    differs = high_first != bound_high_first
    first = differs.argmax(axis=1)
    rows = np.arange(count)
    above = ~differs.any(axis=1) | (high_first[rows, first] > bound_high_first[first])
    return trivial, int(np.count_nonzero(~nonzero | above))


def shares_factor(
    rows: LimbArray, moduli: Sequence[int | mpz], *, use_native: bool = True, simd: bool = True
) -> bool:
    """Whether some row shares a factor with some modulus (a zero row shares n with n).
    `simd=False` keeps the extension on its scalar GMP engine (else it uses AVX-512 IFMA lanes
    where the CPU has them)."""
    data = _limb_rows(rows)
    limbs = data.shape[1]
    ns = [mpz(n) for n in moduli]
    if use_native and _native_product_gcd is not None and limbs > 0:
        # The extension's product needs an odd n > 1 (a Paillier modulus always is); any other
        # value goes the gmpy2 way below.
        odd = [n for n in ns if n > 1 and n % 2 == 1]
        lanes = simd and native_simd
        if any(_native_product_gcd(data, limbs, int_to_bytes(n), lanes) != b"\x01" for n in odd):
            return True
        ns = [n for n in ns if not (n > 1 and n % 2 == 1)]
        if not ns:
            return False
    values = to_mpz(data)
    return any(_product_gcd(values, n) != 1 for n in ns)


def _product_gcd(values: Sequence[mpz], n: mpz) -> mpz:
    """gcd(prod values mod n, n): one gcd and a modular product instead of a gcd per value."""
    product = mpz(1)
    # Two values per reduction: one (n^2 x n^2) product and two reductions mod n per pair cost
    # less than two (n x n^2) products each reduced (measured: ~30% less).
    pairs = iter(values)
    for c in pairs:
        d = next(pairs, 1)
        product = product * (c * d % n) % n
    return mpz(gcd(product, n))
