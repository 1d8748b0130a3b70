"""What a party finds in the plaintexts it decrypts or decodes, told to its own audit.

Every place where a component turns a peer's ciphertexts into numbers counts, per message,
the plaintexts that are NaN, infinite (a value that overflows float64 when decoded) or outside
the bound the protocol agrees for them, and reports the counts (report.decrypt_check, counts
only, never a value) to the party's audit before it uses them or refuses them: the audit's
data.decrypted_bounds names the peer that chose those ciphertexts (docs/audit.md). The
component keeps its own refusals (an undecodable value still raises, after the report).

  decode_checked   residues -> floats as fedcrypto decodes them, counting instead of raising
  decrypt_floats   decrypt a peer's vector under our key, decode, check, report
  report_check     the report itself (also used by masked decryption, fedflow.kit.he)
"""

from __future__ import annotations

import math
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from fedcrypto import EncryptedVector, PaillierOverflowError, PrivateKey, PublicKey
from fedcrypto.paillier.limbs import LimbArray, to_mpz
from fedschemas.audit_payloads import DecryptCheck
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

Floats = NDArray[np.float64]
Bound = float | Floats
"""A bound on decrypted values: one number, or one per value."""

BASE_BITS = 4
"""fedcrypto's fixed-point base is 16 = 2^4 (fedcrypto.paillier.encoding)."""
EXACT_BITS = 53
"""Mantissas below 2^53 convert to float64 exactly (fedcrypto decodes them with ldexp)."""


@dataclass(frozen=True)
class PlaintextCounts:
    """Counts of one decrypted message's plaintexts. The three kinds are disjoint: `nan`,
    `infinite` (decoded past float64's range), `out_of_bound` (finite and outside the agreed
    bound, or `unreadable`: a residue in the band fixed-point encoding never produces,
    (max_int, n - max_int), which is not a number at all)."""

    count: int
    nan: int = 0
    infinite: int = 0
    out_of_bound: int = 0
    unreadable: int = 0

    @property
    def clean(self) -> bool:
        return not (self.nan or self.infinite or self.out_of_bound)


def decode_checked(residues: LimbArray, exponent: int, public_key: PublicKey) -> tuple[Floats, int]:
    """The residues decoded as fedcrypto.paillier.encoding.decode does (the same floats, bit
    for bit), but a residue in the reserved band becomes NaN and is counted (the second value)
    instead of raising, and a value past float64's range becomes +-inf instead of raising."""
    n, max_int = int(public_key.n), int(public_key.max_int)
    low = n - max_int
    values = to_mpz(np.ascontiguousarray(residues, dtype="<u8"))
    out = np.empty(len(values), dtype=np.float64)
    unreadable = 0
    shift = BASE_BITS * exponent
    for i, residue in enumerate(values):
        r = int(residue)
        if r <= max_int:
            m = r
        elif r >= low:
            m = r - n
        else:
            out[i] = math.nan
            unreadable += 1
            continue
        out[i] = _to_float(m, exponent, shift)
    return out, unreadable


def _to_float(m: int, exponent: int, shift: int) -> float:
    # As fedcrypto's decode: m * 16^exponent, exact below 2^53 (ldexp), else correctly
    # rounded int / int; where that overflows float64 the value is an infinity.
    try:
        if exponent >= 0:
            return float(m * (1 << shift))
        if abs(m) < 1 << EXACT_BITS:
            return math.ldexp(float(m), shift)
        return m / (1 << -shift)
    except OverflowError:
        return math.copysign(math.inf, m)


def count_floats(
    values: ArrayLike, low: Bound, high: Bound, unreadable: int = 0
) -> PlaintextCounts:
    """Counts of `values` (NaN marking the `unreadable` ones, counted as out of bound) against
    the agreed bound [low, high] (scalars or arrays of the values' shape)."""
    v = np.asarray(values, dtype=np.float64)
    nan = int(np.count_nonzero(np.isnan(v))) - unreadable
    infinite = int(np.count_nonzero(np.isinf(v)))
    lo, hi = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        outside = np.isfinite(v) & ((v < lo) | (v > hi))
    return PlaintextCounts(
        count=int(v.size),
        nan=nan,
        infinite=infinite,
        out_of_bound=int(np.count_nonzero(outside)) + unreadable,
        unreadable=unreadable,
    )


def report_check(
    ctx: ComponentContext,
    counts: PlaintextCounts,
    *,
    peer: str,
    tag: str,
    iteration: int,
    bound: str,
) -> None:
    """Tell this party's audit what the plaintexts of `tag` (iteration `iteration`) from
    `peer` held: counts and the bound in words. Named by (tag, peer, iteration), so a redone
    step reports under the same message id (recorded once)."""
    ctx.federation.report(
        DecryptCheck(
            job_id=ctx.job_id,
            component=ctx.component,
            attempt=ctx.attempt,
            party_id=ctx.party_id,
            peer=peer,
            tag=tag,
            iteration=iteration,
            count=counts.count,
            nan=counts.nan,
            infinite=counts.infinite,
            out_of_bound=counts.out_of_bound,
            bound=bound[:256],
        ),
        tag=f"decrypt_check.{tag}.{peer}",
        iteration=iteration,
    )


def decrypt_floats(
    ctx: ComponentContext,
    key: PrivateKey,
    vec: EncryptedVector,
    *,
    peer: str,
    tag: str,
    iteration: int,
    low: Bound,
    high: Bound,
    bound: str,
    executor: Executor | None = None,
) -> Floats:
    """`peer`'s vector `tag` decrypted under our key and decoded to floats (as key.decrypt),
    its plaintexts checked against [low, high] (`bound` says it in words) and reported before
    they are used. Raises as key.decrypt would for a value that is not a number of the agreed
    form (PaillierOverflowError) or that overflows float64 (OverflowError), after the report;
    finite values outside the bound are returned (the audit judges them, the component may
    refuse them too)."""
    residues = key.decrypt_residues(vec.data, executor=executor)
    values, unreadable = decode_checked(residues, vec.exponent, key.public_key)
    values = values.reshape(vec.shape)
    counts = count_floats(values, low, high, unreadable)
    report_check(ctx, counts, peer=peer, tag=tag, iteration=iteration, bound=bound)
    what = f"{ctx.component}: {tag} from {peer}"
    if counts.unreadable:
        raise PaillierOverflowError(f"{what}: {counts.unreadable} decrypted value(s) overflowed")
    if counts.infinite:
        raise OverflowError(f"{what}: {counts.infinite} decrypted value(s) overflow float64")
    return values
