"""Converters between Python ints and the limb layouts fedaccel works on.

Two layouts of the same numbers:

* the shared ciphertext layout (contract with fedcrypto): a C-contiguous ``(count, limbs)``
  array of little-endian ``uint64``, limb 0 least significant;
* 32-bit words, what the kernels use: the same memory viewed as ``<u4`` gives
  ``(count, 2 * limbs)`` words in the same order. The numpy reference holds these words in
  ``uint64`` arrays so that products and carries fit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import NDArray

Limbs = NDArray[np.uint64]
"""``(count, limbs)`` uint64, the shared ciphertext layout."""

Words = NDArray[np.uint32]
"""``(count, words)`` uint32, limb 0 least significant: the kernels' layout."""


def limbs_for(modulus: int) -> int:
    """Number of 64-bit limbs of the shared layout for values below ``modulus``."""
    return max(1, -(-modulus.bit_length() // 64))


def words_for(modulus: int) -> int:
    """Number of 32-bit words needed for values below ``modulus``."""
    return max(1, -(-modulus.bit_length() // 32))


def to_limbs(values: Iterable[int], limbs: int) -> Limbs:
    """Python ints -> ``(count, limbs)`` uint64 array. Raises if a value is negative or too wide."""
    width = 8 * limbs
    chunks = []
    for v in values:
        if v < 0:
            raise ValueError("limb layout holds non-negative integers only")
        chunks.append(int(v).to_bytes(width, "little"))  # OverflowError when too wide
    raw = b"".join(chunks)
    return np.frombuffer(raw, dtype="<u8").reshape(len(chunks), limbs).copy()


def from_limbs(data: NDArray[np.unsignedinteger]) -> list[int]:
    """``(count, k)`` little-endian limb array (uint64 or uint32) -> Python ints."""
    arr = np.ascontiguousarray(data)
    if arr.ndim != 2:
        raise ValueError(f"expected a (count, limbs) array, got shape {arr.shape}")
    raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    width = arr.shape[1] * arr.dtype.itemsize
    return [int.from_bytes(raw[i : i + width], "little") for i in range(0, len(raw), width)]


def int_to_words(value: int, words: int) -> Words:
    """One Python int -> ``(words,)`` uint32."""
    return np.frombuffer(int(value).to_bytes(4 * words, "little"), dtype="<u4").copy()


def ints_to_words(values: Sequence[int], words: int) -> Words:
    """Python ints -> ``(count, words)`` uint32."""
    raw = b"".join(int(v).to_bytes(4 * words, "little") for v in values)
    return np.frombuffer(raw, dtype="<u4").reshape(len(values), words).copy()


def limbs_to_words(data: Limbs, words: int) -> Words:
    """Shared layout -> ``(count, words)`` uint32, zero-padded or trimmed to ``words``.

    Trimming is only allowed over zero words; anything else means a value does not fit.
    """
    arr = np.ascontiguousarray(data, dtype="<u8")
    if arr.ndim != 2:
        raise ValueError(f"expected a (count, limbs) array, got shape {arr.shape}")
    w = arr.view("<u4")
    have = w.shape[1]
    if have == words:
        return w.copy()
    if have > words:
        if np.any(w[:, words:]):
            raise ValueError(f"values do not fit in {words} 32-bit words")
        return np.ascontiguousarray(w[:, :words])
    out = np.zeros((w.shape[0], words), dtype="<u4")
    out[:, :have] = w
    return out


def words_to_limbs(w: NDArray[np.unsignedinteger], limbs: int) -> Limbs:
    """``(count, words)`` words (uint32, or uint64 holding 32-bit values) -> shared layout."""
    arr = np.asarray(w).astype("<u4", copy=False)
    want = 2 * limbs
    have = arr.shape[1]
    if have > want:
        if np.any(arr[:, want:]):
            raise ValueError(f"values do not fit in {limbs} 64-bit limbs")
        arr = arr[:, :want]
    out = np.zeros((arr.shape[0], want), dtype="<u4")
    out[:, : arr.shape[1]] = arr
    return out.view("<u8").copy()


def exponent_words(exps: int | NDArray[np.uint64], count: int) -> tuple[Words, bool]:
    """Normalise an exponent argument to ``(rows, ewords)`` uint32 words.

    ``exps`` is a Python int (one exponent for the whole batch), a ``(count,)`` uint64 array
    (one 64-bit exponent per element) or a ``(count, e_limbs)`` uint64 array in the shared
    layout. Returns the words and whether they are shared (one row, broadcast).
    """
    if isinstance(exps, int):
        if exps < 0:
            raise ValueError("exponents must be non-negative")
        ewords = max(1, -(-exps.bit_length() // 32))
        return int_to_words(exps, ewords).reshape(1, ewords), True
    arr = np.asarray(exps)
    if arr.dtype.kind not in "ui":
        raise TypeError(f"exponents must be unsigned integers, got {arr.dtype}")
    if arr.dtype.kind == "i" and np.any(arr < 0):
        raise ValueError("exponents must be non-negative")
    arr = arr.astype("<u8")
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[0] != count:
        raise ValueError(f"expected {count} exponents, got shape {arr.shape}")
    return np.ascontiguousarray(arr).view("<u4").copy(), False
