"""Batch modular arithmetic on lists of gmpy2 integers: inversion and multi-exponentiation.

These are the building blocks of the encrypted-vector operations; they work on plain lists of
mpz (one batch, inside one process) and know nothing about keys or encodings.
"""

from __future__ import annotations

from collections.abc import Sequence

import gmpy2
import numpy as np
from gmpy2 import mpz
from numpy.typing import NDArray


def batch_invert(values: Sequence[mpz], modulus: mpz) -> list[mpz]:
    """Inverses of all values modulo `modulus` with one modular inversion (Montgomery's trick).

    Cost: 3 (len - 1) modular multiplications plus one inversion, against one inversion
    (an extended gcd of modulus size) per element. Raises ZeroDivisionError when some value
    is not invertible.
    """
    count = len(values)
    if count == 0:
        return []
    prefix = [values[0]]
    for v in values[1:]:
        prefix.append(prefix[-1] * v % modulus)
    inv = gmpy2.invert(prefix[-1], modulus)
    if inv == 0:
        raise ZeroDivisionError("a value is not invertible")
    out: list[mpz] = [mpz(0)] * count
    for i in range(count - 1, 0, -1):
        out[i] = inv * prefix[i - 1] % modulus
        inv = inv * values[i] % modulus
    out[0] = inv
    return out


def _window_cost(count: int, bits: int, window: int) -> int:
    """Modular products the bucket method spends for `count` bases and `bits`-bit exponents."""
    windows = -(-bits // window)
    top_bits = bits - window * (windows - 1)
    full = (windows - 1) * (count + (2 << window))
    return full + count + (2 << top_bits) + bits


def choose_window(count: int, bits: int) -> int:
    """Bucket width minimising the cost model of `multi_exponentiate`."""
    if bits <= 0:
        return 1
    return min(range(1, min(bits, 16) + 1), key=lambda w: _window_cost(count, bits, w))


def multi_exponentiate(
    bases: Sequence[mpz],
    inverse_bases: Sequence[mpz | None],
    exponents: NDArray[np.int64],
    modulus: mpz,
) -> mpz:
    """prod_i bases[i]^exponents[i] mod modulus, for small signed exponents (Pippenger buckets).

    A negative exponent e uses inverse_bases[i]^|e|, so no exponent ever grows to the size of
    the group order. Exponents are split into windows of w bits; in each window every base with
    a non-zero digit d is multiplied into bucket d (one product per base and window), and the
    buckets are folded as prod_d B_d^d with two running products (2 * 2^w products). Windows
    are joined most significant first with w squarings each. For m bases and b-bit exponents
    that is about ceil(b/w) * (m + 2^(w+1)) products instead of m full exponentiations.
    """
    if exponents.ndim != 1 or len(exponents) != len(bases):
        raise ValueError("need one exponent per base")
    nonzero = np.flatnonzero(exponents)
    if len(nonzero) == 0:
        return mpz(1)
    mags = np.abs(exponents[nonzero])
    if int(mags.max()) >= 1 << 62:
        raise ValueError("multi-exponentiation exponents must stay below 2^62")
    chosen: list[mpz] = []
    for i, e in zip(nonzero.tolist(), exponents[nonzero].tolist(), strict=True):
        if e > 0:
            chosen.append(bases[i])
        else:
            inv = inverse_bases[i]
            if inv is None:
                raise ValueError(f"base {i} has a negative exponent but no inverse")
            chosen.append(inv)
    bits = int(mags.max()).bit_length()
    window = choose_window(len(chosen), bits)
    mask = (1 << window) - 1
    windows = -(-bits // window)
    acc: mpz | None = None
    for w in range(windows - 1, -1, -1):
        if acc is not None:
            acc = gmpy2.powmod(acc, 1 << window, modulus)
        digits = (mags >> (window * w)) & mask
        used = np.flatnonzero(digits)
        if len(used) == 0:
            continue
        buckets: list[mpz | None] = [None] * (int(digits.max()) + 1)
        for i, d in zip(used.tolist(), digits[used].tolist(), strict=True):
            b = buckets[d]
            buckets[d] = chosen[i] if b is None else b * chosen[i] % modulus
        running: mpz | None = None
        total: mpz | None = None
        for d in range(len(buckets) - 1, 0, -1):
            b = buckets[d]
            if b is not None:
                running = b if running is None else running * b % modulus
            if running is not None:
                total = running if total is None else total * running % modulus
        if total is not None:
            acc = total if acc is None else acc * total % modulus
    return mpz(1) if acc is None else acc
