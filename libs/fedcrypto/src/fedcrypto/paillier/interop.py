"""Conversion between EncryptedVector and phe 1.5 EncryptedNumber lists.

Both libraries use g = n + 1, base-16 exponents and negatives as n - |x|, so a ciphertext moves
unchanged: phe's private key decrypts fedcrypto ciphertexts and fedcrypto decrypts phe's. phe
numbers carry one exponent each; from_phe aligns them to the lowest (phe's
decrease_exponent_to: the ciphertext raised to 16^(e - e_min)).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction
from typing import TYPE_CHECKING

import gmpy2
from gmpy2 import mpz

from .encoding import BASE
from .errors import KeyMismatchError, PaillierOverflowError
from .keys import PublicKey
from .limbs import from_mpz, to_mpz
from .vector import EncryptedVector

if TYPE_CHECKING:
    import phe


def to_phe(
    vector: EncryptedVector, public_key: phe.PaillierPublicKey | None = None
) -> list[phe.EncryptedNumber]:
    """The elements (C order) as phe EncryptedNumbers sharing one phe public key."""
    import phe

    pk = vector.public_key.to_phe() if public_key is None else public_key
    if pk.n != vector.public_key.n:
        raise KeyMismatchError("the phe key does not match the vector's key")
    return [phe.EncryptedNumber(pk, int(c), vector.exponent) for c in to_mpz(vector.data)]


def from_phe(
    numbers: Iterable[phe.EncryptedNumber],
    *,
    public_key: PublicKey | None = None,
    shape: tuple[int, ...] | None = None,
    value_bound: float | None = None,
    insecure_allow_short: bool = False,
) -> EncryptedVector:
    """An EncryptedVector from phe EncryptedNumbers (all under one key).

    phe does not record magnitudes, so `value_bound` (a bound on |value| the caller knows) is
    what lets the vector be used safely:
    - numbers with different exponents are aligned to the lowest one, which multiplies the
      mantissas of the numbers with larger exponents by 16^d and could wrap around n; this is
      only done when value_bound proves it cannot (else PaillierOverflowError);
    - without value_bound the vector's bound is max_int: it decrypts, but any operation that
      could grow it is refused as a potential overflow.
    """
    nums = list(numbers)
    if public_key is None:
        if not nums:
            raise ValueError("an empty list needs public_key")
        public_key = PublicKey.from_phe(
            nums[0].public_key, insecure_allow_short=insecure_allow_short
        )
    n = public_key.n
    if any(num.public_key.n != n for num in nums):
        raise KeyMismatchError("the phe numbers were encrypted under different keys")
    exponent = min((num.exponent for num in nums), default=0)
    mixed = any(num.exponent != exponent for num in nums)
    if value_bound is None:
        if mixed:
            raise PaillierOverflowError(
                "aligning phe numbers with different exponents could overflow; pass value_bound"
            )
        bound = public_key.max_int
    else:
        if not (value_bound >= 0 and math.isfinite(value_bound)):
            raise ValueError("value_bound must be a non-negative finite number")
        scaled = Fraction(value_bound) * Fraction(BASE) ** (-exponent)
        bound = math.ceil(scaled) + 1
        if bound > public_key.max_int:
            raise PaillierOverflowError(
                f"values up to {value_bound} at exponent {exponent} exceed max_int"
            )
    n2 = public_key.nsquare
    cts: list[mpz] = []
    for num in nums:
        c = mpz(num.ciphertext(be_secure=False))
        if num.exponent != exponent:
            c = gmpy2.powmod(c, BASE ** (num.exponent - exponent), n2)
        cts.append(c)
    if any(not 0 < c < n2 for c in cts):
        raise ValueError("a phe ciphertext is outside (0, n^2)")
    shape = (len(nums),) if shape is None else tuple(shape)
    return EncryptedVector.from_limbs(
        public_key, from_mpz(cts, public_key.limbs), exponent, shape, bound=bound
    )
