"""The ciphertext limb layout shared with libs/accel, and conversions to and from gmpy2.

A vector of `count` residues modulo M is one C-contiguous ``<u8`` array of shape
``(count, limbs)`` with ``limbs = ceil(bit_length(M) / 64)``; element i is
``sum(data[i, k] << (64 * k))`` (limb 0 least significant). The same memory viewed as ``<u4``
with shape ``(count, 2 * limbs)`` gives 32-bit limbs in the same order, which is what GPU
kernels use. Conversions go through the little-endian byte string of each row, which is exactly
the row's memory because limbs are little-endian and stored least significant first.

`native` is the optional C extension that computes on this layout directly (None where it was
not built), and `native_simd` whether it runs its AVX-512 IFMA engine on this CPU. Both are
fixed at import: facts about the installation, not state.
"""

from __future__ import annotations

from collections.abc import Sequence

import gmpy2
import numpy as np
from gmpy2 import mpz
from numpy.typing import NDArray

try:
    from .. import _native as native
except ImportError:  # built without GMP headers or a compiler: gmpy2 does all the work
    native = None  # type: ignore[assignment]

LimbArray = NDArray[np.uint64]

LIMB_DTYPE = np.dtype("<u8")

native_simd: bool = native is not None and native.simd_supported()

__all__ = [
    "LIMB_DTYPE",
    "LimbArray",
    "from_mpz",
    "int_from_bytes",
    "int_to_bytes",
    "limbs_for",
    "native",
    "native_simd",
    "to_mpz",
]


def limbs_for(modulus: int | mpz) -> int:
    """Number of 64-bit limbs that hold any residue modulo `modulus`."""
    return (int(gmpy2.bit_length(mpz(modulus) - 1)) + 63) // 64


def to_mpz(data: LimbArray) -> list[mpz]:
    """Rows of a limb array as gmpy2 integers."""
    if data.dtype != LIMB_DTYPE or data.ndim != 2:
        raise ValueError(f"expected a (count, limbs) array of <u8, got {data.dtype} {data.shape}")
    arr = np.ascontiguousarray(data)
    if arr.size == 0:
        return [mpz(0)] * arr.shape[0]
    width = arr.shape[1] * 8
    view = arr.data.cast("B")
    from_bytes = mpz.from_bytes
    return [from_bytes(view[i : i + width], "little") for i in range(0, len(view), width)]


def from_mpz(values: Sequence[mpz | int], limbs: int) -> LimbArray:
    """Pack non-negative integers below 2^(64*limbs) into a (count, limbs) limb array."""
    width = limbs * 8
    try:
        # bytearray.join: one writable buffer that numpy adopts without another copy
        raw = bytearray().join([mpz(v).to_bytes(width, "little") for v in values])
    except OverflowError as exc:
        raise ValueError(f"a value does not fit in {limbs} limbs") from exc
    return np.frombuffer(raw, dtype=LIMB_DTYPE).reshape(len(values), limbs)


def int_to_bytes(value: int | mpz) -> bytes:
    """Minimal little-endian bytes of a non-negative integer (at least one byte)."""
    v = mpz(value)
    return bytes(v.to_bytes(max(1, (int(gmpy2.bit_length(v)) + 7) // 8), "little"))


def int_from_bytes(raw: bytes) -> mpz:
    """Inverse of `int_to_bytes`."""
    return mpz.from_bytes(raw, "little")
