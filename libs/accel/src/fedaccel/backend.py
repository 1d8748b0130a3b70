"""The batch Paillier interface, and argument checks shared by its implementations.

All numbers cross this interface in the shared ciphertext layout: ``(count, limbs)`` uint64,
limb 0 least significant (see fedaccel.limbs). Moduli are Python ints. Every implementation
returns canonical residues, so two backends given the same inputs return the same bytes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedaccel.crt import CrtKey
from fedaccel.limbs import (
    Limbs,
    Words,
    exponent_words,
    from_limbs,
    limbs_for,
    limbs_to_words,
    to_limbs,
    words_for,
)
from fedaccel.montgomery import Modulus, kernel_words, modulus
from fedaccel.reference import MULTIEXP_WINDOW, bit_length
from fedaccel.tables import FixedBaseTable

Exponents = int | NDArray[np.uint64]
"""A Python int shared by the batch, a (count,) uint64 array (one 64-bit exponent per
element), or a (count, e_limbs) uint64 array in the shared layout."""

MULTIEXP_CHUNK = 32
"""Bases per thread in the multi-exponentiation (both backends; results do not depend on it)."""


class GpuUnavailableError(RuntimeError):
    """The GPU backend was forced but CuPy or a CUDA device is missing."""


def kernel_modulus(mod: int) -> Modulus:
    """Montgomery constants with the kernels' limb count: both backends use the same R."""
    return modulus(mod, kernel_words(words_for(mod)))


def below(w: Words, md: Modulus) -> bool:
    """Whether every row of ``w`` (uint32 words, ``md.words`` wide) is < md.value."""
    if w.shape[0] == 0:
        return True
    m = md.limbs
    diff = w != m
    has = diff.any(axis=1)
    top = w.shape[1] - 1 - np.argmax(diff[:, ::-1], axis=1)
    rows = np.arange(w.shape[0])
    return bool(np.all(has & (w[rows, top] < m[top])))


def operand(data: Limbs, md: Modulus, what: str, rows: int | None = None) -> Words:
    """Shared-layout operand -> kernel words, checked to be < the modulus (and row count)."""
    arr = np.asarray(data)
    if arr.dtype != np.uint64 or arr.ndim != 2:
        raise TypeError(f"{what}: expected a (count, limbs) uint64 array, got {arr.dtype} "
                        f"{arr.shape}")
    if rows is not None and arr.shape[0] not in (rows, 1):
        raise ValueError(f"{what}: {arr.shape[0]} rows, expected {rows} (or 1 to broadcast)")
    w = limbs_to_words(arr, md.words)
    if not below(w, md):
        raise ValueError(f"{what}: every value must be below the modulus")
    return w


def exponents(exps: Exponents, rows: int, max_bits: int | None = None) -> tuple[Words, bool]:
    """Exponent words and whether one row is shared; optionally bounds their bit length."""
    e, shared = exponent_words(exps, rows)
    if max_bits is not None and bit_length(e) > max_bits:
        raise ValueError(f"exponents exceed the {max_bits} bits the table covers")
    return e, shared


@dataclass(frozen=True)
class Capabilities:
    name: str
    is_gpu: bool
    exact: bool = True


class Backend(ABC):
    """Batch big-integer and Paillier operations on the shared limb layout."""

    capabilities: Capabilities

    @property
    def name(self) -> str:
        return self.capabilities.name

    @property
    def is_gpu(self) -> bool:
        return self.capabilities.is_gpu

    # --- modular arithmetic -----------------------------------------------------------------

    @abstractmethod
    def mulmod(self, a: Limbs, b: Limbs, mod: int) -> Limbs:
        """a[i] * b[i] mod ``mod`` (b may have one row, broadcast). Inputs must be < mod."""

    @abstractmethod
    def powmod(self, base: Limbs, exps: Exponents, mod: int) -> Limbs:
        """base[i] ^ e[i] mod ``mod``, fixed 4-bit window."""

    @abstractmethod
    def fixed_base_pow(self, table: FixedBaseTable, exps: Exponents, count: int) -> Limbs:
        """table.base ^ e[i] mod table.modulus for ``count`` exponents (0 <= e < 2^exp_bits)."""

    @abstractmethod
    def multiexp(self, bases: Limbs, exps: NDArray[np.uint64], mod: int) -> Limbs:
        """out[j] = prod_i bases[i] ^ exps[i, j] mod ``mod``: X^T [[d]] with bases = [[d]] and
        exps = X, shape (k, f) of non-negative integers < 2^64. Returns (f, limbs)."""

    # --- Paillier (g = n + 1) ---------------------------------------------------------------

    @abstractmethod
    def encrypt(self, m: Limbs, obf: Limbs, n: int) -> Limbs:
        """(1 + m[i] n) obf[i] mod n^2 for plaintexts m < n and obfuscators obf < n^2."""

    @abstractmethod
    def encrypt_fixed_base(self, m: Limbs, table: FixedBaseTable, exps: Exponents,
                           n: int) -> Limbs:
        """Encryption whose obfuscator is table.base ^ e[i] mod n^2 (DJN: base = h^n)."""

    @abstractmethod
    def decrypt_crt(self, c: Limbs, key: CrtKey) -> Limbs:
        """CRT decryption of ciphertexts mod n^2; plaintexts as (count, limbs_for(n))."""

    # --- packing ----------------------------------------------------------------------------

    @abstractmethod
    def pack(self, slots: NDArray[np.uint64], slot_bits: int, limbs: int) -> Limbs:
        """Row i = sum_s slots[i, s] 2^(slot_bits s); each slot < 2^slot_bits."""

    @abstractmethod
    def unpack(self, packed: Limbs, slot_bits: int, slots: int) -> NDArray[np.uint64]:
        """The ``slots`` fields of ``slot_bits`` bits of each row (inverse of pack)."""

    # --- derived ----------------------------------------------------------------------------

    def add(self, a: Limbs, b: Limbs, n: int) -> Limbs:
        """Homomorphic addition: [[x]] [[y]] mod n^2."""
        return self.mulmod(a, b, n * n)

    def scalar_mul(self, c: Limbs, k: Exponents, n: int) -> Limbs:
        """Homomorphic multiplication by a non-negative plaintext scalar: [[x]]^k mod n^2."""
        return self.powmod(c, k, n * n)

    def matmul_signed(self, bases: Limbs, exps: NDArray[np.int64], n: int) -> Limbs:
        """X^T [[d]] for signed integer X (k, f): the positive and negative parts go through
        multiexp, the negative part is inverted mod n^2 on the host (f inverses)."""
        x = np.asarray(exps, dtype=np.int64)
        pos = np.where(x > 0, x, 0).astype(np.uint64)
        neg = np.where(x < 0, -x, 0).astype(np.uint64)
        nsq = n * n
        p = self.multiexp(bases, pos, nsq)
        if not neg.any():
            return p
        q = self.multiexp(bases, neg, nsq)
        q_inv = to_limbs([pow(v, -1, nsq) for v in from_limbs(q)], limbs_for(nsq))
        return self.mulmod(p, q_inv, nsq)


def check_pack_args(slots: NDArray[np.uint64], slot_bits: int, limbs: int) -> NDArray[np.uint64]:
    arr = np.asarray(slots)
    if arr.ndim != 2 or arr.dtype.kind not in "ui":
        raise TypeError("slots must be a (count, k) unsigned integer array")
    if not 1 <= slot_bits <= 64:
        raise ValueError("slot_bits must be between 1 and 64")
    if arr.shape[1] * slot_bits > 64 * limbs:
        raise ValueError(f"{arr.shape[1]} slots of {slot_bits} bits exceed {limbs} limbs")
    arr = arr.astype(np.uint64)
    if slot_bits < 64 and np.any(arr >> np.uint64(slot_bits)):
        raise ValueError(f"a slot value does not fit in {slot_bits} bits")
    return np.ascontiguousarray(arr)


def multiexp_exponents(exps: NDArray[np.uint64], k: int) -> tuple[NDArray[np.uint64], int]:
    """A multiexp's exponents as a contiguous (k, f) uint64 array, checked against its k bases,
    and the number of MULTIEXP_WINDOW-bit windows its largest entry needs."""
    e = np.ascontiguousarray(exps, dtype=np.uint64)
    if e.ndim != 2 or e.shape[0] != k or k == 0:
        raise ValueError(f"exps must be (k, f) with k = {k} > 0, got {e.shape}")
    nbits = int(e.max()).bit_length() if e.size else 0
    return e, -(-nbits // MULTIEXP_WINDOW)


def fixed_base_square(table: FixedBaseTable, n: int) -> int:
    """n^2, once the table is checked to be one for n^2 (encryption with DJN obfuscators)."""
    nsq = n * n
    if table.modulus != nsq:
        raise ValueError("the table is not for n^2 of this key")
    return nsq


def packed_words(packed: Limbs, slot_bits: int) -> Words:
    """Packed plaintext limbs as u32 words, for unpacking into slots of slot_bits."""
    if not 1 <= slot_bits <= 64:
        raise ValueError("slot_bits must be between 1 and 64")
    return np.ascontiguousarray(packed, dtype=np.uint64).view("<u4")


def message_operand(m: Limbs, n: int, md: Modulus) -> Words:
    """Plaintexts (values < n) widened to the kernel words of n^2 (``md``)."""
    arr = np.asarray(m)
    if arr.dtype != np.uint64 or arr.ndim != 2:
        raise TypeError("m: expected a (count, limbs) uint64 array")
    w = limbs_to_words(arr, md.words)
    if not below(w, modulus(n, md.words)):
        raise ValueError("m: every plaintext must be below n")
    return w
