"""Masked decryption by the other key holder: "mask, send, unmask", with exact integer masks.

A party holding [[m]] under its peer's key learns m without the peer learning it:
  1. it adds a mask R to the fixed-point MANTISSAS (integers, not floats) and re-randomises:
     [[m + R]], R uniform over [0, 2^(bits(bound) + MASK_BITS)), so m + R hides m
     statistically (2^-MASK_BITS);
  2. the key holder decrypts and sends back the residues of m + R modulo its n;
  3. the party subtracts R modulo n and reads the signed mantissa, exactly.
Masks are a deterministic function of (the party's mask seed, tag, iteration): a redone
iteration re-sends the same plaintexts, which the resume rule needs (docs/components.md).
"""

from __future__ import annotations

import hashlib
import math
from concurrent.futures import Executor
from fractions import Fraction
from typing import Final

import numpy as np
from fedcrypto import EncryptedVector
from fedcrypto.paillier.limbs import from_mpz, to_mpz
from numpy.typing import NDArray

MASK_BITS: Final = 80
"""Statistical hiding of a masked mantissa: the mask has this many bits more than the bound."""

Floats = NDArray[np.float64]


def mask_ints(seed: bytes, tag: str, iteration: int, count: int, bits: int) -> list[int]:
    """`count` integers uniform in [0, 2^bits), a deterministic function of (seed, tag, t)."""
    width = (bits + 7) // 8
    stream = hashlib.shake_256(
        seed + tag.encode() + iteration.to_bytes(8, "little", signed=True)
    ).digest(width * count)
    excess = width * 8 - bits
    return [
        int.from_bytes(stream[i * width : (i + 1) * width], "little") >> excess
        for i in range(count)
    ]


def mask_bits(vec: EncryptedVector, what: str = "masking") -> int:
    """Bits of the masks for `vec`; OverflowError when m + R could wrap modulo n."""
    bits = vec.bound.bit_length() + MASK_BITS
    if (1 << bits) + vec.bound > vec.public_key.max_int:
        raise OverflowError(f"{what}: the key is too short for the masked values")
    return bits


def add_mask(vec: EncryptedVector, masks: list[int], executor: Executor | None) -> EncryptedVector:
    """[[m + R]] (mantissas) re-randomised: safe to send to the key holder."""
    pk = vec.public_key
    plain = from_mpz(masks, pk.plain_limbs)
    # Combined, then obfuscated below. Every step gets the executor: it may record the work
    # (the worker's metered pool), and a large vector is split over its threads.
    raw = pk.encrypt_residues(plain, obfuscate=False, executor=executor)
    mask_vec = EncryptedVector(pk, raw, vec.exponent, vec.shape, bound=max(masks, default=0))
    return vec.add(mask_vec, executor=executor).obfuscate(executor=executor)


def unmask(
    residues: NDArray[np.uint64], masks: list[int], exponent: int, n: int, what: str = "unmask"
) -> Floats:
    """The floats m * 16^exponent from residues of m + R mod n (OverflowError past float64)."""
    values, _outside = unmask_counted(residues, masks, exponent, n, None, what)
    if np.isinf(values).any():
        raise OverflowError(f"{what}: an unmasked value overflows float64")
    return values


def unmask_counted(
    residues: NDArray[np.uint64],
    masks: list[int],
    exponent: int,
    n: int,
    limit: int | None,
    what: str = "unmask",
) -> tuple[Floats, int]:
    """unmask's floats, a value past float64's range as +-inf, and how many of the finite
    ones have |m| >= `limit` (None: not counted). An honest answer has none: |m| is at most
    the masked vector's bound, below 2^(bits - MASK_BITS) (mask_bits); a larger m is an
    answer the key holder made up."""
    values = to_mpz(np.ascontiguousarray(residues, dtype="<u8"))
    if len(values) != len(masks):
        raise ValueError(f"{what}: {len(values)} masked values for {len(masks)} masks")
    half = n // 2
    scale = Fraction(16) ** exponent
    out = np.empty(len(masks), dtype=np.float64)
    outside = 0
    for i, (value, mask) in enumerate(zip(values, masks, strict=True)):
        m = (int(value) - mask) % n
        if m > half:
            m -= n
        try:
            out[i] = float(m * scale)
        except OverflowError:
            out[i] = math.copysign(math.inf, m)
            continue
        if limit is not None and abs(m) >= limit:
            outside += 1
    return out, outside
