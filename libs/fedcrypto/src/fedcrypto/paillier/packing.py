"""Several quantised values per Paillier plaintext, for sums (gradient/hessian pairs, histograms).

A value x of field j is quantised to q = round((x - lo_j) / precision), an integer in [0, Q]
with Q = max_j ceil((hi_j - lo_j) / precision); x outside [lo_j, hi_j] is refused. One
plaintext holds `slots` slots of `slot_bits` bits, slot s at bit offset s * slot_bits:
    P = sum_s q_s * 2^(s * slot_bits).
Adding ciphertexts adds the slots independently as long as no slot sum carries into the next
one, i.e. while the number of summed values (`terms`, tracked per ciphertext) is at most
`planned_additions` and slot_bits >= bit_length(Q * planned_additions): the encoder sizes or
checks slot_bits for that, and every addition that would pass the budget raises
PaillierOverflowError before it is computed. slots * slot_bits <= bit_length(n) - 2, so P < n
and the plaintext never wraps. Decoding checks that bits above the last slot are zero and that
every slot sum is at most terms * Q, so a corrupted or over-summed ciphertext cannot decode
silently. A slot sum S of t values decodes as S * precision + t * lo_j; each value contributes
at most precision / 2 of rounding error.
"""

from __future__ import annotations

import math
from concurrent.futures import Executor
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import kernels
from .errors import KeyMismatchError, PaillierOverflowError, ShapeMismatchError
from .keys import Obfuscation, PrivateKey, PublicKey, random_bytes
from .limbs import LIMB_DTYPE, LimbArray, from_mpz, int_from_bytes, to_mpz
from .parallel import CHEAP_MIN_CHUNK, chunk_bounds, concat_limbs, map_chunks
from .serialize import field, pack, unpack

_PACKED_FMT = "fedcrypto.paillier.packed"
MAX_SLOT_BITS = 64


class PackedEncoder:
    """Quantise-and-pack rules for one key; build it identically on both sides."""

    def __init__(
        self,
        public_key: PublicKey,
        *,
        lo: float | NDArray[np.float64] | list[float],
        hi: float | NDArray[np.float64] | list[float],
        precision: float,
        planned_additions: int,
        slot_bits: int | None = None,
        slots_per_ciphertext: int | None = None,
    ) -> None:
        self.public_key = public_key
        try:
            lo_arr, hi_arr = np.broadcast_arrays(
                np.atleast_1d(np.asarray(lo, dtype=np.float64)),
                np.atleast_1d(np.asarray(hi, dtype=np.float64)),
            )
        except ValueError as exc:
            raise ValueError("lo and hi must be scalars or 1-D arrays of one length") from exc
        if lo_arr.ndim != 1:
            raise ValueError("lo and hi must be scalars or 1-D arrays of one length")
        if not (np.all(np.isfinite(lo_arr)) and np.all(np.isfinite(hi_arr))):
            raise ValueError("lo and hi must be finite")
        if np.any(hi_arr < lo_arr):
            raise ValueError("hi must be at least lo")
        # one (lo, hi) per field of a row, or a single pair for every field
        self.lo = lo_arr.copy() if lo_arr.size > 1 else lo_arr[:1].copy()
        self.hi = hi_arr.copy() if hi_arr.size > 1 else hi_arr[:1].copy()
        if not (precision > 0 and math.isfinite(precision)):
            raise ValueError("precision must be positive and finite")
        if planned_additions < 1:
            raise ValueError("planned_additions must be at least 1")
        self.precision = float(precision)
        self.planned_additions = int(planned_additions)
        self.levels = int(np.max(np.ceil((self.hi - self.lo) / self.precision)))
        need = max(1, (self.levels * self.planned_additions).bit_length())
        if slot_bits is None:
            slot_bits = need
        if slot_bits < need:
            raise ValueError(
                f"slot_bits={slot_bits} cannot hold {self.planned_additions} sums of values up to "
                f"{self.levels}; need {need}"
            )
        if slot_bits > MAX_SLOT_BITS:
            raise ValueError(
                f"slots wider than {MAX_SLOT_BITS} bits are not supported (need {slot_bits}); "
                "use a coarser precision or fewer planned additions"
            )
        self.slot_bits = int(slot_bits)
        max_slots = (public_key.n_length - 2) // self.slot_bits
        if slots_per_ciphertext is None:
            slots_per_ciphertext = max_slots
        if not 1 <= slots_per_ciphertext <= max_slots:
            raise ValueError(f"slots_per_ciphertext must be between 1 and {max_slots}")
        self.slots = int(slots_per_ciphertext)

    def _params(self) -> tuple[Any, ...]:
        return (
            int(self.public_key.n),
            self.lo.tolist(),
            self.hi.tolist(),
            self.precision,
            self.planned_additions,
            self.slot_bits,
            self.slots,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PackedEncoder) and self._params() == other._params()

    def __hash__(self) -> int:
        return hash(repr(self._params()))

    def ciphertexts_for(self, width: int) -> int:
        """Ciphertexts needed per row of `width` values."""
        return max(1, -(-width // self.slots))

    def _field_bounds(self, width: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        try:
            return np.broadcast_to(self.lo, (width,)), np.broadcast_to(self.hi, (width,))
        except ValueError as exc:
            raise ShapeMismatchError(
                f"lo/hi of length {self.lo.size} do not fit rows of {width} values"
            ) from exc

    def quantize(self, values: Any) -> NDArray[np.uint64]:
        """Slot integers q = round((x - lo) / precision) for values of shape (..., width)."""
        x = np.asarray(values, dtype=np.float64)
        if x.ndim == 0:
            raise ShapeMismatchError("packing needs at least one axis (the packed one)")
        if not np.all(np.isfinite(x)):
            raise ValueError("cannot pack NaN or infinite values")
        lo, hi = self._field_bounds(x.shape[-1])
        if np.any(x < lo) or np.any(x > hi):
            raise PaillierOverflowError("a value lies outside the packing range [lo, hi]")
        q = np.rint((x - lo) / self.precision)
        return np.clip(q, 0, self.levels).astype(np.uint64)

    def pack(self, q: NDArray[np.uint64]) -> LimbArray:
        """Plaintext residues (limbs), ciphertexts_for(width) per row, row-major."""
        width = q.shape[-1]
        rows = int(np.prod(q.shape[:-1], dtype=np.int64))
        groups = self.ciphertexts_for(width)
        padded = np.zeros((rows, groups * self.slots), dtype="<u8")
        padded[:, :width] = q.reshape(rows, width)
        slots = padded.reshape(rows * groups, self.slots)
        bits = np.unpackbits(
            slots.view(np.uint8).reshape(rows * groups, self.slots, 8), axis=-1, bitorder="little"
        )[:, :, : self.slot_bits]
        limbs = self.public_key.plain_limbs
        flat = np.zeros((rows * groups, limbs * 64), dtype=np.uint8)
        flat[:, : self.slots * self.slot_bits] = bits.reshape(rows * groups, -1)
        packed = np.packbits(flat, axis=-1, bitorder="little")
        return np.ascontiguousarray(packed).view(LIMB_DTYPE).reshape(rows * groups, limbs)

    def unpack(self, residues: LimbArray, terms: NDArray[np.int64], width: int) -> NDArray[Any]:
        """Slot sums -> values (..., width); `terms` is how many values each slot summed."""
        count = residues.shape[0]
        groups = self.ciphertexts_for(width)
        bits = np.unpackbits(
            np.ascontiguousarray(residues).view(np.uint8).reshape(count, -1),
            axis=-1,
            bitorder="little",
        )
        used = self.slots * self.slot_bits
        if np.any(bits[:, used:]):
            raise PaillierOverflowError("a packed plaintext has bits above its last slot")
        slot_bits = np.zeros((count, self.slots, 64), dtype=np.uint8)
        slot_bits[:, :, : self.slot_bits] = bits[:, :used].reshape(count, self.slots, -1)
        sums = np.packbits(slot_bits, axis=-1, bitorder="little").view("<u8")
        sums = sums.reshape(count, self.slots)
        rows = count // groups
        sums = sums.reshape(rows, groups * self.slots)[:, :width]
        t = terms.reshape(rows, 1)
        if np.any(sums > t.astype(np.uint64) * np.uint64(self.levels)):
            raise PaillierOverflowError("a slot sum exceeds what its terms can add up to")
        lo, _ = self._field_bounds(width)
        values = sums.astype(np.float64) * self.precision + t * lo
        return values.reshape(*terms.shape, width)

    def encrypt(
        self,
        key: PublicKey | PrivateKey,
        values: Any,
        *,
        obfuscate: bool = True,
        obfuscation: Obfuscation = "djn",
        executor: Executor | None = None,
        chunk_size: int | None = None,
    ) -> PackedEncryptedVector:
        """Quantise, pack the last axis and encrypt (CRT when given the private key)."""
        public = key if isinstance(key, PublicKey) else key.public_key
        if public != self.public_key:
            raise KeyMismatchError("the key does not match the encoder's key")
        q = self.quantize(values)
        plain = self.pack(q)
        data = key.encrypt_residues(
            plain,
            obfuscate=obfuscate,
            obfuscation=obfuscation,
            executor=executor,
            chunk_size=chunk_size,
        )
        shape = q.shape[:-1]
        return PackedEncryptedVector(
            self, data, shape, q.shape[-1], np.ones(shape, dtype=np.int64), obfuscated=obfuscate
        )

    def decrypt(
        self,
        private_key: PrivateKey,
        packed: PackedEncryptedVector,
        *,
        executor: Executor | None = None,
        chunk_size: int | None = None,
    ) -> NDArray[Any]:
        """Decrypt and unpack to float64 values of shape packed.shape + (width,)."""
        if packed.encoder != self or private_key.public_key != self.public_key:
            raise KeyMismatchError("the packed vector or key does not match this encoder")
        residues = private_key.decrypt_residues(
            packed.data, executor=executor, chunk_size=chunk_size
        )
        return self.unpack(residues, packed.terms, packed.width)


class PackedEncryptedVector:
    """Packed ciphertexts: `shape` rows of `width` values, ciphertexts_for(width) per row."""

    __array_ufunc__ = None

    def __init__(
        self,
        encoder: PackedEncoder,
        data: LimbArray,
        shape: tuple[int, ...],
        width: int,
        terms: NDArray[np.int64],
        *,
        obfuscated: bool = False,
    ) -> None:
        self.encoder = encoder
        self.public_key = encoder.public_key
        self.shape = tuple(int(s) for s in shape)
        self.width = int(width)
        self.groups = encoder.ciphertexts_for(self.width)
        rows = math.prod(self.shape)
        if data.dtype != LIMB_DTYPE or data.shape != (rows * self.groups, self.public_key.limbs):
            raise ValueError("packed data has the wrong dtype or shape")
        self.terms = np.asarray(terms, dtype=np.int64).reshape(self.shape)
        if self.terms.size and (
            self.terms.min() < 0 or self.terms.max() > encoder.planned_additions
        ):
            raise PaillierOverflowError("terms outside [0, planned_additions]")
        self.data: LimbArray = np.ascontiguousarray(data)
        self.obfuscated = obfuscated

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d packed vector")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<PackedEncryptedVector shape={self.shape} width={self.width}>"

    def _rows(self) -> NDArray[np.int64]:
        return np.arange(math.prod(self.shape), dtype=np.int64).reshape(self.shape)

    def _cipher_index(self, rows: NDArray[np.int64]) -> NDArray[np.int64]:
        idx: NDArray[np.int64] = (
            rows[..., None] * self.groups + np.arange(self.groups, dtype=np.int64)
        ).ravel()
        return idx

    def __getitem__(self, key: Any) -> PackedEncryptedVector:
        rows = np.asarray(self._rows()[key])
        return PackedEncryptedVector(
            self.encoder,
            self.data[self._cipher_index(rows)],
            rows.shape,
            self.width,
            self.terms.ravel()[rows.ravel()],
            obfuscated=self.obfuscated,
        )

    def _check_budget(self, terms: NDArray[np.int64]) -> None:
        if terms.size and int(terms.max()) > self.encoder.planned_additions:
            raise PaillierOverflowError(
                f"a slot would sum {int(terms.max())} values; the encoder was planned for at most "
                f"{self.encoder.planned_additions}"
            )

    def add(
        self,
        other: PackedEncryptedVector,
        *,
        executor: Executor | None = None,
        chunk_size: int | None = None,
    ) -> PackedEncryptedVector:
        """Slot-wise sum of two packed vectors of the same shape, width and encoder."""
        if not isinstance(other, PackedEncryptedVector):
            raise TypeError("packed vectors add only to packed vectors")
        if other.encoder != self.encoder:
            raise KeyMismatchError("packed vectors use different encoders or keys")
        if other.shape != self.shape or other.width != self.width:
            raise ShapeMismatchError(
                f"packed shapes {self.shape}x{self.width} and {other.shape}x{other.width} differ"
            )
        terms = self.terms + other.terms
        self._check_budget(terms)
        n2_b = self.public_key.nsquare_bytes
        a, b = self.data, other.data
        parts = map_chunks(
            kernels.k_mul,
            chunk_bounds(a.shape[0], executor, chunk_size, min_chunk=CHEAP_MIN_CHUNK),
            lambda lo, hi: (n2_b, a[lo:hi], b[lo:hi]),
            executor,
        )
        return PackedEncryptedVector(
            self.encoder, concat_limbs(parts, self.public_key.limbs), self.shape, self.width, terms
        )

    def __add__(self, other: PackedEncryptedVector) -> PackedEncryptedVector:
        return self.add(other)

    def sum(
        self,
        axis: int | None = None,
        *,
        executor: Executor | None = None,
        chunk_size: int | None = None,
    ) -> PackedEncryptedVector:
        """Slot-wise sum over all rows (axis=None) or along one row axis."""
        rows = self._rows()
        if axis is None:
            moved = rows.reshape(1, -1)
            out_shape: tuple[int, ...] = ()
            terms = self.terms.sum().reshape(())
        else:
            if not -len(self.shape) <= axis < len(self.shape):
                raise ShapeMismatchError(f"axis {axis} is out of range for shape {self.shape}")
            moved = np.moveaxis(rows, axis, -1)
            out_shape = moved.shape[:-1]
            terms = self.terms.sum(axis=axis)
            moved = moved.reshape(-1, moved.shape[-1])
        self._check_budget(terms)
        length = moved.shape[-1]
        outs = max(1, math.prod(out_shape))
        pk = self.public_key
        if length == 0:
            data = from_mpz([1] * (outs * self.groups), pk.limbs)
        else:
            # for output o and ciphertext group g, the run of its `length` ciphertexts
            order = (
                moved[:, None, :] * self.groups
                + np.arange(self.groups, dtype=np.int64)[None, :, None]
            ).ravel()
            src = self.data[order]
            segs = outs * self.groups
            # chunks of whole runs, each worth at least CHEAP_MIN_CHUNK products
            per_chunk = max(1, CHEAP_MIN_CHUNK // length)
            bounds = chunk_bounds(segs, executor, chunk_size, min_chunk=per_chunk)
            n2_b = pk.nsquare_bytes
            parts = map_chunks(
                kernels.k_prod_segments,
                bounds,
                lambda lo, hi: (
                    n2_b,
                    src[lo * length : hi * length],
                    np.full(hi - lo, length, dtype=np.int64),
                ),
                executor,
            )
            data = concat_limbs(parts, pk.limbs)
        return PackedEncryptedVector(self.encoder, data, out_shape, self.width, terms)

    def obfuscate(
        self,
        *,
        key: PrivateKey | None = None,
        obfuscation: Obfuscation = "djn",
        executor: Executor | None = None,
        chunk_size: int | None = None,
    ) -> PackedEncryptedVector:
        """Fresh randomness for every ciphertext (same slots)."""
        spec = (key or self.public_key).obfuscation_spec(obfuscation)
        rand = random_bytes(self.data.shape[0], kernels.randomness_bytes(spec))
        data = self.data
        parts = map_chunks(
            kernels.k_rerandomize,
            chunk_bounds(data.shape[0], executor, chunk_size, min_chunk=kernels.min_chunk(spec)),
            lambda lo, hi: (spec, data[lo:hi], rand[lo:hi]),
            executor,
        )
        return PackedEncryptedVector(
            self.encoder,
            concat_limbs(parts, self.public_key.limbs),
            self.shape,
            self.width,
            self.terms,
            obfuscated=True,
        )

    def to_bytes(self) -> bytes:
        enc = self.encoder
        header = {
            "n": self.public_key.n_bytes,
            "lo": enc.lo.tolist(),
            "hi": enc.hi.tolist(),
            "precision": enc.precision,
            "planned_additions": enc.planned_additions,
            "slot_bits": enc.slot_bits,
            "slots": enc.slots,
            "shape": list(self.shape),
            "width": self.width,
            "terms": self.terms.astype("<i8").tobytes(),
            "count": self.data.shape[0],
            "limbs": self.public_key.limbs,
        }
        return pack(_PACKED_FMT, header, self.data.tobytes())

    @classmethod
    def from_bytes(
        cls, raw: bytes | bytearray | memoryview, encoder: PackedEncoder, *, validate: bool = True
    ) -> PackedEncryptedVector:
        """Parse bytes from `to_bytes`; the receiver names the encoder (and key) it expects."""
        header, payload = unpack(raw, _PACKED_FMT)
        if int_from_bytes(field(header, "n", bytes)) != encoder.public_key.n:
            raise KeyMismatchError("the bytes hold ciphertexts under a different key")
        params = (
            [float(v) for v in field(header, "lo", list)],
            [float(v) for v in field(header, "hi", list)],
            float(field(header, "precision", (float, int))),
            field(header, "planned_additions", int),
            field(header, "slot_bits", int),
            field(header, "slots", int),
        )
        # the encoder's parameters after n (checked above, as a key mismatch)
        if params != encoder._params()[1:]:
            raise ValueError("the packed bytes were made with a different encoder")
        shape = tuple(field(header, "shape", list))
        width = field(header, "width", int)
        count = field(header, "count", int)
        limbs = field(header, "limbs", int)
        rows = math.prod(shape)
        if count != rows * encoder.ciphertexts_for(width) or limbs != encoder.public_key.limbs:
            raise ValueError("header count/limbs do not match shape, width and key")
        if len(payload) != count * limbs * 8:
            raise ValueError("payload length does not match the header")
        terms_raw = field(header, "terms", bytes)
        if len(terms_raw) != rows * 8:
            raise ValueError("terms do not match the shape")
        terms = np.frombuffer(terms_raw, dtype="<i8").astype(np.int64).reshape(shape)
        data = np.frombuffer(payload, dtype=LIMB_DTYPE).reshape(count, limbs).copy()
        vec = cls(encoder, data, shape, width, terms)
        if validate:
            n_b = encoder.public_key.n_bytes
            kernels.k_validate(n_b, data)
        return vec

    def ciphertexts(self) -> list[int]:
        """The raw ciphertexts as Python ints (for inspection and tests)."""
        return [int(c) for c in to_mpz(self.data)]
