"""ECDH private set intersection over Curve25519 (two parties, semi-honest).

Used to align sample ids between the parties of vertical FL before training: each
party learns which of its own ids the other party also holds, and the size of the
other party's set, nothing else.

Construction (Meadows 1986 / Huberman-Franklin-Hogg 1999, "DH-PSI"):
  H(id)       hash of the id onto a Curve25519 u-coordinate (see `hash_to_point`)
  X25519(a,P) scalar multiplication of P by the clamped scalar a on the u-line
Blinding commutes: X25519(a, X25519(b, P)) == X25519(b, X25519(a, P)) == u([ab]P),
because clamping only fixes bits of each scalar and scalar multiplication on the
Montgomery u-line is well defined on the curve and on its twist (both of which are
secure: Curve25519 is twist-secure), so every hashed u is a usable input.

Protocol (each side is a `PsiParty`; A holds X, B holds Y; a, b fresh secrets):
  1. A -> B: MA = sort{ H(x)^a : x in X }   (A.blind)
  2. B -> A: MB = sort{ H(y)^b : y in Y }   (B.blind)
  3. A -> B: A.reblind(MB) = [ m^a for m in MB ]  (same order as MB)
  4. B -> A: B.reblind(MA) = [ m^b for m in MA ]  (same order as MA)
  A: A.intersect(own_double_blinded=msg 4, peer_double_blinded=msg 3)
  B: B.intersect(own_double_blinded=msg 3, peer_double_blinded=msg 4)
Messages 3 and 4 are both sent and kept: a party's reblind output is its peer's
"own" double-blinded list and its own "peer" list.

What each message reveals (random-oracle model, DDH on Curve25519):
  - MA/MB: the set size; the values are pseudorandom and sorted, so their order
    says nothing about the input order.
  - msg 3/4: H(.)^{ab} for every element of the receiver's own set, aligned with
    its own list, so the receiver learns which of its ids meet the other set; the
    values for non-matching peer ids are pseudorandom.
Semi-honest only: a malicious party can deviate (e.g. reblind with a different
secret, or include ids it does not hold) and nothing here detects it.

Ids: str, bytes or int (numpy scalars of these kinds too). They are compared by a
canonical byte form: str as UTF-8, int as its decimal digits, bytes as is, so
12, "12" and b"12" are the same id; bool and float are refused. Duplicates (by
canonical form) are dropped before blinding, keeping the first occurrence, so the
peer learns the number of distinct ids; the intersection lists each id once.

A `PsiParty` is single-use: a second `blind` raises, because reusing the secret
across runs would let a peer link the blinded values of two runs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

__all__ = [
    "POINT_SIZE",
    "PsiError",
    "PsiParty",
    "blind_points",
    "canonical_id",
    "hash_to_point",
    "hash_to_points",
]

POINT_SIZE = 32
SECRET_SIZE = 32
DEFAULT_CHUNK = 20_000

# Domain separation for the hash onto the curve; the trailing byte is a retry
# counter so the (negligibly rare) rejected hashes get a fresh try.
_HASH_DOMAIN = b"fedmq/psi/v1/hash-to-curve25519\x00"

_P25519 = 2**255 - 19
# u-coordinates of the points of order dividing 8 on Curve25519 and its twist,
# in canonical form (RFC 7748; libsodium's blocklist). A clamped scalar is a
# multiple of 8, so X25519 maps each to the all-zero output, which cryptography
# reports as an error. Every other u has a large-prime-order component and a
# clamped scalar is nonzero modulo that prime, so its result is never zero.
_LOW_ORDER_U = frozenset(
    v.to_bytes(32, "little")
    for v in (
        0,
        1,
        _P25519 - 1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
    )
)

Id = str | bytes | int


class PsiError(ValueError):
    """Bad PSI input, an out-of-order protocol step, or a malformed peer message."""


def canonical_id(value: object) -> bytes:
    """The byte form ids are compared by: str as UTF-8, int as decimal, bytes as is."""
    if isinstance(value, bool | np.bool_):
        raise PsiError("bool is not a valid id (True would equal 1)")
    if isinstance(value, bytes):  # includes numpy.bytes_
        return bytes(value)
    if isinstance(value, str):  # includes numpy.str_
        return value.encode("utf-8")
    if isinstance(value, int | np.integer):
        return str(int(value)).encode("ascii")
    raise PsiError(f"ids must be str, bytes or int, got {type(value).__name__}")


def hash_to_point(value: object) -> bytes:
    """Hash an id to a canonical Curve25519 u-coordinate (32 bytes, little-endian).

    SHA-512 over a domain tag and the canonical id, truncated to 32 bytes, the top
    bit cleared (X25519 ignores it). Rejected and rehashed with the next counter:
    non-canonical values (>= 2^255 - 19, probability 2^-250) and the low-order
    points above, so every accepted u blinds to a nonzero value.
    """
    data = canonical_id(value)
    for counter in range(256):
        digest = bytearray(hashlib.sha512(_HASH_DOMAIN + bytes([counter]) + data).digest()[:32])
        digest[31] &= 0x7F
        u = bytes(digest)
        # Only u with top byte 0x7f can be >= p; skip the int conversion otherwise.
        if digest[31] == 0x7F and int.from_bytes(u, "little") >= _P25519:
            continue
        if u in _LOW_ORDER_U:
            continue
        return u
    raise AssertionError("unreachable: 256 consecutive rejected hashes")  # pragma: no cover


def hash_to_points(ids: Sequence[object]) -> list[bytes]:
    return [hash_to_point(v) for v in ids]


def blind_points(secret: bytes, points: Sequence[bytes]) -> list[bytes]:
    """X25519(secret, u) for each u, in order. A pure, picklable batch step.

    Raises PsiError for a malformed point (wrong length) or a low-order point
    (all-zero result), which an honest peer never sends.
    """
    key = X25519PrivateKey.from_private_bytes(secret)
    exchange = key.exchange
    load = X25519PublicKey.from_public_bytes
    out: list[bytes] = []
    append = out.append
    for i, point in enumerate(points):
        if type(point) is not bytes or len(point) != POINT_SIZE:
            raise PsiError(f"point {i} is not {POINT_SIZE} bytes")
        try:
            append(exchange(load(point)))
        except ValueError:
            raise PsiError(f"point {i} is a low-order point (blinds to zero)") from None
    return out


def _hash_and_blind(secret: bytes, ids: Sequence[object]) -> list[bytes]:
    return blind_points(secret, hash_to_points(ids))


def _chunked(
    fn: Callable[[bytes, Sequence[Any]], list[bytes]],
    secret: bytes,
    items: Sequence[Any],
    executor: Executor | None,
    chunk_size: int,
) -> list[bytes]:
    if executor is None or len(items) <= chunk_size:
        return fn(secret, items)
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    out: list[bytes] = []
    for part in executor.map(fn, [secret] * len(chunks), chunks):
        out.extend(part)
    return out


def _as_id_list(ids: Iterable[object] | np.ndarray) -> list[object]:
    if isinstance(ids, str | bytes):
        raise PsiError("ids must be a collection of ids, not a single str/bytes")
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1:
            raise PsiError(f"ids array must be 1-D, got shape {ids.shape}")
        if ids.dtype.kind not in "iuUSO":
            raise PsiError(f"ids array must hold str, bytes or ints, got dtype {ids.dtype}")
        return list(ids.tolist())
    return list(ids)


class PsiParty:
    """One side of one ECDH-PSI run. See the module docstring for the message flow.

    `executor` (optional) spreads the X25519 work over processes or threads in
    chunks of `chunk_size`; the secret travels to the workers with each chunk, so
    only pass an executor that runs on this party's own machine.
    """

    def __init__(
        self,
        secret: bytes | None = None,
        *,
        executor: Executor | None = None,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> None:
        if secret is None:
            secret = os.urandom(SECRET_SIZE)
        elif not isinstance(secret, bytes) or len(secret) != SECRET_SIZE:
            raise PsiError(f"secret must be {SECRET_SIZE} bytes")
        if chunk_size < 1:
            raise PsiError("chunk_size must be positive")
        self._secret = secret
        self._executor = executor
        self._chunk_size = chunk_size
        # Filled by blind(): own distinct ids with their input positions, in the
        # order of the sorted blinded values sent to the peer.
        self._ids: list[object] | None = None
        self._positions: list[int] | None = None
        self._blinded_count = 0
        self._done = False

    @property
    def set_size(self) -> int:
        """Number of distinct own ids (what the peer learns); 0 before blind()."""
        return self._blinded_count

    def blind(self, ids: Iterable[object] | np.ndarray) -> list[bytes]:
        """Message 1: own ids hashed and blinded, deduplicated, sorted by value."""
        if self._ids is not None:
            raise PsiError("this PsiParty already blinded a set; use a fresh one per run")
        id_list = _as_id_list(ids)
        seen: dict[bytes, int] = {}
        for position, value in enumerate(id_list):
            seen.setdefault(canonical_id(value), position)
        positions = list(seen.values())
        distinct = [id_list[p] for p in positions]
        blinded = _chunked(
            _hash_and_blind, self._secret, distinct, self._executor, self._chunk_size
        )
        # Sorting by the pseudorandom blinded value hides the input order; the
        # permutation stays here so intersect() can map results back to ids.
        order = sorted(range(len(blinded)), key=blinded.__getitem__)
        self._ids = [distinct[i] for i in order]
        self._positions = [positions[i] for i in order]
        self._blinded_count = len(blinded)
        return [blinded[i] for i in order]

    def reblind(self, peer_blinded: Sequence[bytes]) -> list[bytes]:
        """Messages 3/4: the peer's blinded values blinded again, in received order."""
        if self._ids is None:
            raise PsiError("call blind() before reblind()")
        peer = list(peer_blinded)
        if len(set(peer)) != len(peer):
            raise PsiError("peer's blinded set has repeated values (not deduplicated)")
        return _chunked(blind_points, self._secret, peer, self._executor, self._chunk_size)

    def intersect_positions(
        self, own_double_blinded: Sequence[bytes], peer_double_blinded: Iterable[bytes]
    ) -> np.ndarray:
        """Input positions (first occurrence) of own ids in the intersection, ascending."""
        if self._ids is None or self._positions is None:
            raise PsiError("call blind() before intersect()")
        if self._done:
            raise PsiError("this PsiParty already computed its intersection")
        own = list(own_double_blinded)
        if len(own) != len(self._ids):
            raise PsiError(
                f"own double-blinded list has {len(own)} values, expected {len(self._ids)}"
                " (one per value this party sent, in the same order)"
            )
        peer = set(peer_double_blinded)
        hits = [self._positions[i] for i, value in enumerate(own) if value in peer]
        self._done = True
        return np.array(sorted(hits), dtype=np.int64)

    def intersect(
        self, own_double_blinded: Sequence[bytes], peer_double_blinded: Iterable[bytes]
    ) -> list[Any]:
        """Own ids (as given, first occurrence) that the peer also holds, in input order."""
        positions = self.intersect_positions(own_double_blinded, peer_double_blinded)
        assert self._positions is not None and self._ids is not None
        by_position = dict(zip(self._positions, self._ids, strict=True))
        return [by_position[int(p)] for p in positions]
