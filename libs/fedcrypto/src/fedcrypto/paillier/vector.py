"""EncryptedVector: an array of Paillier ciphertexts held as one limb array.

Layout (shared with libs/accel): `data` is a C-contiguous ``<u8`` array of shape
(count, limbs) with limbs = ceil(bit_length(n^2) / 64), limb 0 least significant; `shape` is
the logical shape of the plaintext array (count = prod(shape), C order); `exponent` is the one
phe base-16 exponent shared by all elements; `bound` is a conservative upper bound on
|mantissa| of every element, used to refuse (PaillierOverflowError) any operation whose result
could pass max_int = n // 3 - 1 and so wrap around n. Memory is the raw ciphertext bytes plus a
constant; no Python object per element survives an operation.

Homomorphic operations (n^2 arithmetic, g = n + 1):
  Enc(a) * Enc(b) = Enc(a + b); Enc(a)^k = Enc(k a); Enc(a)^-1 = Enc(-a).
Results of operations are not re-randomised: call `obfuscate()` before a result leaves the
process if whoever receives it (the key holder included) must not learn how it was computed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

import gmpy2
import numpy as np
from numpy.typing import NDArray

from . import kernels
from .encoding import BASE, Encoded, encode, magnitudes, max_abs_int, to_residues
from .errors import CiphertextError, KeyMismatchError, PaillierOverflowError, ShapeMismatchError
from .limbs import (
    LIMB_DTYPE,
    LimbArray,
    from_mpz,
    int_from_bytes,
    int_to_bytes,
    native_simd,
    to_mpz,
)
from .parallel import (
    CHEAP_MIN_CHUNK,
    LANES,
    MIN_CHUNK,
    MULTIEXP_MIN_ROWS,
    chunk_bounds,
    concat_limbs,
    map_chunks,
    split_evenly,
)
from .serialize import field, pack, unpack

if TYPE_CHECKING:
    from .keys import Obfuscation, PrivateKey, PublicKey
    from .obfuscation import ObfuscatorPool

_VECTOR_FMT = "fedcrypto.paillier.vector"
# a few products per element: only worth another process in big chunks
_CHEAP_KERNELS = (kernels.k_mul, kernels.k_add_plain, kernels.k_invert)
# Default quantisation of a plaintext matrix in matmul: a step of at most 2^-24 of the power
# of two at or above its largest magnitude (so at most 2^-23 * max|X|).
MATMUL_RELATIVE_BITS = 24


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(a, b))
    except ValueError as exc:
        raise ShapeMismatchError(f"shapes {a} and {b} cannot be broadcast together") from exc


def _is_plain(other: object) -> bool:
    return isinstance(other, (int, float, np.ndarray, np.generic, list, tuple))


def _require_plain(other: object) -> None:
    if not _is_plain(other):
        raise TypeError(f"expected a plaintext number or array, got {type(other).__name__}")


class EncryptedVector:
    """Paillier ciphertexts of an array of any shape, one exponent, one key."""

    # numpy must not treat us as an object array: `ndarray + vec` then calls vec.__radd__
    __array_ufunc__ = None

    def __init__(
        self,
        public_key: PublicKey,
        data: LimbArray,
        exponent: int,
        shape: tuple[int, ...],
        *,
        bound: int,
        obfuscated: bool = False,
    ) -> None:
        shape = tuple(int(s) for s in shape)
        count = math.prod(shape)
        if data.dtype != LIMB_DTYPE or data.shape != (count, public_key.limbs):
            raise ValueError(
                f"data must be a ({count}, {public_key.limbs}) <u8 array, "
                f"got {data.dtype} {data.shape}"
            )
        if not 0 <= bound <= public_key.max_int:
            raise PaillierOverflowError("bound outside [0, max_int]")
        self.public_key = public_key
        self.data: LimbArray = np.ascontiguousarray(data)
        self.exponent = int(exponent)
        self.shape = shape
        self.bound = int(bound)
        self.obfuscated = bool(obfuscated)

    # -- array protocol -------------------------------------------------------------------------

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(self.data.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    @property
    def value_bound(self) -> float:
        """Upper bound on |value| of every element (bound * 16^exponent)."""
        return float(
            self.bound * (BASE**self.exponent)
            if self.exponent >= 0
            else self.bound / BASE ** (-self.exponent)
        )

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d encrypted vector")
        return self.shape[0]

    def __iter__(self) -> Iterator[EncryptedVector]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return (
            f"<EncryptedVector shape={self.shape} exponent={self.exponent} key={self.public_key!r}>"
        )

    def _like(
        self,
        data: LimbArray,
        shape: tuple[int, ...],
        *,
        exponent: int | None = None,
        bound: int | None = None,
        obfuscated: bool = False,
    ) -> EncryptedVector:
        return EncryptedVector(
            self.public_key,
            data,
            self.exponent if exponent is None else exponent,
            shape,
            bound=self.bound if bound is None else bound,
            obfuscated=obfuscated,
        )

    def _index(self) -> NDArray[np.int64]:
        return np.arange(self.size, dtype=np.int64).reshape(self.shape)

    def __getitem__(self, key: Any) -> EncryptedVector:
        idx = np.asarray(self._index()[key])
        return self._like(self.data[idx.ravel()], idx.shape, obfuscated=self.obfuscated)

    def reshape(self, *shape: Any) -> EncryptedVector:
        new_shape = self._index().reshape(*shape).shape
        return self._like(self.data, new_shape, obfuscated=self.obfuscated)

    def ravel(self) -> EncryptedVector:
        return self.reshape(-1)

    def transpose(self, *axes: Any) -> EncryptedVector:
        idx = self._index().transpose(*axes)
        return self._like(self.data[idx.ravel()], idx.shape, obfuscated=self.obfuscated)

    @property
    def T(self) -> EncryptedVector:
        return self.transpose()

    def copy(self) -> EncryptedVector:
        return self._like(self.data.copy(), self.shape, obfuscated=self.obfuscated)

    def _rows_for(self, shape: tuple[int, ...]) -> LimbArray:
        if shape == self.shape:
            return self.data
        idx = np.broadcast_to(self._index(), shape)
        return self.data[idx.ravel()]

    # -- kernels -----------------------------------------------------------------------------------

    def _map(
        self,
        fn: Any,
        count: int,
        args: Any,
        executor: Executor | None,
        chunk_size: int | None,
        min_chunk: int | None = None,
    ) -> LimbArray:
        if min_chunk is None:
            min_chunk = CHEAP_MIN_CHUNK if fn in _CHEAP_KERNELS else MIN_CHUNK
        bounds = chunk_bounds(count, executor, chunk_size, min_chunk=min_chunk)
        parts = map_chunks(fn, bounds, args, executor)
        return concat_limbs(parts, self.public_key.limbs)

    def _pow_scalar(
        self, data: LimbArray, k: int, executor: Executor | None, chunk_size: int | None
    ) -> LimbArray:
        """Rows of data raised to the integer k (Enc(x) -> Enc(k x))."""
        mag = abs(k)
        exps = np.frombuffer(int_to_bytes(mag), dtype=np.uint8).reshape(1, -1)
        negate = np.array([k < 0])
        n2_b = self.public_key.nsquare_bytes
        return self._map(
            kernels.k_pow,
            data.shape[0],
            lambda lo, hi: (n2_b, data[lo:hi], exps, negate),
            executor,
            chunk_size,
        )

    def _aligned(
        self, exponent: int, executor: Executor | None, chunk_size: int | None
    ) -> LimbArray:
        if exponent == self.exponent:
            return self.data
        return self._pow_scalar(self.data, BASE ** (self.exponent - exponent), executor, chunk_size)

    def _check_key(self, other: EncryptedVector) -> None:
        if other.public_key != self.public_key:
            raise KeyMismatchError("operands were encrypted under different keys")

    def _check_bound(self, bound: int, what: str) -> int:
        if bound > self.public_key.max_int:
            raise PaillierOverflowError(
                f"{what} could exceed max_int (bound {bound.bit_length()} bits, max_int "
                f"{self.public_key.max_int.bit_length()} bits); the result would wrap around n"
            )
        return bound

    # -- exponent --------------------------------------------------------------------------------

    def decrease_exponent_to(
        self, new_exponent: int, *, executor: Executor | None = None, chunk_size: int | None = None
    ) -> EncryptedVector:
        """Same values at a lower exponent (ciphertexts raised to 16^(old - new)), as phe."""
        if new_exponent > self.exponent:
            raise ValueError(
                f"new exponent {new_exponent} must not exceed the current {self.exponent}"
            )
        bound = self._check_bound(
            self.bound * BASE ** (self.exponent - new_exponent), "decreasing the exponent"
        )
        data = self._aligned(new_exponent, executor, chunk_size)
        return self._like(data, self.shape, exponent=new_exponent, bound=bound)

    # -- addition ----------------------------------------------------------------------------------

    def add(
        self,
        other: Any,
        *,
        precision: float | None = None,
        executor: Executor | None = None,
        chunk_size: int | None = None,
    ) -> EncryptedVector:
        """self + other for an EncryptedVector or a plaintext array/scalar (broadcasting).

        A plaintext is encoded as phe does (exactly, at most at self's exponent) unless
        `precision` is given; exponents are aligned to the lower one (phe's decrease_exponent_to).
        """
        if isinstance(other, EncryptedVector):
            return self._add_encrypted(
                other, negate_other=False, executor=executor, chunk_size=chunk_size
            )
        _require_plain(other)
        encoded = encode(
            other, self.public_key.max_int, precision=precision, max_exponent=self.exponent
        )
        return self._add_encoded(encoded, executor, chunk_size)

    def _add_encoded(
        self, encoded: Encoded, executor: Executor | None, chunk_size: int | None
    ) -> EncryptedVector:
        pk = self.public_key
        exponent = encoded.exponent  # <= self.exponent by construction
        shape = _broadcast(self.shape, encoded.mantissas.shape)
        bound = self._check_bound(
            self.bound * BASE ** (self.exponent - exponent) + encoded.bound, "the sum"
        )
        data = self._aligned(exponent, executor, chunk_size)
        if shape != self.shape:
            data = self._like(data, self.shape)._rows_for(shape)
        mants = np.broadcast_to(encoded.mantissas, shape)
        plain = to_residues(np.ascontiguousarray(mants), pk.n, pk.plain_limbs)
        n_b = pk.n_bytes
        out = self._map(
            kernels.k_add_plain,
            plain.shape[0],
            lambda lo, hi: (n_b, data[lo:hi], plain[lo:hi]),
            executor,
            chunk_size,
        )
        return self._like(out, shape, exponent=exponent, bound=bound)

    def _add_encrypted(
        self,
        other: EncryptedVector,
        *,
        negate_other: bool,
        executor: Executor | None,
        chunk_size: int | None,
    ) -> EncryptedVector:
        self._check_key(other)
        shape = _broadcast(self.shape, other.shape)
        exponent = min(self.exponent, other.exponent)
        bound = self._check_bound(
            self.bound * BASE ** (self.exponent - exponent)
            + other.bound * BASE ** (other.exponent - exponent),
            "the sum",
        )
        a = self._like(self._aligned(exponent, executor, chunk_size), self.shape)._rows_for(shape)
        b_vec = other._like(other._aligned(exponent, executor, chunk_size), other.shape)
        b = b_vec._rows_for(shape) if shape != other.shape else b_vec.data
        n2_b = self.public_key.nsquare_bytes
        if negate_other:
            b = self._map(
                kernels.k_invert, b.shape[0], lambda lo, hi: (n2_b, b[lo:hi]), executor, chunk_size
            )
        out = self._map(
            kernels.k_mul,
            a.shape[0],
            lambda lo, hi: (n2_b, a[lo:hi], b[lo:hi]),
            executor,
            chunk_size,
        )
        return self._like(out, shape, exponent=exponent, bound=bound)

    def sub(
        self,
        other: Any,
        *,
        precision: float | None = None,
        executor: Executor | None = None,
        chunk_size: int | None = None,
    ) -> EncryptedVector:
        """self - other (other encrypted or plaintext)."""
        if isinstance(other, EncryptedVector):
            return self._add_encrypted(
                other, negate_other=True, executor=executor, chunk_size=chunk_size
            )
        _require_plain(other)
        encoded = encode(
            other, self.public_key.max_int, precision=precision, max_exponent=self.exponent
        )
        negated = Encoded(-encoded.mantissas, encoded.exponent, encoded.bound)
        return self._add_encoded(negated, executor, chunk_size)

    def neg(
        self, *, executor: Executor | None = None, chunk_size: int | None = None
    ) -> EncryptedVector:
        n2_b = self.public_key.nsquare_bytes
        data = self.data
        out = self._map(
            kernels.k_invert, self.size, lambda lo, hi: (n2_b, data[lo:hi]), executor, chunk_size
        )
        return self._like(out, self.shape)

    def __add__(self, other: Any) -> EncryptedVector:
        if not (isinstance(other, EncryptedVector) or _is_plain(other)):
            return NotImplemented
        return self.add(other)

    def __radd__(self, other: Any) -> EncryptedVector:
        if not _is_plain(other):
            return NotImplemented
        return self.add(other)

    def __sub__(self, other: Any) -> EncryptedVector:
        if not (isinstance(other, EncryptedVector) or _is_plain(other)):
            return NotImplemented
        return self.sub(other)

    def __rsub__(self, other: Any) -> EncryptedVector:
        if not _is_plain(other):
            return NotImplemented
        return self.neg().add(other)

    def __neg__(self) -> EncryptedVector:
        return self.neg()

    # -- multiplication by plaintext ------------------------------------------------------------

    def mul(
        self,
        other: Any,
        *,
        precision: float | None = None,
        executor: Executor | None = None,
        chunk_size: int | None = None,
    ) -> EncryptedVector:
        """self * other, elementwise, for a plaintext scalar or array (broadcasting).

        The plaintext is encoded with one exponent (exactly, as phe, unless `precision` is
        given: a coarser precision means shorter exponents and a faster multiply). The result's
        exponent is the sum of both exponents.
        """
        if isinstance(other, EncryptedVector):
            raise TypeError("cannot multiply two Paillier ciphertexts (only by plaintext)")
        _require_plain(other)
        pk = self.public_key
        encoded = encode(other, pk.max_int, precision=precision)
        bound = self._check_bound(self.bound * encoded.bound, "the product")
        exponent = self.exponent + encoded.exponent
        n2_b = pk.nsquare_bytes
        if encoded.mantissas.ndim == 0:
            out = self._pow_scalar(self.data, int(encoded.mantissas), executor, chunk_size)
            return self._like(out, self.shape, exponent=exponent, bound=bound)
        shape = _broadcast(self.shape, encoded.mantissas.shape)
        data = self._rows_for(shape)
        mants = np.ascontiguousarray(np.broadcast_to(encoded.mantissas, shape))
        exps, negate = magnitudes(mants)
        out = self._map(
            kernels.k_pow,
            data.shape[0],
            lambda lo, hi: (n2_b, data[lo:hi], exps[lo:hi], negate[lo:hi]),
            executor,
            chunk_size,
        )
        return self._like(out, shape, exponent=exponent, bound=bound)

    def __mul__(self, other: Any) -> EncryptedVector:
        if not (isinstance(other, EncryptedVector) or _is_plain(other)):
            return NotImplemented
        return self.mul(other)

    def __rmul__(self, other: Any) -> EncryptedVector:
        if not _is_plain(other):
            return NotImplemented
        return self.mul(other)

    def __truediv__(self, other: Any) -> EncryptedVector:
        if isinstance(other, EncryptedVector) or not _is_plain(other):
            return NotImplemented
        return self.mul(1.0 / np.asarray(other, dtype=np.float64))

    # -- reductions ------------------------------------------------------------------------------

    def sum(
        self,
        axis: int | None = None,
        *,
        executor: Executor | None = None,
        chunk_size: int | None = None,
    ) -> EncryptedVector:
        """Homomorphic sum over all elements (axis=None) or along one axis."""
        if axis is None:
            order = None
            length = self.size
            out_shape: tuple[int, ...] = ()
        else:
            if not -self.ndim <= axis < self.ndim:
                raise ShapeMismatchError(f"axis {axis} is out of range for shape {self.shape}")
            moved = np.moveaxis(self._index(), axis, -1)
            length = self.shape[axis]
            out_shape = moved.shape[:-1]
            order = moved.ravel()
        bound = self._check_bound(self.bound * max(length, 1), "the sum")
        data = self.data if order is None else self.data[order]
        groups = math.prod(out_shape)
        pk = self.public_key
        if length == 0:
            out = from_mpz([1] * groups, pk.limbs)  # 1 = Enc(0) with r = 1
            return self._like(out, out_shape, bound=0)
        total = groups * length
        bounds = chunk_bounds(total, executor, chunk_size, min_chunk=CHEAP_MIN_CHUNK)
        plans = []
        for lo, hi in bounds:
            gids = list(range(lo // length, (hi - 1) // length + 1))
            lengths = [min(hi, (g + 1) * length) - max(lo, g * length) for g in gids]
            plans.append((gids, np.array(lengths, dtype=np.int64)))
        n2_b = pk.nsquare_bytes
        lengths_at = {b: plan[1] for b, plan in zip(bounds, plans, strict=True)}
        parts = map_chunks(
            kernels.k_prod_segments,
            bounds,
            lambda lo, hi: (n2_b, data[lo:hi], lengths_at[(lo, hi)]),
            executor,
        )
        results: list[Any] = [None] * groups
        n2 = pk.nsquare
        for (gids, _), part in zip(plans, parts, strict=True):
            for g, value in zip(gids, to_mpz(part), strict=True):
                results[g] = value if results[g] is None else results[g] * value % n2
        return self._like(from_mpz(results, pk.limbs), out_shape, bound=bound)

    # -- matrix products -------------------------------------------------------------------------

    def matmul(
        self,
        other: Any,
        *,
        precision: float | None = None,
        executor: Executor | None = None,
        chunk_size: int | None = None,
    ) -> EncryptedVector:
        """[[self]] @ X for a plaintext X: (m,) @ (m, k) -> (k,), (r, m) @ (m, k) -> (r, k).

        Each output is a multi-exponentiation prod_i c_i^(x_ij) (Pippenger buckets) over X
        quantised to small integers with one base-16 exponent: by default a step of at most
        2^-24 * 2^ceil(log2 max|X|) (integers exact), or the caller's absolute `precision`.
        Negative entries use inverted ciphertexts. Work is split over output columns for the
        executor.
        """
        if isinstance(other, EncryptedVector):
            raise TypeError("cannot multiply two Paillier ciphertexts (only by plaintext)")
        x = np.asarray(other)
        if self.ndim not in (1, 2) or x.ndim not in (1, 2):
            raise ShapeMismatchError("matmul supports 1-D and 2-D operands")
        vector_rhs = x.ndim == 1
        x2 = x.reshape(-1, 1) if vector_rhs else x
        m = self.shape[-1]
        if x2.shape[0] != m:
            raise ShapeMismatchError(f"matmul shapes {self.shape} and {x.shape} do not align")
        encoded = _quantize_matrix(x2, self.public_key.max_int, precision)
        col_l1 = np.abs(encoded.mantissas).sum(axis=0) if m else np.zeros(x2.shape[1], np.int64)
        bound = self._check_bound(self.bound * int(col_l1.max(initial=0)), "the matrix product")
        rows = 1 if self.ndim == 1 else self.shape[0]
        outs = [
            _multiexp_columns(
                self.data[r * m : (r + 1) * m],
                encoded.mantissas,
                self.public_key,
                executor,
                chunk_size,
            )
            for r in range(rows)
        ]
        data = concat_limbs(outs, self.public_key.limbs)
        k = x2.shape[1]
        shape: tuple[int, ...] = (k,) if self.ndim == 1 else (rows, k)
        if vector_rhs:
            shape = shape[:-1]
        return self._like(data, shape, exponent=self.exponent + encoded.exponent, bound=bound)

    def rmatmul(
        self,
        other: Any,
        *,
        precision: float | None = None,
        executor: Executor | None = None,
        chunk_size: int | None = None,
    ) -> EncryptedVector:
        """X @ [[self]]: (k, m) @ (m,) -> (k,), (k, m) @ (m, r) -> (k, r)."""
        x = np.asarray(other)
        if x.ndim != 2:
            raise ShapeMismatchError("the plaintext left operand of @ must be 2-D")
        if self.ndim == 1:
            return self.matmul(x.T, precision=precision, executor=executor, chunk_size=chunk_size)
        return self.T.matmul(x.T, precision=precision, executor=executor, chunk_size=chunk_size).T

    def matmul_plain_left(
        self,
        x: Any,
        *,
        precision: float | None = None,
        executor: Executor | None = None,
        chunk_size: int | None = None,
    ) -> EncryptedVector:
        """X.T @ [[self]] for X (m, k) and self (m,): the same as encrypted_dot(X, self)."""
        if self.ndim != 1:
            raise ShapeMismatchError("matmul_plain_left expects a 1-D encrypted vector")
        return self.matmul(x, precision=precision, executor=executor, chunk_size=chunk_size)

    def __matmul__(self, other: Any) -> EncryptedVector:
        if not _is_plain(other):
            return NotImplemented
        return self.matmul(other)

    def __rmatmul__(self, other: Any) -> EncryptedVector:
        if not _is_plain(other):
            return NotImplemented
        return self.rmatmul(other)

    # -- re-randomisation ------------------------------------------------------------------------

    def obfuscate(
        self,
        *,
        pool: ObfuscatorPool | None = None,
        obfuscation: Obfuscation = "djn",
        key: PrivateKey | None = None,
        executor: Executor | None = None,
        chunk_size: int | None = None,
    ) -> EncryptedVector:
        """Fresh randomness for every element (same plaintexts); do this before sending a result.

        Obfuscators come from `pool` if given, else are computed with this vector's public key
        (or by CRT with `key`, the matching private key, when the key holder re-randomises).
        """
        from .keys import random_bytes

        pk = self.public_key
        data = self.data
        n2_b = pk.nsquare_bytes
        if pool is not None:
            if pool.public_key != pk:
                raise KeyMismatchError("the obfuscator pool belongs to a different key")
            obf = pool.take(self.size)
            out = self._map(
                kernels.k_mul,
                self.size,
                lambda lo, hi: (n2_b, data[lo:hi], obf[lo:hi]),
                executor,
                chunk_size,
            )
        else:
            if key is not None and key.public_key != pk:
                raise KeyMismatchError("the private key does not match this vector's key")
            spec = (key or pk).obfuscation_spec(obfuscation)
            rand = random_bytes(self.size, kernels.randomness_bytes(spec))
            out = self._map(
                kernels.k_rerandomize,
                self.size,
                lambda lo, hi: (spec, data[lo:hi], rand[lo:hi]),
                executor,
                chunk_size,
                kernels.min_chunk(spec),
            )
        return self._like(out, self.shape, obfuscated=True)

    # -- bytes -------------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """msgpack header (version, n, exponent, shape, count, limbs, bound) + data.tobytes()."""
        pk = self.public_key
        header = {
            "n": pk.n_bytes,
            "exponent": self.exponent,
            "shape": list(self.shape),
            "count": self.size,
            "limbs": pk.limbs,
            "bound": int_to_bytes(self.bound),
            "obfuscated": self.obfuscated,
        }
        return pack(_VECTOR_FMT, header, self.data.tobytes())

    @classmethod
    def from_bytes(
        cls,
        raw: bytes | bytearray | memoryview,
        public_key: PublicKey,
        *,
        validate: bool = True,
        executor: Executor | None = None,
    ) -> EncryptedVector:
        """Parse bytes from `to_bytes`, expecting ciphertexts under `public_key`.

        The receiver names the key it expects (a sender cannot choose it). With validate=True
        every ciphertext is checked to lie in (0, n^2) and be coprime to n.
        """
        header, payload = unpack(raw, _VECTOR_FMT)
        if int_from_bytes(field(header, "n", bytes)) != public_key.n:
            raise KeyMismatchError("the bytes hold ciphertexts under a different key")
        shape = tuple(field(header, "shape", list))
        if not all(isinstance(s, int) and s >= 0 for s in shape):
            raise ValueError("bad shape in header")
        count = field(header, "count", int)
        limbs = field(header, "limbs", int)
        if count != math.prod(shape) or limbs != public_key.limbs:
            raise ValueError("header count/limbs do not match shape and key")
        if len(payload) != count * limbs * 8:
            raise ValueError(f"payload has {len(payload)} bytes, expected {count * limbs * 8}")
        data = np.frombuffer(payload, dtype=LIMB_DTYPE).reshape(count, limbs).copy()
        bound = int(int_from_bytes(field(header, "bound", bytes)))
        obfuscated = bool(header.get("obfuscated", False))
        vec = cls(
            public_key,
            data,
            field(header, "exponent", int),
            shape,
            bound=bound,
            obfuscated=obfuscated,
        )
        if validate:
            vec.validate(executor=executor)
        return vec

    @classmethod
    def from_limbs(
        cls,
        public_key: PublicKey,
        data: LimbArray,
        exponent: int,
        shape: tuple[int, ...] | None = None,
        *,
        bound: int | None = None,
        validate: bool = True,
    ) -> EncryptedVector:
        """Wrap a limb array from elsewhere (e.g. libs/accel); bound defaults to max_int."""
        shape = (data.shape[0],) if shape is None else shape
        vec = cls(
            public_key, data, exponent, shape, bound=public_key.max_int if bound is None else bound
        )
        if validate:
            vec.validate()
        return vec

    def validate(self, *, executor: Executor | None = None, chunk_size: int | None = None) -> None:
        """Raise CiphertextError unless every element is in (0, n^2) and coprime to n."""
        n_b = self.public_key.n_bytes
        data = self.data
        map_chunks(
            kernels.k_validate,
            chunk_bounds(self.size, executor, chunk_size, min_chunk=CHEAP_MIN_CHUNK),
            lambda lo, hi: (n_b, data[lo:hi], lo),
            executor,
        )


def _quantize_matrix(x: NDArray[Any], max_int: int, precision: float | None) -> Encoded:
    """X as small integers with one exponent (the caller's precision, or 2^-24 relative)."""
    arr = np.asarray(x)
    exponent = None
    if precision is None and arr.dtype.kind == "f":
        finite = arr[np.isfinite(arr)]
        top = float(np.max(np.abs(finite))) if finite.size else 0.0
        # step 16^e <= 2^-24 * 2^ceil(log2 max|X|), computed exactly (no float log): e.g.
        # 24 + 1 bits per entry for X in [-1, 1]
        exponent = math.floor((math.frexp(top)[1] - MATMUL_RELATIVE_BITS) / 4) if top else 0
    encoded = encode(arr, max_int, precision=precision, exponent=exponent)
    if encoded.mantissas.dtype == object or max_abs_int(encoded.mantissas) >= 1 << 62:
        raise ValueError(
            "the quantised matrix needs entries below 2^62; choose a coarser precision"
        )
    return encoded


def _multiexp_columns(
    bases: LimbArray,
    exps: NDArray[np.int64],
    public_key: PublicKey,
    executor: Executor | None,
    chunk_size: int | None,
) -> LimbArray:
    """For each column j: prod_i bases[i]^exps[i, j] mod n^2, columns split over the executor."""
    n2_b = public_key.nsquare_bytes
    if kernels.native_available():
        return _native_multiexp_columns(bases, exps, public_key, executor, chunk_size)
    inverse = _inverses_for_negative(bases, exps, public_key, executor)
    parts = map_chunks(
        kernels.k_multiexp,
        chunk_bounds(exps.shape[1], executor, chunk_size, min_chunk=1),
        lambda lo, hi: (n2_b, bases, inverse, np.ascontiguousarray(exps[:, lo:hi])),
        executor,
    )
    return concat_limbs(parts, public_key.limbs)


def _inverses_for_negative(
    bases: LimbArray, exps: NDArray[np.int64], public_key: PublicKey, executor: Executor | None
) -> LimbArray | None:
    """c^-1 for the bases with some negative exponent (zero rows elsewhere), or None."""
    needs_inverse = np.flatnonzero((exps < 0).any(axis=1))
    if not len(needs_inverse):
        return None
    n2_b = public_key.nsquare_bytes
    inverse = np.zeros_like(bases)
    sub = bases[needs_inverse]
    inverse[needs_inverse] = concat_limbs(
        map_chunks(
            kernels.k_invert,
            chunk_bounds(len(sub), executor, None, min_chunk=CHEAP_MIN_CHUNK),
            lambda lo, hi: (n2_b, sub[lo:hi]),
            executor,
        ),
        public_key.limbs,
    )
    return inverse


def _native_multiexp_columns(
    bases: LimbArray,
    exps: NDArray[np.int64],
    public_key: PublicKey,
    executor: Executor | None,
    chunk_size: int | None,
) -> LimbArray:
    """The extension's multi-exponentiation, negative exponents without inverted bases.

    Inverting every base with a negative exponent (nearly all of them for centred features)
    costs about a sixth of the products themselves. Instead each exponent is raised by
    shift = -min(e) (one more bit at most), and the surplus prod_i c_i^shift, the same for
    every column, is divided out with one inversion. When the last group of SIMD lanes has a
    free lane (the extension runs eight columns side by side) the surplus is one more column
    of constant exponent there, at no cost; otherwise it is a running product of the bases.
    """
    n2_b = public_key.nsquare_bytes
    cols = exps.shape[1]
    shift = max(0, -int(exps.min(initial=0)))
    top = int(exps.max(initial=0))
    inverse: LimbArray | None = None
    surplus_column = False
    if shift and top + shift >= 1 << 62:  # the extension refuses exponents from 2^62 up
        inverse = _inverses_for_negative(bases, exps, public_key, executor)
        shift = 0
    elif shift:
        surplus_column = native_simd and cols % LANES != 0
        exps = exps + shift
        if surplus_column:
            exps = np.hstack([exps, np.full((exps.shape[0], 1), shift, dtype=np.int64)])
    # Split over the bases, not the columns: the lanes already run eight columns at once
    # (one chunk per worker: every chunk pays its own bucket folding), and the partial
    # products are multiplied together.
    rows = exps.shape[0]
    if chunk_size is None:
        row_bounds = split_evenly(rows, executor, min_part=MULTIEXP_MIN_ROWS)
    else:
        row_bounds = chunk_bounds(rows, executor, chunk_size)
    partials = map_chunks(
        kernels.k_multiexp,
        row_bounds,
        lambda lo, hi: (
            n2_b,
            bases[lo:hi],
            None if inverse is None else inverse[lo:hi],
            np.ascontiguousarray(exps[lo:hi]),
        ),
        executor,
    )
    if not partials:
        return from_mpz([1] * cols, public_key.limbs)
    total = partials[0]
    for part in partials[1:]:
        total = kernels.k_mul(n2_b, total, part)
    if not shift:
        return total
    n2 = public_key.nsquare
    if surplus_column:
        surplus = to_mpz(total[cols:])[0]
        total = total[:cols]
    else:
        products = map_chunks(
            kernels.k_prod_segments,
            row_bounds,
            lambda lo, hi: (n2_b, bases[lo:hi], np.array([hi - lo], dtype=np.int64)),
            executor,
        )
        product = gmpy2.mpz(1)
        for part in products:
            product = product * to_mpz(part)[0] % n2
        surplus = gmpy2.powmod(product, shift, n2)
    divide = gmpy2.invert(surplus, n2)
    if divide == 0:
        raise CiphertextError("a ciphertext is not invertible modulo n^2")
    return kernels.k_mul(
        n2_b, np.ascontiguousarray(total), from_mpz([divide] * cols, total.shape[1])
    )


def encrypted_dot(
    x: Any,
    d: EncryptedVector,
    *,
    precision: float | None = None,
    executor: Executor | None = None,
    chunk_size: int | None = None,
) -> EncryptedVector:
    """X.T @ [[d]] for X of shape (m, k) and d of shape (m,): the hetero-LR gradient product."""
    if d.ndim != 1:
        raise ShapeMismatchError("encrypted_dot expects a 1-D encrypted vector")
    return d.matmul(x, precision=precision, executor=executor, chunk_size=chunk_size)
