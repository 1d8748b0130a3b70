"""Fixed-point encoding of arrays into Paillier plaintexts, compatible with phe's EncodedNumber.

A vector is encoded with ONE exponent e shared by all its elements: element x becomes the
integer mantissa round(x * 16^-e) (round half to even, as phe's Fraction rounding), and the
plaintext is mantissa mod n, so negatives are n - |mantissa|. A mantissa must satisfy
|mantissa| <= max_int = n // 3 - 1 (phe's bound); residues between max_int and n - max_int are
never valid and decode as an overflow. Because BASE = 16 and e is a plain int, every element is a
valid phe EncodedNumber(public_key, plaintext, e) and phe decrypts it.

Exponent choice (see docs/fedcrypto-paillier.md for the error contract):
- `precision` given: e = floor(log16(precision)) (phe's rule), so the absolute rounding error is
  at most 16^e / 2 <= precision / 2.
- floats, no precision: e = floor((E - 53) / 4) where E is the binary exponent of max|x|
  (math.frexp), i.e. phe's rule applied to the largest element: the largest element keeps all 53
  bits and every element has an absolute error of at most 16^e / 2 <= 2^-53 * 2^E <= 2^-52 max|x|.
- integers, no precision: e = 0, exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from gmpy2 import mpz
from numpy.typing import NDArray

from .errors import PaillierOverflowError
from .limbs import LimbArray, from_mpz

BASE = 16
LOG2_BASE = 4
FLOAT_MANTISSA_BITS = 53
_INT64_SAFE = 1 << 62


@dataclass(frozen=True)
class Encoded:
    """Mantissas (int64, or object ints when large) of one array, its exponent, max |mantissa|."""

    mantissas: NDArray[Any]
    exponent: int
    bound: int


def exponent_for_precision(precision: float) -> int:
    """phe's rule: the largest exponent e with 16^e <= precision (up to float log rounding)."""
    if not (precision > 0 and math.isfinite(precision)):
        raise ValueError(f"precision must be a positive finite number, got {precision!r}")
    return math.floor(math.log(precision, BASE))


def float_exponent(max_abs: float) -> int:
    """phe's default exponent for a float of magnitude max_abs (keeps its 53 bits)."""
    bin_lsb_exponent = math.frexp(max_abs)[1] - FLOAT_MANTISSA_BITS
    return math.floor(bin_lsb_exponent / LOG2_BASE)


def _as_numeric(values: Any) -> NDArray[Any]:
    arr = np.asarray(values)
    kind = arr.dtype.kind
    if kind in "biuf":
        if kind == "b":
            return arr.astype(np.int64)
        if kind == "f" and arr.dtype != np.float64:
            return arr.astype(np.float64)
        return arr
    if kind == "O":
        flat = arr.ravel().tolist()
        if all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
            return arr
        if all(isinstance(v, (int, float)) for v in flat):
            return arr.astype(np.float64)
    raise TypeError(f"cannot encode values of dtype {arr.dtype}; expected ints or floats")


def _shrink(mantissas: list[int], shape: tuple[int, ...], limit: int = _INT64_SAFE) -> NDArray[Any]:
    """int64 when every value is below `limit` in magnitude, else an object array."""
    if not mantissas or max(abs(min(mantissas)), abs(max(mantissas))) < limit:
        return np.array(mantissas, dtype=np.int64).reshape(shape)
    out = np.empty(len(mantissas), dtype=object)
    out[:] = mantissas
    return out.reshape(shape)


def encode(
    values: Any,
    max_int: int,
    *,
    precision: float | None = None,
    max_exponent: int | None = None,
    exponent: int | None = None,
) -> Encoded:
    """Encode an array (any shape) with one shared exponent. Raises on NaN/inf and overflow.

    `exponent` forces the exponent (used where it is computed exactly rather than through
    phe's floating-point log rule).
    """
    arr = _as_numeric(values)
    shape = arr.shape
    is_float = arr.dtype.kind == "f"
    if is_float and not np.all(np.isfinite(arr)):
        raise ValueError("cannot encrypt NaN or infinite values")
    if exponent is None:  # the caller's exponent wins; else from precision; else from the data
        if precision is not None:
            exponent = exponent_for_precision(precision)
        elif is_float:
            max_abs = float(np.max(np.abs(arr))) if arr.size else 0.0
            exponent = float_exponent(max_abs)
        else:
            exponent = 0
    if max_exponent is not None:
        exponent = min(exponent, max_exponent)

    mantissas: NDArray[Any] | None = None
    if is_float and exponent <= 0:
        with np.errstate(over="ignore"):
            scaled = np.ldexp(arr, -LOG2_BASE * exponent)  # exact: a power-of-two scaling
        if np.all(np.isfinite(scaled)):
            rounded = np.rint(scaled)
            if arr.size == 0 or float(np.max(np.abs(rounded))) < _INT64_SAFE:
                mantissas = rounded.astype(np.int64)
            else:
                # floats >= 2^53 are integers, so int() is exact
                mantissas = _shrink([int(v) for v in rounded.ravel().tolist()], shape)
    elif arr.dtype.kind in "iu" and exponent <= 0:
        factor = BASE ** (-exponent)
        big = arr.size and max(abs(int(arr.min())), abs(int(arr.max()))) * factor >= _INT64_SAFE
        if not big and arr.dtype.kind == "i":
            mantissas = arr.astype(np.int64) * np.int64(factor)
        else:
            mantissas = _shrink([int(v) * factor for v in arr.ravel().tolist()], shape)
    if mantissas is None:
        # exact rational path: positive exponents, object ints, or float overflow in ldexp
        scale = Fraction(BASE) ** -exponent
        mantissas = _shrink([round(Fraction(v) * scale) for v in arr.ravel().tolist()], shape)

    bound = max_abs_int(mantissas)
    if bound > max_int:
        raise PaillierOverflowError(
            f"encoded magnitude {bound} exceeds max_int {max_int}; use a coarser precision"
        )
    return Encoded(mantissas=mantissas, exponent=exponent, bound=bound)


def max_abs_int(mantissas: NDArray[Any]) -> int:
    if mantissas.size == 0:
        return 0
    if mantissas.dtype == object:
        return int(max(abs(int(v)) for v in mantissas.ravel().tolist()))
    return max(abs(int(mantissas.min())), abs(int(mantissas.max())))


def rescale(encoded: Encoded, new_exponent: int, max_int: int) -> Encoded:
    """Same values at a lower exponent (mantissas times 16^(old - new))."""
    if new_exponent > encoded.exponent:
        raise ValueError("can only decrease an exponent")
    if new_exponent == encoded.exponent:
        return encoded
    factor = BASE ** (encoded.exponent - new_exponent)
    bound = encoded.bound * factor
    if bound > max_int:
        raise PaillierOverflowError(
            f"aligning exponents to {new_exponent} makes a magnitude exceed max_int"
        )
    m = encoded.mantissas
    if m.dtype != object and bound < _INT64_SAFE:
        return Encoded(m * np.int64(factor), new_exponent, bound)
    return Encoded(
        _shrink([int(v) * factor for v in m.ravel().tolist()], m.shape), new_exponent, bound
    )


def to_residues(mantissas: NDArray[Any], n: mpz, limbs: int) -> LimbArray:
    """Plaintext residues (mantissa mod n, so negatives become n - |x|) as a limb array."""
    flat = mantissas.ravel()
    count = flat.shape[0]
    if flat.dtype != object:
        out = np.zeros((count, limbs), dtype=np.uint64)
        pos = flat >= 0
        out[pos, 0] = flat[pos].astype(np.uint64)
        neg = np.flatnonzero(~pos)
        if len(neg):
            out[neg] = from_mpz([n + int(v) for v in flat[neg].tolist()], limbs)
        return out
    return from_mpz([int(v) % n for v in flat.tolist()], limbs)


def magnitudes(mantissas: NDArray[Any]) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
    """|mantissa| as little-endian byte rows, and the sign mask (for exponentiation kernels)."""
    flat = mantissas.ravel()
    if flat.dtype != object:
        neg = flat < 0
        mags = np.abs(flat.astype(np.int64)).astype("<u8")
        return mags.view(np.uint8).reshape(-1, 8), neg
    ints = [int(v) for v in flat.tolist()]
    width = max(1, (max((abs(v) for v in ints), default=0).bit_length() + 7) // 8)
    raw = b"".join(abs(v).to_bytes(width, "little") for v in ints)
    return (
        np.frombuffer(raw, dtype=np.uint8).reshape(len(ints), width).copy(),
        np.array([v < 0 for v in ints], dtype=bool),
    )


def decode(residues: list[mpz], exponent: int, n: mpz, max_int: int) -> NDArray[Any]:
    """Plaintext residues back to numbers: float64 for exponent < 0, else ints (phe's rule).

    Raises PaillierOverflowError for a residue in the reserved band (max_int, n - max_int).
    """
    low = n - max_int
    mants: list[int] = []
    for m in residues:
        if m <= max_int:
            mants.append(int(m))
        elif m >= low:
            mants.append(int(m - n))
        else:
            raise PaillierOverflowError("overflow detected in a decrypted value")
    if exponent >= 0:
        factor = BASE**exponent
        return _shrink([v * factor for v in mants], (len(mants),), limit=1 << 63)
    big = max((abs(v) for v in mants), default=0) >= 1 << FLOAT_MANTISSA_BITS
    if not big:
        # |v| < 2^53 converts exactly; scaling by a power of two rounds once, correctly,
        # so this equals phe's correctly rounded int / int division
        return np.ldexp(np.array(mants, dtype=np.float64), LOG2_BASE * exponent)
    denominator = BASE ** (-exponent)
    return np.array([v / denominator for v in mants], dtype=np.float64)
