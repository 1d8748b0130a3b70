"""Dropout-tolerant secure aggregation for horizontal FL (Bonawitz et al., CCS 2017).

The server learns the sum of the clients' weight vectors and nothing else about any
single vector; the sum is still recovered when clients drop out, as long as at least
`threshold` clients stay to the end. This is the semi-honest protocol of "Practical
Secure Aggregation for Privacy-Preserving Machine Learning" (section 4, Figure 4,
rounds 0-2 and 4), as pure state machines: each method takes the previous round's
message and returns the next one; transport, timeouts and deciding who dropped are
the caller's job (the server fixes each round's set when the caller asks for the
next message).

Rounds and messages (u, v are client ids in 1..num_clients; all sums mod 2^k):
  0 AdvertiseKeys   client -> server  AdvertiseKeys(c_u^PK, s_u^PK), two fresh X25519
                                      pairs: c for share encryption, s for masks
                    server -> clients KeyDirectory of U1 (those heard from; >= t)
  1 ShareKeys       client -> server  EncryptedShares: for each v in U1 \\ {u},
                                      AES-GCM under HKDF(X25519(c_u, c_v)) of
                                      u || v || share_v(s_u^SK) || share_v(b_u)
                                      (t-of-|U1| Shamir shares, shamir.py)
                    server -> client  RoutedShares: e_{v,u} for v in U2 \\ {u}
  2 MaskedInput     client -> server  y_u = x_u + PRG(b_u)
                                            + sum_{v in U2, v < u} PRG(s_{u,v})
                                            - sum_{v in U2, v > u} PRG(s_{u,v})
                                      s_{u,v} = X25519(s_u, s_v) = X25519(s_v, s_u)
                    server -> clients UnmaskRequest(survivors = U3, dropped = U2 \\ U3)
  4 Unmasking       client -> server  shares of b_v for v in U3, of s_v^SK for v in U2 \\ U3
                    server            sum = sum_{U3} y_u - sum_{U3} PRG(b_u)
                                            -/+ PRG(s_{u,v}) for u in U3, v dropped
(Round 3, ConsistencyCheck, exists only in the paper's actively secure variant.)

Security assumptions, and what is enforced:
  - Semi-honest server and clients; up to t - 1 clients may collude with the server.
    The server sees only y_u (uniform mod 2^k given the masks) and the shares it asks
    for in round 4.
  - A client answers one unmasking request, and refuses one that names a client as
    both survivor and dropped, omits or adds clients, lists itself as dropped or has
    fewer than t survivors. Each honest client thus reveals, per client v, the share
    of b_v or of s_v^SK, never both. A server that tells different clients different
    survivor lists (equivocation) could still collect t shares of each kind only if
    2t <= n; `SecAggConfig` therefore requires t > n/2. Against an actively malicious
    server the paper adds signatures and a consistency round; not implemented here.
  - PRG: AES-256-CTR, zero nonce, keyed by HKDF-SHA256 of a 32-byte seed; each key
    expands exactly one stream. Keys and ciphertexts are bound (HKDF info / GCM
    associated data) to the session and to every config parameter, so messages from
    another session or config fail to decrypt.
  - Quantization (FixedPoint): values are clipped to [-clip, clip], scaled by 2^f
    and rounded; f is the largest with num_clients * (clip * 2^f + 1/2) < 2^(k-1),
    so the sum never wraps. Per coordinate the recovered sum differs from the sum of
    the clipped inputs by at most |U3| * (2^-(f+1) + clip * 2^-52), the second term
    being float64 rounding of the result, which matters only for k = 64
    (`FixedPoint.sum_error_bound`). With the defaults (k = 32, clip = 1) and 10
    clients, f = 27: about 3.7e-8 per coordinate.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedcrypto.shamir import (
    SHARE_VALUE_SIZE,
    ShamirError,
    Share,
    combine_bytes,
    split_bytes,
)

__all__ = [
    "AdvertiseKeys",
    "AggregationResult",
    "ClientState",
    "EncryptedShares",
    "FixedPoint",
    "KeyDirectory",
    "MaskedInput",
    "NotEnoughClients",
    "RoutedShares",
    "SecAggClient",
    "SecAggConfig",
    "SecAggError",
    "SecAggServer",
    "UnmaskRefused",
    "UnmaskRequest",
    "UnmaskResponse",
    "default_threshold",
    "expand_mask",
]

KEY_SIZE = 32
_NONCE_SIZE = 12
_ID = struct.Struct(">I")
# Plaintext of one encrypted share message: sender id, recipient id, then the
# recipient's Shamir share values (33 bytes each) of the sender's s^SK and b.
_SHARE_PLAINTEXT_SIZE = 2 * _ID.size + 2 * SHARE_VALUE_SIZE

UIntArray = npt.NDArray[Any]


class SecAggError(ValueError):
    """A secure-aggregation message or step is invalid."""


class NotEnoughClients(SecAggError):
    """Fewer than `threshold` clients took part in a round: the sum cannot be recovered."""


class UnmaskRefused(SecAggError):
    """A client refuses an unmasking request that could expose an individual input."""


def default_threshold(num_clients: int) -> int:
    """n - floor(n/3): tolerates a third of the clients dropping; always > n/2."""
    return num_clients - num_clients // 3


# ---------------------------------------------------------------- quantization


@dataclass(frozen=True)
class FixedPoint:
    """Fixed-point encoding of floats modulo 2^k for sums of up to `max_summands` vectors."""

    modulus_bits: int = 32
    clip: float = 1.0
    max_summands: int = 1
    frac_bits: int = field(init=False)

    def __post_init__(self) -> None:
        if self.modulus_bits not in (32, 64):
            raise SecAggError(f"modulus_bits must be 32 or 64, got {self.modulus_bits}")
        if not (np.isfinite(self.clip) and self.clip > 0):
            raise SecAggError(f"clip must be a positive finite number, got {self.clip}")
        if self.max_summands < 1:
            raise SecAggError("max_summands must be at least 1")
        limit = 2 ** (self.modulus_bits - 1)
        clip = Fraction(self.clip)

        def fits(f: int) -> bool:
            return bool(self.max_summands * (clip * (1 << f) + Fraction(1, 2)) < limit)

        f = self.modulus_bits - 1
        while f >= 0 and not fits(f):
            f -= 1
        if f < 0:
            raise SecAggError(
                f"clip {self.clip} x {self.max_summands} clients does not fit in "
                f"2^{self.modulus_bits}; use a smaller clip or modulus_bits=64"
            )
        object.__setattr__(self, "frac_bits", f)

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(np.uint32 if self.modulus_bits == 32 else np.uint64)

    @property
    def resolution(self) -> float:
        """Quantization step 2^-f."""
        return float(2.0**-self.frac_bits)

    def sum_error_bound(self, summands: int) -> float:
        """Max per-coordinate error of a dequantized sum of `summands` clipped inputs.

        Rounding each input to a multiple of 2^-f costs at most 2^-(f+1); turning the
        integer sum into a float64 costs at most |sum| * 2^-53 <= summands * clip * 2^-53
        (counted twice as margin; it only matters for k = 64).
        """
        return summands * (2.0 ** -(self.frac_bits + 1) + self.clip * 2.0**-52)

    def quantize(self, values: npt.ArrayLike) -> UIntArray:
        x = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise SecAggError("input contains NaN or infinite values")
        scaled = np.rint(np.clip(x, -self.clip, self.clip) * 2.0**self.frac_bits)
        # int64 -> unsigned reinterprets negatives as 2^64 - |q|; narrowing to
        # uint32 keeps the low 32 bits, i.e. reduces mod 2^32: two's complement.
        return scaled.astype(np.int64).view(np.uint64).astype(self.dtype)

    def dequantize(self, encoded: UIntArray) -> npt.NDArray[np.float64]:
        q = np.asarray(encoded)
        if q.dtype != self.dtype:
            raise SecAggError(f"expected dtype {self.dtype}, got {q.dtype}")
        signed = q.view(np.int32 if self.modulus_bits == 32 else np.int64)
        return signed.astype(np.float64) / 2.0**self.frac_bits


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SecAggConfig:
    """Parameters all parties of one aggregation agree on (the server and every client).

    `session` must be unique per aggregation (e.g. job id + round): keys and
    ciphertexts are bound to it. `threshold` defaults to `default_threshold`.
    """

    session: bytes
    num_clients: int
    vector_length: int
    threshold: int | None = None
    modulus_bits: int = 32
    clip: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.session, bytes) or not 0 < len(self.session) <= 0xFFFF:
            raise SecAggError("session must be 1..65535 bytes")
        if self.num_clients < 2:
            raise SecAggError(f"num_clients must be at least 2, got {self.num_clients}")
        if self.vector_length < 1:
            raise SecAggError(f"vector_length must be positive, got {self.vector_length}")
        t = self.t
        if not 2 <= t <= self.num_clients:
            raise SecAggError(f"threshold must be in [2, {self.num_clients}], got {t}")
        if 2 * t <= self.num_clients:
            raise SecAggError(
                f"threshold {t} must exceed num_clients/2 = {self.num_clients / 2}: otherwise a "
                "server that equivocates about who dropped can unmask single inputs"
            )
        self.fixed_point  # noqa: B018 - validates modulus_bits and clip now

    @property
    def t(self) -> int:
        return default_threshold(self.num_clients) if self.threshold is None else self.threshold

    @property
    def fixed_point(self) -> FixedPoint:
        return FixedPoint(self.modulus_bits, self.clip, self.num_clients)

    def context(self) -> bytes:
        """Byte string binding keys and ciphertexts to this session and config."""
        return b"".join(
            [
                b"fedmq/secagg/v1",
                struct.pack(">H", len(self.session)),
                self.session,
                struct.pack(
                    ">IIQBd",
                    self.num_clients,
                    self.t,
                    self.vector_length,
                    self.modulus_bits,
                    self.clip,
                ),
            ]
        )


# ---------------------------------------------------------------- messages


@dataclass(frozen=True)
class AdvertiseKeys:
    client_id: int
    c_public: bytes  # X25519, for encrypting shares
    s_public: bytes  # X25519, for pairwise masks


@dataclass(frozen=True)
class KeyDirectory:
    keys: Mapping[int, tuple[bytes, bytes]]  # U1: client id -> (c_public, s_public)


@dataclass(frozen=True)
class EncryptedShares:
    sender: int
    ciphertexts: Mapping[int, bytes]  # recipient id -> nonce || AES-GCM ciphertext


@dataclass(frozen=True)
class RoutedShares:
    recipient: int
    ciphertexts: Mapping[int, bytes]  # sender id -> e_{sender, recipient}; senders = U2 \ {me}


@dataclass(frozen=True)
class MaskedInput:
    sender: int
    masked: UIntArray


@dataclass(frozen=True)
class UnmaskRequest:
    survivors: tuple[int, ...]  # U3: sent a masked input; reveal shares of their b
    dropped: tuple[int, ...]  # U2 \ U3: reveal shares of their s^SK


@dataclass(frozen=True)
class UnmaskResponse:
    sender: int
    self_mask_shares: Mapping[int, bytes]  # v in survivors -> share of b_v (33 bytes)
    mask_key_shares: Mapping[int, bytes]  # v in dropped -> share of s_v^SK (33 bytes)


@dataclass(frozen=True)
class AggregationResult:
    sum: npt.NDArray[np.float64]
    quantized_sum: UIntArray
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    max_abs_error: float  # per coordinate, against the sum of the clipped inputs


# ---------------------------------------------------------------- primitives


def _derive(secret: bytes, label: bytes, context: bytes, a: int, b: int) -> bytes:
    # Pair keys use the sorted ids so both ends derive the same key.
    lo, hi = sorted((a, b))
    info = label + context + _ID.pack(lo) + _ID.pack(hi)
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=info).derive(secret)


def expand_mask(seed: bytes, length: int, dtype: npt.DTypeLike) -> UIntArray:
    """`length` pseudorandom integers of `dtype` from a 32-byte key (AES-256-CTR, zero IV)."""
    if len(seed) != KEY_SIZE:
        raise SecAggError(f"PRG key must be {KEY_SIZE} bytes")
    dt = np.dtype(dtype)
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    stream = encryptor.update(bytes(length * dt.itemsize)) + encryptor.finalize()
    return np.frombuffer(stream, dtype=dt.newbyteorder("<")).astype(dt)


def _pair_mask(
    s_private: X25519PrivateKey, peer_public: bytes, me: int, peer: int, config: SecAggConfig
) -> UIntArray:
    secret = s_private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    key = _derive(secret, b"pairwise-mask", config.context(), me, peer)
    return expand_mask(key, config.vector_length, config.fixed_point.dtype)


def _self_mask(seed: bytes, config: SecAggConfig) -> UIntArray:
    key = _derive(seed, b"self-mask", config.context(), 0, 0)
    return expand_mask(key, config.vector_length, config.fixed_point.dtype)


def _share_aad(config: SecAggConfig, sender: int, recipient: int) -> bytes:
    return b"share" + config.context() + _ID.pack(sender) + _ID.pack(recipient)


def _check_public_key(raw: object, what: str) -> bytes:
    if not isinstance(raw, bytes) or len(raw) != KEY_SIZE:
        raise SecAggError(f"{what} must be {KEY_SIZE} bytes")
    return raw


def _check_id(client_id: object, config: SecAggConfig, what: str = "client id") -> int:
    if isinstance(client_id, bool) or not isinstance(client_id, int | np.integer):
        raise SecAggError(f"{what} must be an int, got {type(client_id).__name__}")
    if not 1 <= int(client_id) <= config.num_clients:
        raise SecAggError(f"{what} {client_id} is outside 1..{config.num_clients}")
    return int(client_id)


def _need(count: int, config: SecAggConfig, what: str) -> None:
    if count < config.t:
        raise NotEnoughClients(f"{what}: {count} clients, threshold is {config.t}")


# ---------------------------------------------------------------- client


@dataclass(frozen=True)
class ClientState:
    """A client's resumable state after advertise_keys ("advertised") or share_keys ("shared").

    A caller that must re-send a round's messages byte for byte after a crash saves this
    before the message that depends on it leaves, and rebuilds the client with
    `SecAggClient.from_state`. What comes later in a round (masked input, unmasking answer)
    is a deterministic function of this state and the messages received.

    `secret` must be kept confidential (seal it before storing it). Byte layout:
      c_u^SK (32) || s_u^SK (32) || self-mask seed b_u (32)
      [shared only] || y of this client's own share of s_u^SK (33) || y of its share of b_u (33)
    `directory` is the key directory the client accepted (empty while advertised); it holds
    only public keys.
    """

    client_id: int
    phase: str
    secret: bytes
    directory: Mapping[int, tuple[bytes, bytes]] = field(default_factory=dict)

    PHASES = ("advertised", "shared")

    def secret_size(self) -> int:
        """The length `secret` must have in this state's phase."""
        return 3 * KEY_SIZE + (2 * SHARE_VALUE_SIZE if self.phase == "shared" else 0)


class SecAggClient:
    """One client's side of one aggregation. Call the four methods in order, once each."""

    def __init__(self, client_id: int, config: SecAggConfig) -> None:
        self.config = config
        self.client_id = _check_id(client_id, config)
        self._phase = "new"
        self._c_key = X25519PrivateKey.generate()
        self._s_key = X25519PrivateKey.generate()
        self._self_seed = os.urandom(KEY_SIZE)
        self._directory: dict[int, tuple[bytes, bytes]] = {}
        # Shares this client holds: owner v -> (share of s_v^SK, share of b_v).
        self._held: dict[int, tuple[Share, Share]] = {}
        self._u2: frozenset[int] = frozenset()

    def export_state(self) -> ClientState:
        """This client's state after advertise_keys or share_keys (ClientState), to resume
        from; refused in any other phase (later phases follow deterministically)."""
        if self._phase not in ClientState.PHASES:
            raise SecAggError(
                f"a client's state is exported after its keys or shares, not in {self._phase!r}"
            )
        secret = self._c_key.private_bytes_raw() + self._s_key.private_bytes_raw()
        secret += self._self_seed
        if self._phase == "advertised":
            return ClientState(self.client_id, self._phase, secret)
        s_share, b_share = self._held[self.client_id]
        secret += s_share.y_bytes() + b_share.y_bytes()
        return ClientState(self.client_id, self._phase, secret, dict(self._directory))

    @classmethod
    def from_state(cls, state: ClientState, config: SecAggConfig) -> SecAggClient:
        """The client `export_state` returned, in the same phase, for the same config."""
        if state.phase not in ClientState.PHASES:
            raise SecAggError(f"a client state in phase {state.phase!r} cannot be restored")
        if len(state.secret) != state.secret_size():
            raise SecAggError(
                f"a client state in phase {state.phase!r} has {len(state.secret)} secret "
                f"bytes, expected {state.secret_size()}"
            )
        client = cls(state.client_id, config)
        secret = state.secret
        client._c_key = X25519PrivateKey.from_private_bytes(secret[:KEY_SIZE])
        client._s_key = X25519PrivateKey.from_private_bytes(secret[KEY_SIZE : 2 * KEY_SIZE])
        client._self_seed = secret[2 * KEY_SIZE : 3 * KEY_SIZE]
        client._phase = state.phase
        if state.phase == "advertised":
            return client
        me = client.client_id
        own = (
            client._c_key.public_key().public_bytes_raw(),
            client._s_key.public_key().public_bytes_raw(),
        )
        directory = {
            _check_id(v, config, "directory id"): (bytes(c), bytes(s))
            for v, (c, s) in state.directory.items()
        }
        if directory.get(me) != own:
            raise SecAggError("a restored key directory does not list this client's own keys")
        at = 3 * KEY_SIZE
        client._held[me] = (
            Share.from_y_bytes(me, secret[at : at + SHARE_VALUE_SIZE]),
            Share.from_y_bytes(me, secret[at + SHARE_VALUE_SIZE :]),
        )
        client._directory = directory
        return client

    def own_keys(self) -> AdvertiseKeys:
        """The AdvertiseKeys this client sends in round 0 (also after it was restored from a
        state exported past that step): a function of its private keys."""
        return AdvertiseKeys(
            self.client_id,
            self._c_key.public_key().public_bytes_raw(),
            self._s_key.public_key().public_bytes_raw(),
        )

    def derive_secret(self, label: bytes) -> bytes:
        """A 32-byte key for the caller's own use in this session (e.g. seeding noise that must
        be unpredictable to the server and the same after a restore): HKDF of c_u^SK, which
        never leaves the client (only s_u^SK and b_u are ever Shamir-shared), bound to `label`
        and to the session and config."""
        if not label:
            raise SecAggError("derive_secret needs a label naming what the key is for")
        info = b"caller-secret/" + label + b"/" + self.config.context() + _ID.pack(self.client_id)
        hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=info)
        return hkdf.derive(self._c_key.private_bytes_raw())

    def _step(self, expected: str, after: str, name: str) -> None:
        if self._phase != expected:
            raise SecAggError(f"{name}() called in phase {self._phase!r}, needs {expected!r}")
        self._phase = after

    def advertise_keys(self) -> AdvertiseKeys:
        """Round 0: the two public keys."""
        self._step("new", "advertised", "advertise_keys")
        return AdvertiseKeys(
            self.client_id,
            self._c_key.public_key().public_bytes_raw(),
            self._s_key.public_key().public_bytes_raw(),
        )

    def share_keys(self, directory: KeyDirectory) -> EncryptedShares:
        """Round 1: Shamir-share s^SK and the self-mask seed to every client in U1."""
        self._step("advertised", "shared", "share_keys")
        config, me = self.config, self.client_id
        keys = {_check_id(v, config, "directory id"): pair for v, pair in directory.keys.items()}
        own = (
            self._c_key.public_key().public_bytes_raw(),
            self._s_key.public_key().public_bytes_raw(),
        )
        if keys.get(me) != own:
            raise SecAggError("key directory does not list this client with its own keys")
        _need(len(keys), config, "key directory")
        all_keys = [_check_public_key(k, "directory key") for pair in keys.values() for k in pair]
        if len(set(all_keys)) != len(all_keys):
            raise SecAggError("key directory repeats a public key")
        self._directory = keys

        xs = sorted(keys)
        s_shares = split_bytes(self._s_key.private_bytes_raw(), config.t, xs)
        b_shares = split_bytes(self._self_seed, config.t, xs)
        ciphertexts: dict[int, bytes] = {}
        for s_share, b_share in zip(s_shares, b_shares, strict=True):
            v = s_share.x
            if v == me:
                self._held[me] = (s_share, b_share)
                continue
            key = self._share_key(v)
            plaintext = _ID.pack(me) + _ID.pack(v) + s_share.y_bytes() + b_share.y_bytes()
            nonce = os.urandom(_NONCE_SIZE)
            ciphertexts[v] = nonce + AESGCM(key).encrypt(
                nonce, plaintext, _share_aad(config, me, v)
            )
        return EncryptedShares(me, ciphertexts)

    def _share_key(self, peer: int) -> bytes:
        c_peer = X25519PublicKey.from_public_bytes(self._directory[peer][0])
        secret = self._c_key.exchange(c_peer)
        return _derive(secret, b"share-encryption", self.config.context(), self.client_id, peer)

    def masked_input(self, routed: RoutedShares, values: npt.ArrayLike) -> MaskedInput:
        """Round 2: decrypt the shares addressed to this client, send the masked input."""
        if self._phase != "shared":
            raise SecAggError(f"masked_input() called in phase {self._phase!r}, needs 'shared'")
        config, me = self.config, self.client_id
        x = np.asarray(values, dtype=np.float64)
        if x.shape != (config.vector_length,):
            raise SecAggError(f"input has shape {x.shape}, expected ({config.vector_length},)")
        encoded = config.fixed_point.quantize(x)  # validates before any state changes
        if routed.recipient != me:
            raise SecAggError(f"shares routed to client {routed.recipient}, this is {me}")
        senders = set(routed.ciphertexts)
        unknown = (senders - set(self._directory)) | (senders & {me})
        if unknown:
            raise SecAggError(f"shares from clients not in U1 \\ {{me}}: {sorted(unknown)}")
        u2 = frozenset(senders | {me})
        _need(len(u2), config, "clients that shared keys (U2)")
        for v, blob in routed.ciphertexts.items():
            self._held[v] = self._open_share(v, blob)
        self._u2 = u2
        self._phase = "masked"

        dtype = config.fixed_point.dtype
        y = encoded + _self_mask(self._self_seed, config)
        for v in sorted(u2 - {me}):
            mask = _pair_mask(self._s_key, self._directory[v][1], me, v, config)
            if v < me:
                y += mask
            else:
                y -= mask
        return MaskedInput(me, y.astype(dtype, copy=False))

    def _open_share(self, sender: int, blob: bytes) -> tuple[Share, Share]:
        me = self.client_id
        if not isinstance(blob, bytes) or len(blob) != _NONCE_SIZE + _SHARE_PLAINTEXT_SIZE + 16:
            raise SecAggError(f"share ciphertext from client {sender} has the wrong size")
        try:
            plaintext = AESGCM(self._share_key(sender)).decrypt(
                blob[:_NONCE_SIZE], blob[_NONCE_SIZE:], _share_aad(self.config, sender, me)
            )
        except InvalidTag:
            raise SecAggError(
                f"share from client {sender} does not decrypt: tampered, misrouted, "
                "or made for another session/config"
            ) from None
        (u,) = _ID.unpack_from(plaintext, 0)
        (v,) = _ID.unpack_from(plaintext, _ID.size)
        if (u, v) != (sender, me):
            raise SecAggError(f"share from client {sender} names the pair ({u}, {v})")
        offset = 2 * _ID.size
        s_share = Share.from_y_bytes(me, plaintext[offset : offset + SHARE_VALUE_SIZE])
        b_share = Share.from_y_bytes(me, plaintext[offset + SHARE_VALUE_SIZE :])
        return s_share, b_share

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Round 4: reveal b shares of survivors and s^SK shares of dropped clients, once."""
        if self._phase == "unmasked":
            raise UnmaskRefused(
                "already answered an unmasking request in this session; a second one "
                "could reveal both shares of a client"
            )
        if self._phase != "masked":
            raise SecAggError(f"unmask() called in phase {self._phase!r}, needs 'masked'")
        survivors, dropped = list(request.survivors), list(request.dropped)
        if len(set(survivors)) != len(survivors) or len(set(dropped)) != len(dropped):
            raise UnmaskRefused("unmasking request lists a client twice")
        both = set(survivors) & set(dropped)
        if both:
            raise UnmaskRefused(
                f"server asks for both the self-mask share and the mask-key share of "
                f"client(s) {sorted(both)}: that would unmask their individual input"
            )
        if self.client_id not in survivors:
            raise UnmaskRefused("unmasking request does not list this client as a survivor")
        named = set(survivors) | set(dropped)
        if named != self._u2:
            raise UnmaskRefused(
                f"unmasking request names {sorted(named)}, but the clients that shared "
                f"keys were {sorted(self._u2)}"
            )
        _need(len(survivors), self.config, "survivors in the unmasking request")
        self._phase = "unmasked"
        response = UnmaskResponse(
            self.client_id,
            {v: self._held[v][1].y_bytes() for v in survivors},
            {v: self._held[v][0].y_bytes() for v in dropped},
        )
        # Nothing further may be revealed: drop the secrets.
        self._held.clear()
        self._self_seed = b""
        return response


# ---------------------------------------------------------------- server


class SecAggServer:
    """The server's side of one aggregation.

    Feed each round's messages with receive_*(); calling the next round's method
    (key_directory, route_shares, unmask_request, result) closes the round: whoever
    has not been heard from by then is treated as dropped.
    """

    def __init__(self, config: SecAggConfig) -> None:
        self.config = config
        self._phase = "keys"
        self._keys: dict[int, tuple[bytes, bytes]] = {}
        self._shares: dict[int, Mapping[int, bytes]] = {}
        self._u2: tuple[int, ...] = ()
        self._inputs: dict[int, UIntArray] = {}
        self._request: UnmaskRequest | None = None
        self._responses: dict[int, UnmaskResponse] = {}

    def _in(self, phase: str, name: str) -> None:
        if self._phase != phase:
            raise SecAggError(f"{name}() in phase {self._phase!r}, needs {phase!r}")

    def receive_keys(self, msg: AdvertiseKeys) -> None:
        self._in("keys", "receive_keys")
        u = _check_id(msg.client_id, self.config)
        if u in self._keys:
            raise SecAggError(f"client {u} advertised keys twice")
        pair = (
            _check_public_key(msg.c_public, "c_public"),
            _check_public_key(msg.s_public, "s_public"),
        )
        if pair[0] == pair[1]:
            raise SecAggError(f"client {u} uses the same key for c and s")
        self._keys[u] = pair

    def key_directory(self) -> KeyDirectory:
        """Close round 0: U1 is everyone who advertised keys."""
        self._in("keys", "key_directory")
        _need(len(self._keys), self.config, "clients that advertised keys (U1)")
        self._phase = "shares"
        return KeyDirectory(dict(sorted(self._keys.items())))

    def receive_shares(self, msg: EncryptedShares) -> None:
        self._in("shares", "receive_shares")
        u = msg.sender
        if u not in self._keys:
            raise SecAggError(f"shares from client {u}, which is not in U1")
        if u in self._shares:
            raise SecAggError(f"client {u} sent shares twice")
        expected = set(self._keys) - {u}
        if set(msg.ciphertexts) != expected:
            raise SecAggError(f"client {u} must send one share to each of {sorted(expected)}")
        self._shares[u] = dict(msg.ciphertexts)

    def route_shares(self) -> dict[int, RoutedShares]:
        """Close round 1: U2 is everyone who sent shares; returns each one's inbox."""
        self._in("shares", "route_shares")
        _need(len(self._shares), self.config, "clients that sent shares (U2)")
        self._u2 = tuple(sorted(self._shares))
        self._phase = "inputs"
        return {
            u: RoutedShares(u, {v: self._shares[v][u] for v in self._u2 if v != u})
            for u in self._u2
        }

    def receive_masked_input(self, msg: MaskedInput) -> None:
        self._in("inputs", "receive_masked_input")
        u = msg.sender
        if u not in self._u2:
            raise SecAggError(f"masked input from client {u}, which is not in U2")
        if u in self._inputs:
            raise SecAggError(f"client {u} sent its masked input twice")
        y = np.asarray(msg.masked)
        dtype = self.config.fixed_point.dtype
        if y.shape != (self.config.vector_length,) or y.dtype != dtype:
            raise SecAggError(
                f"masked input from client {u} is {y.dtype}{y.shape}, expected "
                f"{dtype}({self.config.vector_length},)"
            )
        self._inputs[u] = y

    def unmask_request(self) -> UnmaskRequest:
        """Close round 2: U3 is everyone who sent a masked input."""
        if self._request is not None:
            return self._request
        self._in("inputs", "unmask_request")
        _need(len(self._inputs), self.config, "clients that sent masked inputs (U3)")
        survivors = tuple(sorted(self._inputs))
        dropped = tuple(v for v in self._u2 if v not in self._inputs)
        self._request = UnmaskRequest(survivors, dropped)
        self._phase = "unmasking"
        return self._request

    def receive_unmasking(self, msg: UnmaskResponse) -> None:
        self._in("unmasking", "receive_unmasking")
        assert self._request is not None
        u = msg.sender
        if u not in self._request.survivors:
            raise SecAggError(f"unmasking response from client {u}, which is not a survivor")
        if u in self._responses:
            raise SecAggError(f"client {u} answered twice")
        if set(msg.self_mask_shares) != set(self._request.survivors) or set(
            msg.mask_key_shares
        ) != set(self._request.dropped):
            raise SecAggError(f"client {u} did not answer exactly the requested shares")
        self._responses[u] = msg

    def result(self) -> AggregationResult:
        """Close round 4: reconstruct the masks and return the sum over U3."""
        self._in("unmasking", "result")
        assert self._request is not None
        config = self.config
        survivors, dropped = self._request.survivors, self._request.dropped
        # The request is built from disjoint sets; never reconstruct both secrets
        # of one client, whatever the responses contain.
        assert not set(survivors) & set(dropped)
        responders = sorted(self._responses)
        _need(len(responders), config, "clients that answered the unmasking request")

        total = np.zeros(config.vector_length, dtype=config.fixed_point.dtype)
        for u in survivors:
            total += self._inputs[u]
        for v in survivors:
            seed = self._reconstruct(v, responders, self_mask=True)
            total -= _self_mask(seed, config)
        for v in dropped:
            sk = self._reconstruct(v, responders, self_mask=False)
            s_private = X25519PrivateKey.from_private_bytes(sk)
            if s_private.public_key().public_bytes_raw() != self._keys[v][1]:
                raise SecAggError(
                    f"reconstructed mask key of client {v} does not match its advertised key"
                )
            for u in survivors:
                # Survivor u added +mask if v < u, -mask if v > u: undo it.
                mask = _pair_mask(s_private, self._keys[u][1], v, u, config)
                if v < u:
                    total -= mask
                else:
                    total += mask
        self._phase = "done"
        fp = config.fixed_point
        return AggregationResult(
            sum=fp.dequantize(total),
            quantized_sum=total,
            survivors=survivors,
            dropped=dropped,
            max_abs_error=fp.sum_error_bound(len(survivors)),
        )

    def _reconstruct(self, owner: int, responders: Iterable[int], *, self_mask: bool) -> bytes:
        shares = []
        for r in responders:
            response = self._responses[r]
            table = response.self_mask_shares if self_mask else response.mask_key_shares
            shares.append(Share.from_y_bytes(r, table[owner]))
        try:
            return combine_bytes(shares, self.config.t)
        except ShamirError as exc:
            what = "self-mask seed" if self_mask else "mask key"
            raise SecAggError(f"cannot reconstruct the {what} of client {owner}: {exc}") from exc
