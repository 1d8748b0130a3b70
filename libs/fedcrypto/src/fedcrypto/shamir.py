"""Shamir t-of-n secret sharing over the prime field GF(2^256 + 297).

Used by secure aggregation to share each client's 32-byte mask key and self-mask
seed. The field is the smallest prime field larger than 2^256, so every 32-byte
string is a field element and a share's y value fits in 33 bytes.

A secret s is the constant term of a random polynomial f of degree t - 1; the share
for evaluation point x (a nonzero field element, here a client id) is (x, f(x)).
Any t shares determine s by Lagrange interpolation at 0; t - 1 or fewer shares are
independent of s. Interpolation cannot notice that too few shares were given (any
t - 1 points fit some polynomial of degree t - 1), so `combine` takes the threshold
and refuses fewer shares; with more than t shares it checks that all of them lie on
one polynomial of degree t - 1, which catches corrupted shares (without naming the
bad one).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "PRIME",
    "SHARE_VALUE_SIZE",
    "InconsistentShares",
    "NotEnoughShares",
    "ShamirError",
    "Share",
    "combine",
    "combine_bytes",
    "split",
    "split_bytes",
]

PRIME = 2**256 + 297
SHARE_VALUE_SIZE = 33  # bytes for a y value: PRIME < 2^264
SECRET_BYTES = 32


class ShamirError(ValueError):
    """Bad sharing parameters or shares."""


class NotEnoughShares(ShamirError):
    """Fewer shares than the threshold: the secret is undetermined."""


class InconsistentShares(ShamirError):
    """More than `threshold` shares were given and they do not lie on one polynomial."""


@dataclass(frozen=True, slots=True)
class Share:
    x: int
    y: int

    def __post_init__(self) -> None:
        if not 0 < self.x < PRIME:
            raise ShamirError(f"share x must be in [1, PRIME), got {self.x}")
        if not 0 <= self.y < PRIME:
            raise ShamirError("share y is not a field element")

    def y_bytes(self) -> bytes:
        return self.y.to_bytes(SHARE_VALUE_SIZE, "big")

    @classmethod
    def from_y_bytes(cls, x: int, data: bytes) -> Share:
        if len(data) != SHARE_VALUE_SIZE:
            raise ShamirError(f"share value must be {SHARE_VALUE_SIZE} bytes, got {len(data)}")
        return cls(x, int.from_bytes(data, "big"))


def _check_threshold(threshold: int, count: int) -> None:
    if threshold < 1:
        raise ShamirError(f"threshold must be at least 1, got {threshold}")
    if threshold > count:
        raise ShamirError(f"threshold {threshold} exceeds the number of shares {count}")


def split(secret: int, threshold: int, xs: Sequence[int]) -> list[Share]:
    """Shares of `secret` at the distinct nonzero points `xs`; any `threshold` recover it."""
    if not 0 <= secret < PRIME:
        raise ShamirError("secret is not a field element")
    points = list(xs)
    _check_threshold(threshold, len(points))
    if len(set(points)) != len(points):
        raise ShamirError("evaluation points must be distinct")
    for x in points:
        if not 0 < x < PRIME:
            raise ShamirError(f"evaluation point must be in [1, PRIME), got {x}")
    coefficients = [secret] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in points:
        y = 0
        for c in reversed(coefficients):  # Horner
            y = (y * x + c) % PRIME
        shares.append(Share(x, y))
    return shares


def _interpolate(shares: Sequence[Share], at: int) -> int:
    """f(at) for the unique polynomial of degree < len(shares) through `shares`."""
    total = 0
    for i, si in enumerate(shares):
        numerator, denominator = 1, 1
        for j, sj in enumerate(shares):
            if i != j:
                numerator = numerator * (at - sj.x) % PRIME
                denominator = denominator * (si.x - sj.x) % PRIME
        total = (total + si.y * numerator * pow(denominator, -1, PRIME)) % PRIME
    return total


def combine(shares: Sequence[Share], threshold: int) -> int:
    """The secret from at least `threshold` shares (extra shares are cross-checked)."""
    given = list(shares)
    if len(given) < threshold:
        raise NotEnoughShares(f"need {threshold} shares to recover the secret, got {len(given)}")
    _check_threshold(threshold, len(given))
    if len({s.x for s in given}) != len(given):
        raise ShamirError("shares have repeated x values")
    base, extra = given[:threshold], given[threshold:]
    for share in extra:
        if _interpolate(base, share.x) != share.y:
            raise InconsistentShares(
                f"share at x={share.x} does not lie on the polynomial of the first "
                f"{threshold} shares: at least one share is corrupted"
            )
    return _interpolate(base, 0)


def split_bytes(secret: bytes, threshold: int, xs: Sequence[int]) -> list[Share]:
    """Shares of a 32-byte secret (read big-endian as a field element)."""
    if len(secret) != SECRET_BYTES:
        raise ShamirError(f"secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    return split(int.from_bytes(secret, "big"), threshold, xs)


def combine_bytes(shares: Sequence[Share], threshold: int) -> bytes:
    value = combine(shares, threshold)
    if value >= 2 ** (8 * SECRET_BYTES):
        raise InconsistentShares("recovered value is not a 32-byte secret: shares are corrupted")
    return value.to_bytes(SECRET_BYTES, "big")
