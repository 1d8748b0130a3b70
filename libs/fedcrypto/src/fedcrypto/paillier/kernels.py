"""Picklable batch kernels: the modular arithmetic behind every vector operation.

Every function here is top level and takes only bytes, ints, tuples and ndarrays, so a caller's
executor can run it on another core (see `parallel`). Residues travel in the limb layout of
`limbs`; moduli travel as little-endian bytes.

Two implementations compute the same residues, bit for bit:
- the C extension `fedcrypto._native` (when it was built): works on the limb arrays in place,
  with no Python object per element, and releases the GIL, so a ThreadPoolExecutor spreads a
  batch over cores with nothing pickled. On CPUs with AVX-512 IFMA it multiplies eight residues
  at once in radix 2^52 Montgomery form; elsewhere it loops over GMP's mpz on row views;
- gmpy2 (always available): a kernel converts its chunk to mpz once, loops in gmpy2, and
  converts back once. Used where the extension is missing, and for validation.
`native_available()` tells whether the extension is in use.

Paillier facts used throughout (g = n + 1):
  Enc(m; r) = (1 + m n) * r^n mod n^2, and (1 + m n) * x = x + n * (m x mod n) mod n^2, so
  multiplying in a plaintext costs one short product and one reduction modulo n, not a full
  product modulo n^2.
"""

from __future__ import annotations

from typing import Any

import gmpy2
import numpy as np
from gmpy2 import mpz
from numpy.typing import NDArray

from .errors import CiphertextError
from .fixed_base import FixedBaseTable
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
from .multiexp import batch_invert, multi_exponentiate
from .parallel import TABLE_MIN_CHUNK

# An obfuscation spec names how obfuscators r^n (or their DJN replacement) are made:
#   ("djn", n, table, exponent_bits, window)            public key: hs^a mod n^2 from a table
#   ("djn_crt", p, q, table_p, table_q, bits, window)   key holder: hs^a mod p^2 and q^2, CRT
# Tables are FixedBaseTable objects, which pickle as one limb array.
#   ("textbook", n)                                     public key: r^n mod n^2, r uniform
#   ("textbook_crt", p, q)                              key holder: y^p mod p^2, y^q mod q^2
ObfuscationSpec = tuple[Any, ...]


def native_available() -> bool:
    """Whether the C extension fedcrypto._native runs the kernels (else gmpy2 does)."""
    return native is not None


def _empty(count: int, limbs: int) -> LimbArray:
    return np.empty((count, limbs), dtype=np.uint64)


def _rows(a: NDArray[Any]) -> NDArray[Any]:
    """A C-contiguous view (or copy) that the extension can read as one buffer."""
    return np.ascontiguousarray(a)


def _crt_square(op: mpz, oq: mpz, p2: mpz, q2: mpz, p2_inv: mpz) -> mpz:
    """The residue mod p^2 q^2 that is op mod p^2 and oq mod q^2 (Garner)."""
    return op + p2 * ((oq - op) * p2_inv % q2)


def min_chunk(spec: ObfuscationSpec) -> int:
    """Smallest chunk worth shipping to a worker under `spec` (tables are big, r^n is slow)."""
    return TABLE_MIN_CHUNK if spec[0] in ("djn", "djn_crt") else 8


def randomness_bytes(spec: ObfuscationSpec) -> int:
    """Random bytes one obfuscator consumes under `spec`."""
    kind = spec[0]
    if kind in ("djn", "djn_crt"):
        return int(spec[-2]) // 8
    if kind == "textbook":
        n = int_from_bytes(spec[1])
        return (int(gmpy2.bit_length(n)) + 7) // 8 + 16
    if kind == "textbook_crt":
        n = int_from_bytes(spec[1]) * int_from_bytes(spec[2])
        return 2 * ((int(gmpy2.bit_length(n)) + 7) // 8) + 16
    raise ValueError(f"unknown obfuscation {kind!r}")


def _native_fixed_base(table: FixedBaseTable, rand: NDArray[np.uint8]) -> LimbArray:
    """table.base ^ a for each row a of `rand`, by the extension."""
    assert native is not None
    mod_b = int_to_bytes(table.modulus)
    limbs = limbs_for(table.modulus)
    out = _empty(rand.shape[0], limbs)
    native.fixed_base(
        out,
        limbs,
        table.to_array(),
        table.native_table() if native_simd else None,
        table.window,
        table.positions,
        _rows(rand),
        table.exponent_bytes,
        mod_b,
        native_simd,
    )
    return out


def _native_crt(op: LimbArray, oq: LimbArray, p: mpz, q: mpz) -> LimbArray:
    """Residues mod p^2 q^2 from residues mod p^2 and mod q^2 (Garner), by the extension."""
    assert native is not None
    p2, q2 = p * p, q * q
    limbs = limbs_for(p2 * q2)
    out = _empty(op.shape[0], limbs)
    native.crt(
        out,
        limbs,
        op,
        op.shape[1],
        oq,
        oq.shape[1],
        int_to_bytes(p2),
        int_to_bytes(q2),
        int_to_bytes(gmpy2.invert(p2, q2)),
    )
    return out


def _native_powmod(base: LimbArray, exponent: int | mpz, modulus: mpz) -> LimbArray:
    """Row-wise base^exponent mod modulus (one shared exponent), by the extension."""
    assert native is not None
    limbs = limbs_for(modulus)
    exp = np.frombuffer(int_to_bytes(exponent), dtype=np.uint8).reshape(1, -1)
    out = _empty(base.shape[0], limbs)
    native.powmod(
        out,
        limbs,
        _rows(base),
        base.shape[1],
        exp,
        exp.shape[1],
        int_to_bytes(modulus),
        native_simd,
    )
    return out


def _obfuscator_limbs(spec: ObfuscationSpec, rand: NDArray[np.uint8]) -> tuple[LimbArray, mpz]:
    """Obfuscators (limb rows mod n^2) for each row of random bytes, and n."""
    if native is None:
        obf, n = _obfuscators(spec, rand)
        return from_mpz(obf, limbs_for(n * n)), n
    kind = spec[0]
    if kind == "djn":
        return _native_fixed_base(spec[2], rand), int_from_bytes(spec[1])
    if kind == "djn_crt":
        p, q = int_from_bytes(spec[1]), int_from_bytes(spec[2])
        ops = _native_fixed_base(spec[3], rand)
        oqs = _native_fixed_base(spec[4], rand)
        return _native_crt(ops, oqs, p, q), p * q
    if kind == "textbook":
        n = int_from_bytes(spec[1])
        rs = _uniform_below(rand, n)
        return _native_powmod(from_mpz(rs, limbs_for(n)), n, n * n), n
    if kind == "textbook_crt":
        p, q = int_from_bytes(spec[1]), int_from_bytes(spec[2])
        p2, q2 = p * p, q * q
        yp, yq = _uniform_crt_halves(rand, p2, q2)
        ops = _native_powmod(from_mpz(yp, limbs_for(p2)), p, p2)
        oqs = _native_powmod(from_mpz(yq, limbs_for(q2)), q, q2)
        return _native_crt(ops, oqs, p, q), p * q
    raise ValueError(f"unknown obfuscation {kind!r}")


def _uniform_below(rand: NDArray[np.uint8], n: mpz) -> list[mpz]:
    """One r in [1, n) per row of random bytes (textbook obfuscation's r^n).

    Each row carries 128 more random bits than n: the reduction's bias is negligible.
    """
    return [mpz.from_bytes(row.tobytes(), "little") % (n - 1) + 1 for row in rand]


def _uniform_crt_halves(rand: NDArray[np.uint8], p2: mpz, q2: mpz) -> tuple[list[mpz], list[mpz]]:
    """One y in [1, p^2) from the first half of each row and one in [1, q^2) from the second."""
    half = rand.shape[1] // 2
    yp = [mpz.from_bytes(row[:half].tobytes(), "little") % (p2 - 1) + 1 for row in rand]
    yq = [mpz.from_bytes(row[half:].tobytes(), "little") % (q2 - 1) + 1 for row in rand]
    return yp, yq


def _obfuscators(spec: ObfuscationSpec, rand: NDArray[np.uint8]) -> tuple[list[mpz], mpz]:
    """Obfuscators for each row of random bytes, and n."""
    kind = spec[0]
    if kind == "djn":
        n = int_from_bytes(spec[1])
        table: FixedBaseTable = spec[2]
        return table.pow_many(rand), n
    if kind == "djn_crt":
        p, q = int_from_bytes(spec[1]), int_from_bytes(spec[2])
        p2, q2 = p * p, q * q
        tp: FixedBaseTable = spec[3]
        tq: FixedBaseTable = spec[4]
        ops, oqs = tp.pow_many(rand), tq.pow_many(rand)
        p2_inv = gmpy2.invert(p2, q2)
        return [_crt_square(a, b, p2, q2, p2_inv) for a, b in zip(ops, oqs, strict=True)], p * q
    if kind == "textbook":
        n = int_from_bytes(spec[1])
        n2 = n * n
        rs = _uniform_below(rand, n)
        return gmpy2.powmod_base_list(rs, n, n2), n
    if kind == "textbook_crt":
        p, q = int_from_bytes(spec[1]), int_from_bytes(spec[2])
        p2, q2 = p * p, q * q
        # The n-th residues mod p^2 are exactly the subgroup of order p - 1 (p < q, so
        # gcd(q, p - 1) = 1), i.e. the p-th powers: y^p for y uniform is r^n for r uniform,
        # at a 1024-bit exponent modulo p^2 instead of a 2048-bit one modulo n^2.
        yp, yq = _uniform_crt_halves(rand, p2, q2)
        ops = gmpy2.powmod_base_list(yp, p, p2)
        oqs = gmpy2.powmod_base_list(yq, q, q2)
        p2_inv = gmpy2.invert(p2, q2)
        return [_crt_square(a, b, p2, q2, p2_inv) for a, b in zip(ops, oqs, strict=True)], p * q
    raise ValueError(f"unknown obfuscation {kind!r}")


def k_obfuscators(spec: ObfuscationSpec, rand: NDArray[np.uint8]) -> LimbArray:
    """Fresh obfuscators (residues mod n^2) for a pool or for re-randomising ciphertexts."""
    return _obfuscator_limbs(spec, rand)[0]


def _apply(n: mpz, plains: list[mpz], obf: list[mpz]) -> list[mpz]:
    n2 = n * n
    out = []
    for m, r in zip(plains, obf, strict=True):
        c = r + n * (m * r % n)
        out.append(c - n2 if c >= n2 else c)
    return out


def k_encrypt(spec: ObfuscationSpec, plain: LimbArray, rand: NDArray[np.uint8]) -> LimbArray:
    """Ciphertexts (1 + m n) * obfuscator for plaintext residues m (rows of `plain`)."""
    if native is not None:
        obf_limbs, n = _obfuscator_limbs(spec, rand)
        return k_encrypt_with(int_to_bytes(n), plain, obf_limbs)
    obf, n = _obfuscators(spec, rand)
    return from_mpz(_apply(n, to_mpz(plain), obf), limbs_for(n * n))


def k_encrypt_with(n_b: bytes, plain: LimbArray, obf: LimbArray | None) -> LimbArray:
    """Ciphertexts from given obfuscators, or the deterministic 1 + m n when obf is None."""
    n = int_from_bytes(n_b)
    n2 = n * n
    if native is not None:
        limbs = limbs_for(n2)
        out = _empty(plain.shape[0], limbs)
        native.apply_plain(
            out, limbs, _rows(plain), plain.shape[1], None if obf is None else _rows(obf), n_b
        )
        return out
    plains = to_mpz(plain)
    if obf is None:
        return from_mpz([(1 + m * n) % n2 for m in plains], limbs_for(n2))
    return from_mpz(_apply(n, plains, to_mpz(obf)), limbs_for(n2))


def k_rerandomize(spec: ObfuscationSpec, c: LimbArray, rand: NDArray[np.uint8]) -> LimbArray:
    """Row-wise c * obfuscator mod n^2: same plaintexts, fresh randomness."""
    if native is not None:
        obf_limbs, n = _obfuscator_limbs(spec, rand)
        return k_mul(int_to_bytes(n * n), c, obf_limbs)
    obf, n = _obfuscators(spec, rand)
    n2 = n * n
    return from_mpz([x * r % n2 for x, r in zip(to_mpz(c), obf, strict=True)], c.shape[1])


def k_mul(n2_b: bytes, a: LimbArray, b: LimbArray) -> LimbArray:
    """Row-wise a * b mod n^2: the homomorphic sum of the plaintexts."""
    if native is not None:
        out = _empty(a.shape[0], a.shape[1])
        native.mulmod(out, _rows(a), _rows(b), n2_b, a.shape[1], native_simd)
        return out
    n2 = int_from_bytes(n2_b)
    out = [x * y % n2 for x, y in zip(to_mpz(a), to_mpz(b), strict=True)]
    return from_mpz(out, a.shape[1])


def k_add_plain(n_b: bytes, c: LimbArray, plain: LimbArray) -> LimbArray:
    """Row-wise c * (1 + m n) mod n^2 = Enc(x + m) for c = Enc(x), without a full product."""
    if native is not None:
        out = _empty(c.shape[0], c.shape[1])
        native.apply_plain(out, c.shape[1], _rows(plain), plain.shape[1], _rows(c), n_b)
        return out
    n = int_from_bytes(n_b)
    n2 = n * n
    out = []
    for x, m in zip(to_mpz(c), to_mpz(plain), strict=True):
        y = x + n * (m * x % n)
        out.append(y - n2 if y >= n2 else y)
    return from_mpz(out, c.shape[1])


def k_invert(n2_b: bytes, c: LimbArray) -> LimbArray:
    """Row-wise c^-1 mod n^2 (the encryption of the negated plaintext), batched."""
    if native is not None:
        out = _empty(c.shape[0], c.shape[1])
        try:
            native.invert(out, _rows(c), n2_b, c.shape[1])
        except ZeroDivisionError as exc:
            raise CiphertextError("a ciphertext is not invertible modulo n^2") from exc
        return out
    n2 = int_from_bytes(n2_b)
    try:
        return from_mpz(batch_invert(to_mpz(c), n2), c.shape[1])
    except ZeroDivisionError as exc:
        raise CiphertextError("a ciphertext is not invertible modulo n^2") from exc


def k_pow(
    n2_b: bytes, c: LimbArray, exps: NDArray[np.uint8], negate: NDArray[np.bool_]
) -> LimbArray:
    """Row-wise c^e mod n^2 (Enc(x * e)); rows flagged in `negate` are inverted afterwards.

    `exps` holds little-endian magnitudes: one row shared by all ciphertexts, or one per row.
    """
    if native is not None:
        return _native_pow(n2_b, c, exps, negate)
    n2 = int_from_bytes(n2_b)
    cs = to_mpz(c)
    if exps.shape[0] == 1:
        e = mpz.from_bytes(exps[0].tobytes(), "little")
        out = list(gmpy2.powmod_base_list(cs, e, n2))
    else:
        es = [mpz.from_bytes(row.tobytes(), "little") for row in exps]
        out = [gmpy2.powmod(x, e, n2) for x, e in zip(cs, es, strict=True)]
    if negate.shape[0] == 1:  # one flag shared by every row
        flip = list(range(len(out))) if bool(negate[0]) else []
    else:
        flip = np.flatnonzero(negate).tolist()
    if flip:
        try:
            inv = batch_invert([out[i] for i in flip], n2)
        except ZeroDivisionError as exc:
            raise CiphertextError("a ciphertext is not invertible modulo n^2") from exc
        for i, v in zip(flip, inv, strict=True):
            out[i] = v
    return from_mpz(out, c.shape[1])


def _native_pow(
    n2_b: bytes, c: LimbArray, exps: NDArray[np.uint8], negate: NDArray[np.bool_]
) -> LimbArray:
    assert native is not None
    limbs = c.shape[1]
    out = _empty(c.shape[0], limbs)
    native.powmod(out, limbs, _rows(c), limbs, _rows(exps), exps.shape[1], n2_b, native_simd)
    if negate.shape[0] == 1:  # one flag shared by every row
        flip = np.arange(out.shape[0]) if bool(negate[0]) else np.zeros(0, dtype=np.intp)
    else:
        flip = np.flatnonzero(negate)
    if len(flip):
        inv = _empty(len(flip), limbs)
        try:
            native.invert(inv, np.ascontiguousarray(out[flip]), n2_b, limbs)
        except ZeroDivisionError as exc:
            raise CiphertextError("a ciphertext is not invertible modulo n^2") from exc
        out[flip] = inv
    return out


def k_prod_segments(n2_b: bytes, c: LimbArray, lengths: NDArray[np.int64]) -> LimbArray:
    """Products of consecutive runs of rows (run lengths given): homomorphic partial sums."""
    if native is not None:
        out = _empty(len(lengths), c.shape[1])
        native.prod_segments(
            out, _rows(c), np.ascontiguousarray(lengths, dtype=np.int64), n2_b, c.shape[1]
        )
        return out
    n2 = int_from_bytes(n2_b)
    cs = to_mpz(c)
    out = []
    pos = 0
    for length in lengths.tolist():
        if length == 0:
            out.append(mpz(1))
            continue
        acc = cs[pos]
        for x in cs[pos + 1 : pos + length]:
            acc = acc * x % n2
        out.append(acc)
        pos += length
    return from_mpz(out, c.shape[1])


def k_multiexp(
    n2_b: bytes, bases: LimbArray, inverse_bases: LimbArray | None, exps: NDArray[np.int64]
) -> LimbArray:
    """For each column j of `exps` (m x k), prod_i bases[i]^exps[i, j] mod n^2.

    Rows of `inverse_bases` are used for negative exponents (zero rows where none is needed).
    """
    if native is not None:
        out = _empty(exps.shape[1], bases.shape[1])
        native.multiexp(
            out,
            bases.shape[1],
            _rows(bases),
            None if inverse_bases is None else _rows(inverse_bases),
            np.ascontiguousarray(exps, dtype=np.int64),
            n2_b,
            native_simd,
        )
        return out
    n2 = int_from_bytes(n2_b)
    bs = to_mpz(bases)
    inv: list[mpz | None]
    if inverse_bases is None:
        inv = [None] * len(bs)
    else:
        inv = [x if x else None for x in to_mpz(inverse_bases)]
    cols = np.ascontiguousarray(exps.T)
    out = [multi_exponentiate(bs, inv, col, n2) for col in cols]
    return from_mpz(out, bases.shape[1])


def k_decrypt(p_b: bytes, q_b: bytes, c: LimbArray) -> LimbArray:
    """Plaintext residues m in [0, n) by CRT decryption (as phe: hp, hq precomputed).

    m_p = L_p(c^(p-1) mod p^2) * hp mod p with L_p(x) = (x - 1) / p and
    hp = L_p(g^(p-1) mod p^2)^-1 mod p; likewise for q; then m = CRT(m_p, m_q).
    """
    p, q = int_from_bytes(p_b), int_from_bytes(q_b)
    p2, q2, n = p * p, q * q, p * q
    g = n + 1
    hp = gmpy2.invert((gmpy2.powmod(g, p - 1, p2) - 1) // p, p)
    hq = gmpy2.invert((gmpy2.powmod(g, q - 1, q2) - 1) // q, q)
    p_inv = gmpy2.invert(p, q)
    if native is not None:
        limbs = limbs_for(n)
        out = _empty(c.shape[0], limbs)
        native.decrypt(
            out,
            limbs,
            _rows(c),
            c.shape[1],
            p_b,
            q_b,
            int_to_bytes(hp),
            int_to_bytes(hq),
            int_to_bytes(p_inv),
            native_simd,
        )
        return out
    cs = to_mpz(c)
    xp = gmpy2.powmod_base_list([x % p2 for x in cs], p - 1, p2)
    xq = gmpy2.powmod_base_list([x % q2 for x in cs], q - 1, q2)
    out = []
    for a, b in zip(xp, xq, strict=True):
        mp = (a - 1) // p * hp % p
        mq = (b - 1) // q * hq % q
        out.append(mp + p * ((mq - mp) * p_inv % q))
    return from_mpz(out, limbs_for(n))


def k_validate(n_b: bytes, c: LimbArray, offset: int = 0) -> None:
    """Raise CiphertextError unless every row is in (0, n^2) and coprime to n.

    Coprimality of all rows at once: gcd(prod c_i mod n, n) == 1 iff every c_i is a unit; only
    when that fails are rows checked one by one to name the culprit.
    """
    n = int_from_bytes(n_b)
    n2 = n * n
    cs = to_mpz(c)
    acc = mpz(1)
    for i, x in enumerate(cs):
        if not 0 < x < n2:
            raise CiphertextError(f"ciphertext {offset + i} is outside (0, n^2)")
        acc = acc * (x % n) % n
    if gmpy2.gcd(acc, n) != 1:
        for i, x in enumerate(cs):
            if gmpy2.gcd(x, n) != 1:
                raise CiphertextError(f"ciphertext {offset + i} is not coprime to n")
