"""Constants of Paillier CRT decryption (g = n + 1), as the batch kernels need them.

m_p = L_p(c^(p-1) mod p^2) * h_p mod p with L_p(u) = (u - 1) / p and
h_p = L_p(g^(p-1) mod p^2)^-1 mod p; the same for q; then
m = m_p + ((m_q - m_p) * p^-1 mod q) * p (recombined on the host). This is the phe /
fedcrypto decryption, so plaintexts are identical.

Each half works with p^2 in ``words`` 32-bit words (a kernel size) and with p in
``words // 2`` words, where the division (u - 1) / p is exact and done as a product with
p^-1 mod 2^(16 words).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedaccel.limbs import words_for
from fedaccel.montgomery import Modulus, kernel_words, modulus


@dataclass(frozen=True)
class CrtHalf:
    """Everything one prime's half of the decryption needs."""

    prime: int
    square: Modulus
    """p^2 in ``words`` words."""
    prime_mod: Modulus
    """p in ``words // 2`` words."""
    h: int
    pinv: int
    """p^-1 mod 2^(32 * words // 2): exact division by p."""
    hmont: int
    """h * 2^(32 * words // 2) mod p, so one Montgomery product gives k * h mod p."""

    @property
    def exponent(self) -> int:
        return self.prime - 1


@dataclass(frozen=True)
class CrtKey:
    """Private-key constants for batch CRT decryption."""

    n: int
    p: int
    q: int
    p_inv_q: int
    halves: tuple[CrtHalf, CrtHalf]

    @property
    def words(self) -> int:
        return self.halves[0].square.words

    def combine(self, mp: Sequence[int], mq: Sequence[int]) -> list[int]:
        """CRT recombination of the two halves (host side)."""
        p, q, u = self.p, self.q, self.p_inv_q
        return [a + (((b - a) * u) % q) * p for a, b in zip(mp, mq, strict=True)]


def _half(prime: int, n: int, words: int) -> CrtHalf:
    sq = prime * prime
    half_words = words // 2
    g_part = pow(n + 1, prime - 1, sq)
    h = pow((g_part - 1) // prime, -1, prime)
    return CrtHalf(
        prime=prime,
        square=modulus(sq, words),
        prime_mod=modulus(prime, half_words),
        h=h,
        pinv=pow(prime, -1, 1 << (32 * half_words)),
        hmont=(h << (32 * half_words)) % prime,
    )


def crt_key(p: int, q: int) -> CrtKey:
    """Batch decryption constants for the key with primes p != q (both odd)."""
    if p == q or p % 2 == 0 or q % 2 == 0:
        raise ValueError("p and q must be distinct odd primes")
    n = p * q
    words = kernel_words(max(words_for(p * p), words_for(q * q)))
    return CrtKey(
        n=n, p=p, q=q, p_inv_q=pow(p, -1, q), halves=(_half(p, n, words), _half(q, n, words))
    )
