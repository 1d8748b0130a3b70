"""Fixed-base exponentiation tables (for DJN obfuscators hs^a, a of about n/2 bits).

table[i][j] = g^(j * 2^(window * i)) * R mod m for i < nwin, j < 2^window, in Montgomery form
with the kernels' R. Then g^e = prod_i table[i][digit_i(e)]: nwin multiplications and no
squaring. The table is built once per key on the host and kept resident on the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gmpy2
import numpy as np
from numpy.typing import NDArray

from fedaccel.limbs import words_for
from fedaccel.montgomery import kernel_words, modulus


@dataclass(frozen=True)
class FixedBaseTable:
    """Precomputed powers of ``base`` modulo ``modulus`` for exponents below 2^exp_bits."""

    base: int
    modulus: int
    words: int
    window: int
    nwin: int
    data: NDArray[np.uint32] = field(repr=False, compare=False)
    """(nwin, 2^window, words) uint32, Montgomery form."""

    @property
    def exp_bits(self) -> int:
        return self.window * self.nwin

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)


def build_fixed_base_table(
    base: int, mod: int, exp_bits: int, window: int = 8, words: int | None = None
) -> FixedBaseTable:
    """Table for ``base^e mod mod`` with ``0 <= e < 2^exp_bits``.

    ``words`` defaults to the kernel limb count for ``mod`` so one table serves both the numpy
    reference and the GPU. Memory: ceil(exp_bits / window) * 2^window * 4 * words bytes
    (16 MiB for a 2048-bit key, 1024-bit exponents, window 8).
    """
    if not 1 <= window <= 16:
        raise ValueError("window must be between 1 and 16 bits")
    if exp_bits < 1:
        raise ValueError("exp_bits must be positive")
    w = kernel_words(words_for(mod)) if words is None else words
    md = modulus(mod, w)
    nwin = -(-exp_bits // window)
    m = gmpy2.mpz(mod)
    r = gmpy2.mpz(md.one)
    width = 4 * w
    chunks: list[bytes] = []
    step = gmpy2.mpz(base) % m  # base^(2^(window i)) for the current i
    for _ in range(nwin):
        entry = r  # step^0 in Montgomery form
        for _j in range(1 << window):
            chunks.append(int(entry).to_bytes(width, "little"))
            entry = gmpy2.f_mod(entry * step, m)
        step = gmpy2.powmod(step, 1 << window, m)
    data = np.frombuffer(b"".join(chunks), dtype="<u4").reshape(nwin, 1 << window, w).copy()
    return FixedBaseTable(base=base, modulus=mod, words=w, window=window, nwin=nwin, data=data)
