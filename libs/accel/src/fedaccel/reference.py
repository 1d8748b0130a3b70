"""Numpy reference of the CUDA kernels: the same algorithms, vectorised over the batch.

Numbers are ``(batch, L)`` uint64 arrays holding 32-bit words (limb 0 least significant), so
that a 32x32-bit product plus carries fits a uint64. Every function mirrors a kernel in
kernels/fa_paillier.cu: the same Montgomery radix R = 2^(32 L), the same CIOS schedule (outer
loop over the limbs of a, one quotient word q_i per iteration), the same windows (fixed window
of POW_WINDOW bits, fixed-base tables, bucket multi-exponentiation with MULTIEXP_WINDOW-bit
digits), the same product tree. The only difference is carry handling: inside a Montgomery
product the reference keeps the accumulator in redundant form (words may exceed 32 bits) and
normalises once at the end. The integer the accumulator represents after each outer
iteration is the same as in the kernel, because q_i only depends on that integer mod 2^32.

This is a correctness tool, exact and slow (a few milliseconds per Montgomery product per
batch); fedcrypto's gmpy2 path is the fast CPU path.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedaccel.montgomery import Modulus

U64 = NDArray[np.uint64]

POW_WINDOW = 4
"""Fixed window of modular exponentiation; equals FA_POW_WINDOW in the kernels."""

MULTIEXP_WINDOW = 4
"""Digit width of the bucket multi-exponentiation; equals FA_MULTIEXP_WINDOW."""

_MASK = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)


def _carry(t: U64, keep_carry_out: bool = True) -> U64:
    """Normalise redundant words in place so each holds < 2^32.

    Vectorised carry steps; a carry chain of length k takes k steps (usually two or three).
    With ``keep_carry_out`` a carry out of the top word is an error, otherwise it is dropped
    (arithmetic mod 2^(32 width)).
    """
    while True:
        c = t >> _SHIFT
        if not c.any():
            return t
        if keep_carry_out and c[:, -1].any():
            raise OverflowError("carry out of the top word")
        t &= _MASK
        t[:, 1:] += c[:, :-1]


def _borrow_normalise(d: NDArray[np.int64]) -> NDArray[np.int64]:
    """Normalise signed word differences in place: words 0..k-2 end in [0, 2^32), the top word
    keeps the sign (negative when the represented number is negative)."""
    while True:
        c = d[:, :-1] >> 32  # arithmetic shift: floor division by 2^32
        if not c.any():
            return d
        d[:, :-1] -= c * (1 << 32)
        d[:, 1:] += c


def sub_if_geq(t: U64, m: U64) -> U64:
    """t - m if t >= m else t, for t of L + 1 normalised words and m of L words."""
    width = m.shape[-1]
    d = t.astype(np.int64)
    d[:, :width] -= m.astype(np.int64)
    _borrow_normalise(d)
    geq = d[:, width] >= 0
    out = np.where(geq[:, None], d[:, :width].astype(np.uint64), t[:, :width])
    return np.ascontiguousarray(out)


def mont_mul(a: U64, b: U64, md: Modulus) -> U64:
    """a b R^-1 mod m (CIOS). a, b: (batch or 1, L) words with a b < m R."""
    width = md.words
    rows = max(a.shape[0], b.shape[0])
    m = md.limbs.astype(np.uint64)
    minv = np.uint64(md.minv)
    t = np.zeros((rows, 2 * width + 2), dtype=np.uint64)
    for i in range(width):
        p = a[:, i : i + 1] * b
        t[:, i : i + width] += p & _MASK
        t[:, i + 1 : i + width + 1] += p >> _SHIFT
        q = (t[:, i] * minv) & _MASK  # depends on t[:, i] mod 2^32 only
        p = q[:, None] * m
        t[:, i : i + width] += p & _MASK
        t[:, i + 1 : i + width + 1] += p >> _SHIFT
        t[:, i + 1] += t[:, i] >> _SHIFT  # t[:, i] is 0 mod 2^32 now
    res = _carry(t[:, width:].copy())
    return sub_if_geq(res[:, : width + 1], m)


def redc_wide(wide: U64, md: Modulus) -> U64:
    """T R^-1 mod m for T of 2L words, T < m R (Montgomery reduction)."""
    width = md.words
    m = md.limbs.astype(np.uint64)
    minv = np.uint64(md.minv)
    t = np.zeros((wide.shape[0], 2 * width + 2), dtype=np.uint64)
    t[:, : 2 * width] = wide
    for i in range(width):
        q = (t[:, i] * minv) & _MASK
        p = q[:, None] * m
        t[:, i : i + width] += p & _MASK
        t[:, i + 1 : i + width + 1] += p >> _SHIFT
        t[:, i + 1] += t[:, i] >> _SHIFT
    res = _carry(t[:, width:].copy())
    return sub_if_geq(res[:, : width + 1], m)


def words(x: int, width: int) -> U64:
    """One int as a (1, width) word row."""
    return np.array([[(x >> (32 * j)) & 0xFFFFFFFF for j in range(width)]], dtype=np.uint64)


def to_mont(a: U64, md: Modulus) -> U64:
    return mont_mul(a, words(md.r2, md.words), md)


def from_mont(a: U64, md: Modulus) -> U64:
    return mont_mul(a, words(1, md.words), md)


def _digit(e: NDArray[np.uint32] | U64, pos: int, w: int) -> U64:
    """Bits [pos, pos + w) of each row of little-endian 32-bit exponent words."""
    ewords = e.shape[1]
    wi, sh = pos >> 5, pos & 31
    v = e[:, wi].astype(np.uint64) if wi < ewords else np.zeros(e.shape[0], np.uint64)
    if wi + 1 < ewords:
        v = v | (e[:, wi + 1].astype(np.uint64) << _SHIFT)
    return (v >> np.uint64(sh)) & np.uint64((1 << w) - 1)


def bit_length(e: NDArray[np.uint32]) -> int:
    """Largest bit length over the rows of 32-bit exponent words."""
    nz = np.flatnonzero(e.any(axis=0))
    if nz.size == 0:
        return 0
    top = int(nz[-1])
    return 32 * top + int(e[:, top].max()).bit_length()


def pow_mont(x: U64, e: NDArray[np.uint32], md: Modulus) -> U64:
    """x^e in the Montgomery domain, fixed POW_WINDOW-bit windows (fa_pow_mont).

    e is (batch or 1, ewords). Windows are scanned from the top window of the largest
    exponent; rows with shorter exponents square R mod m meanwhile, which stays R mod m.
    """
    rows = x.shape[0]
    w = POW_WINDOW
    one = np.broadcast_to(words(md.one, md.words), x.shape)
    tab = np.empty((1 << w, rows, md.words), dtype=np.uint64)
    tab[0] = one
    tab[1] = x
    for k in range(2, 1 << w):
        tab[k] = mont_mul(tab[k - 1], x, md)
    nwin = -(-bit_length(e) // w)
    idx = np.arange(rows)
    acc = np.array(one)
    for win in range(nwin - 1, -1, -1):
        d = np.broadcast_to(_digit(e, win * w, w), (rows,)).astype(np.intp)
        if win == nwin - 1:
            acc = tab[d, idx]
            continue
        for _ in range(w):
            acc = mont_mul(acc, acc, md)
        acc = mont_mul(acc, tab[d, idx], md)
    return acc


def fixed_base_mont(table: NDArray[np.uint32], window: int, e: NDArray[np.uint32],
                    rows: int, md: Modulus) -> U64:
    """prod_i table[i][digit_i(e)] in the Montgomery domain (fa_fixed_base_mont)."""
    acc: U64 | None = None
    for i in range(table.shape[0]):
        d = np.broadcast_to(_digit(e, i * window, window), (rows,)).astype(np.intp)
        if not d.any():
            continue  # every row multiplies by table[i][0] = R mod m: no change
        entry = table[i][d].astype(np.uint64)
        acc = entry if acc is None else mont_mul(acc, entry, md)
    if acc is None:
        return np.repeat(words(md.one, md.words), rows, axis=0)
    return acc


def mul_plain(a: U64, b: U64, nwords: int, width: int) -> U64:
    """a b truncated to ``width`` words, a and b read over their low ``nwords`` words."""
    t = np.zeros((max(a.shape[0], b.shape[0]), width + nwords + 1), dtype=np.uint64)
    for i in range(nwords):
        p = a[:, i : i + 1] * b[:, :nwords]
        t[:, i : i + nwords] += p & _MASK
        t[:, i + 1 : i + nwords + 1] += p >> _SHIFT
    _carry(t)
    return np.ascontiguousarray(t[:, :width])


def add_small(a: U64, k: int) -> U64:
    """a + k mod 2^(32 width), 0 <= k < 2^32."""
    t = a.copy()
    t[:, 0] += np.uint64(k)
    return _carry(t, keep_carry_out=False)


def sub_one(a: U64) -> U64:
    """a - 1 for a >= 1."""
    d = a.astype(np.int64)
    d[:, 0] -= 1
    _borrow_normalise(d)
    return d.astype(np.uint64)


# --- kernel mirrors -------------------------------------------------------------------------


def mulmod(a: U64, b: U64, md: Modulus) -> U64:
    """fa_mulmod: a b mod m for a, b < m."""
    return mont_mul(mont_mul(a, b, md), words(md.r2, md.words), md)


def powmod(base: U64, e: NDArray[np.uint32], md: Modulus, in_mont: bool = False,
           out_mont: bool = False) -> U64:
    """fa_powmod."""
    x = base if in_mont else to_mont(base, md)
    x = pow_mont(x, e, md)
    return x if out_mont else from_mont(x, md)


def fixed_base_pow(table: NDArray[np.uint32], window: int, e: NDArray[np.uint32], rows: int,
                   md: Modulus, out_mont: bool = False) -> U64:
    """fa_fixed_base_pow."""
    x = fixed_base_mont(table, window, e, rows, md)
    return x if out_mont else from_mont(x, md)


def encrypt(msg: U64, n_words: U64, nwords: int, obf: U64, obf_mont: bool,
            md: Modulus) -> U64:
    """fa_encrypt: (1 + msg n) obf mod n^2."""
    x = add_small(mul_plain(msg, n_words, nwords, md.words), 1)
    x = mont_mul(x, obf, md)
    return x if obf_mont else mont_mul(x, words(md.r2, md.words), md)


def encrypt_fixed_base(msg: U64, n_words: U64, nwords: int, table: NDArray[np.uint32],
                       window: int, e: NDArray[np.uint32], md: Modulus) -> U64:
    """fa_encrypt_fixed_base."""
    y = fixed_base_mont(table, window, e, msg.shape[0], md)
    x = add_small(mul_plain(msg, n_words, nwords, md.words), 1)
    return mont_mul(x, y, md)


def multiexp_partial(bases: U64, exps: NDArray[np.uint64], chunk: int, nwin: int,
                     md: Modulus) -> U64:
    """fa_multiexp_partial: row t = j * nchunks + c is prod_{i in chunk c} bases[i]^exps[i, j].

    bases (k, L) in Montgomery form, exps (k, f) uint64; result in Montgomery form.
    """
    k, f = exps.shape
    w = MULTIEXP_WINDOW
    nb = (1 << w) - 1
    nchunks = -(-k // chunk)
    threads = f * nchunks
    tj = np.arange(threads) // nchunks
    tc = np.arange(threads) % nchunks
    one = words(md.one, md.words)
    acc = np.repeat(one, threads, axis=0)
    tidx = np.arange(threads)
    for win in range(nwin - 1, -1, -1):
        for _ in range(w):
            acc = mont_mul(acc, acc, md)
        buckets = np.repeat(one[None], nb, axis=0).repeat(threads, axis=1)
        shift = np.uint64(win * w)
        for off in range(chunk):
            i = tc * chunk + off
            valid = i < k
            d = np.zeros(threads, dtype=np.intp)
            d[valid] = ((exps[i[valid], tj[valid]] >> shift) & np.uint64(nb)).astype(np.intp)
            sel = np.flatnonzero(d)
            if sel.size == 0:
                continue
            bsel = d[sel] - 1
            buckets[bsel, tidx[sel]] = mont_mul(buckets[bsel, tidx[sel]],
                                                bases[i[sel]].astype(np.uint64), md)
        s_run = np.repeat(one, threads, axis=0)
        t_run = np.repeat(one, threads, axis=0)
        for d_val in range(nb, 0, -1):
            s_run = mont_mul(s_run, buckets[d_val - 1], md)
            t_run = mont_mul(t_run, s_run, md)
        acc = mont_mul(acc, t_run, md)
    return acc


def prod_reduce(x: U64, groups: int, width: int, md: Modulus) -> U64:
    """fa_prod_reduce: one level of the product tree over (groups, width) rows."""
    half = (width + 1) // 2
    v = x.reshape(groups, width, md.words)
    left = v[:, 0 : 2 * (width // 2) : 2].reshape(-1, md.words)
    right = v[:, 1 : 2 * (width // 2) : 2].reshape(-1, md.words)
    out = np.empty((groups, half, md.words), dtype=np.uint64)
    if width // 2:
        out[:, : width // 2] = mont_mul(left, right, md).reshape(groups, width // 2, md.words)
    if width % 2:
        out[:, half - 1] = v[:, width - 1]
    return out.reshape(groups * half, md.words)


def decrypt_half(c: U64, square: Modulus, exponent: NDArray[np.uint32], prime_mod: Modulus,
                 pinv: U64, hmont: U64) -> U64:
    """fa_decrypt_half: L_p(c^(p-1) mod p^2) h_p mod p for each row of c (<= 2L words)."""
    width = square.words
    wide = np.zeros((c.shape[0], 2 * width), dtype=np.uint64)
    take = min(c.shape[1], 2 * width)
    wide[:, :take] = c[:, :take]
    x = redc_wide(wide, square)
    x = mont_mul(x, words(square.r3, width), square)
    x = pow_mont(x, exponent, square)
    x = from_mont(x, square)
    x = sub_one(x)
    half = prime_mod.words
    k = mul_plain(x[:, :half], pinv, half, half)
    return mont_mul(k, hmont, prime_mod)


def pack(slots: NDArray[np.uint64], slot_bits: int, width: int) -> U64:
    """fa_pack: row = sum_s slots[row, s] 2^(slot_bits s) as ``width`` words."""
    rows, k = slots.shape
    out = np.zeros((rows, width + 3), dtype=np.uint64)
    halves = (slots & _MASK, slots >> _SHIFT)
    for s in range(k):
        for h in (0, 1):
            bit = s * slot_bits + 32 * h
            wi, sh = bit >> 5, bit & 31
            if wi >= width:
                continue
            shifted = halves[h][:, s] << np.uint64(sh)
            out[:, wi] |= shifted & _MASK
            out[:, wi + 1] |= shifted >> _SHIFT
    return np.ascontiguousarray(out[:, :width])


def unpack(packed: U64, k: int, slot_bits: int) -> NDArray[np.uint64]:
    """fa_unpack: the k slot_bits-wide fields of each row, as uint64."""
    rows, width = packed.shape
    x = np.zeros((rows, width + 3), dtype=np.uint64)
    x[:, :width] = packed
    out = np.empty((rows, k), dtype=np.uint64)
    mask = np.uint64((1 << slot_bits) - 1) if slot_bits < 64 else np.uint64(2**64 - 1)
    for s in range(k):
        pos = s * slot_bits
        wi, sh = pos >> 5, pos & 31
        if wi >= width:
            out[:, s] = 0
            continue
        v = (x[:, wi] | (x[:, wi + 1] << _SHIFT)) >> np.uint64(sh)
        if sh:
            v |= x[:, wi + 2] << np.uint64(64 - sh)
        out[:, s] = v & mask
    return out
