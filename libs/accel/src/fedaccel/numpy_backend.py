"""NumpyBackend: the exact CPU reference of the GPU kernels (fedaccel.reference).

Runs the kernels' algorithms step for step in numpy; used to check CupyBackend bit for bit
and wherever no GPU is present and exactness matters more than speed. It is slow: the fast
CPU path is fedcrypto's gmpy2 loop.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedaccel import reference as ref
from fedaccel.backend import (
    MULTIEXP_CHUNK,
    Backend,
    Capabilities,
    Exponents,
    check_pack_args,
    exponents,
    fixed_base_square,
    kernel_modulus,
    message_operand,
    multiexp_exponents,
    operand,
    packed_words,
)
from fedaccel.crt import CrtKey
from fedaccel.limbs import (
    Limbs,
    from_limbs,
    int_to_words,
    limbs_for,
    to_limbs,
    words_for,
    words_to_limbs,
)
from fedaccel.tables import FixedBaseTable


def _u64(w: NDArray[np.uint32]) -> ref.U64:
    return w.astype(np.uint64)


class NumpyBackend(Backend):
    """Exact, vectorised over the batch, CPU only."""

    capabilities = Capabilities(name="numpy-reference", is_gpu=False)

    def mulmod(self, a: Limbs, b: Limbs, mod: int) -> Limbs:
        md = kernel_modulus(mod)
        x = operand(a, md, "a")
        y = operand(b, md, "b", rows=x.shape[0])
        return words_to_limbs(ref.mulmod(_u64(x), _u64(y), md), limbs_for(mod))

    def powmod(self, base: Limbs, exps: Exponents, mod: int) -> Limbs:
        md = kernel_modulus(mod)
        x = operand(base, md, "base")
        e, _ = exponents(exps, x.shape[0])
        return words_to_limbs(ref.powmod(_u64(x), e, md), limbs_for(mod))

    def fixed_base_pow(self, table: FixedBaseTable, exps: Exponents, count: int) -> Limbs:
        md = kernel_modulus(table.modulus)
        e, _ = exponents(exps, count, max_bits=table.exp_bits)
        out = ref.fixed_base_pow(table.data, table.window, e, count, md)
        return words_to_limbs(out, limbs_for(table.modulus))

    def multiexp(self, bases: Limbs, exps: NDArray[np.uint64], mod: int) -> Limbs:
        md = kernel_modulus(mod)
        x = operand(bases, md, "bases")
        e, nwin = multiexp_exponents(exps, x.shape[0])
        k, f = e.shape
        chunk = MULTIEXP_CHUNK
        part = ref.multiexp_partial(ref.to_mont(_u64(x), md), e, chunk, nwin, md)
        width = -(-k // chunk)
        while width > 1:
            part = ref.prod_reduce(part, f, width, md)
            width = (width + 1) // 2
        return words_to_limbs(ref.from_mont(part, md), limbs_for(mod))

    def encrypt(self, m: Limbs, obf: Limbs, n: int) -> Limbs:
        nsq = n * n
        md = kernel_modulus(nsq)
        msg = message_operand(m, n, md)
        r = operand(obf, md, "obf", rows=msg.shape[0])
        out = ref.encrypt(_u64(msg), _u64(int_to_words(n, md.words)[None]), words_for(n),
                          _u64(r), False, md)
        return words_to_limbs(out, limbs_for(nsq))

    def encrypt_fixed_base(self, m: Limbs, table: FixedBaseTable, exps: Exponents,
                           n: int) -> Limbs:
        nsq = fixed_base_square(table, n)
        md = kernel_modulus(nsq)
        msg = message_operand(m, n, md)
        e, _ = exponents(exps, msg.shape[0], max_bits=table.exp_bits)
        out = ref.encrypt_fixed_base(_u64(msg), _u64(int_to_words(n, md.words)[None]),
                                     words_for(n), table.data, table.window, e, md)
        return words_to_limbs(out, limbs_for(nsq))

    def decrypt_crt(self, c: Limbs, key: CrtKey) -> Limbs:
        nsq = key.n * key.n
        cw = operand(c, kernel_modulus(nsq), "c")
        halves = []
        for h in key.halves:
            hw = h.prime_mod.words
            e, _ = exponents(h.exponent, 1)
            half = ref.decrypt_half(
                _u64(cw), h.square, e, h.prime_mod,
                _u64(int_to_words(h.pinv, hw)[None]), _u64(int_to_words(h.hmont, hw)[None]),
            )
            halves.append(from_limbs(half.astype(np.uint32)))
        return to_limbs(key.combine(halves[0], halves[1]), limbs_for(key.n))

    def pack(self, slots: NDArray[np.uint64], slot_bits: int, limbs: int) -> Limbs:
        s = check_pack_args(slots, slot_bits, limbs)
        return words_to_limbs(ref.pack(s, slot_bits, 2 * limbs), limbs)

    def unpack(self, packed: Limbs, slot_bits: int, slots: int) -> NDArray[np.uint64]:
        return ref.unpack(_u64(packed_words(packed, slot_bits)), slots, slot_bits)
