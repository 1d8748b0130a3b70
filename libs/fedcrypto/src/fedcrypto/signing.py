"""Ed25519 signing and verification of byte strings.

Used by the gateway (every cross-site message is signed by its source party) and by
the audit trail. A thin, typed wrapper over `cryptography`'s Ed25519 so callers never
handle library objects directly and every failure is one exception type.

Formats: raw keys are 32 bytes (RFC 8032 encoding); PEM private keys are PKCS#8,
optionally encrypted with a password (best available encryption); PEM public keys
are SubjectPublicKeyInfo. Signatures are 64 bytes. Ed25519 is deterministic, so
signing the same bytes twice gives the same signature.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

__all__ = ["KEY_SIZE", "SIGNATURE_SIZE", "BadSignature", "SigningKey", "VerifyKey"]

KEY_SIZE = 32
SIGNATURE_SIZE = 64


class BadSignature(ValueError):
    """The signature does not verify for these bytes under this key."""


def _check_raw_key(raw: bytes, what: str) -> bytes:
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if len(raw) != KEY_SIZE:
        raise ValueError(f"{what} must be {KEY_SIZE} bytes, got {len(raw)}")
    return raw


def _check_bytes(data: bytes, what: str) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be bytes, got {type(data).__name__}")
    return bytes(data)


class VerifyKey:
    """An Ed25519 public key: verifies signatures."""

    __slots__ = ("_key",)

    def __init__(self, key: Ed25519PublicKey) -> None:
        if not isinstance(key, Ed25519PublicKey):
            raise TypeError("VerifyKey wraps an Ed25519PublicKey; use from_bytes or from_pem")
        self._key = key

    @classmethod
    def from_bytes(cls, raw32: bytes) -> VerifyKey:
        raw = _check_raw_key(raw32, "Ed25519 public key")
        try:
            return cls(Ed25519PublicKey.from_public_bytes(raw))
        except ValueError as exc:  # not a valid point encoding
            raise ValueError(f"invalid Ed25519 public key: {exc}") from exc

    def to_bytes(self) -> bytes:
        return self._key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @classmethod
    def from_pem(cls, pem: bytes) -> VerifyKey:
        pem = _check_bytes(pem, "PEM")
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError as exc:
            raise ValueError(f"cannot load PEM public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"PEM holds a {type(key).__name__}, not an Ed25519 public key")
        return cls(key)

    def to_pem(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, data: bytes, signature: bytes) -> None:
        """Return None if `signature` is valid for `data`; raise BadSignature otherwise."""
        data = _check_bytes(data, "data")
        signature = _check_bytes(signature, "signature")
        if len(signature) != SIGNATURE_SIZE:
            raise BadSignature(f"signature must be {SIGNATURE_SIZE} bytes, got {len(signature)}")
        try:
            self._key.verify(signature, data)
        except InvalidSignature:
            raise BadSignature(
                f"signature does not verify under key {self.fingerprint()[:16]}"
            ) from None

    def fingerprint(self) -> str:
        """Hex SHA-256 of the raw public key: a stable name for logs, not a secret."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and self.to_bytes() == other.to_bytes()

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    def __repr__(self) -> str:
        return f"VerifyKey(fingerprint={self.fingerprint()[:16]})"


class SigningKey:
    """An Ed25519 private key: signs byte strings."""

    __slots__ = ("_key",)

    def __init__(self, key: Ed25519PrivateKey) -> None:
        if not isinstance(key, Ed25519PrivateKey):
            raise TypeError(
                "SigningKey wraps an Ed25519PrivateKey; use generate/from_bytes/from_pem"
            )
        self._key = key

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, raw32: bytes) -> SigningKey:
        """Load the 32-byte RFC 8032 seed."""
        return cls(Ed25519PrivateKey.from_private_bytes(_check_raw_key(raw32, "Ed25519 seed")))

    def to_bytes(self) -> bytes:
        """The 32-byte RFC 8032 seed. Secret: never log it."""
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, pem: bytes, password: bytes | None = None) -> SigningKey:
        pem = _check_bytes(pem, "PEM")
        try:
            key = serialization.load_pem_private_key(pem, password=password)
        except (ValueError, TypeError) as exc:
            # cryptography raises TypeError for a missing/unexpected password and
            # ValueError for a wrong one or bad data; callers see one type.
            raise ValueError(f"cannot load PEM private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"PEM holds a {type(key).__name__}, not an Ed25519 private key")
        return cls(key)

    def to_pem(self, password: bytes | None = None) -> bytes:
        """PKCS#8 PEM; encrypted with `password` when one is given."""
        encryption: serialization.KeySerializationEncryption
        if password is None:
            encryption = serialization.NoEncryption()
        else:
            password = _check_bytes(password, "password")
            if not password:
                raise ValueError("password must not be empty; pass None for an unencrypted PEM")
            encryption = serialization.BestAvailableEncryption(password)
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def verify_key(self) -> VerifyKey:
        return VerifyKey(self._key.public_key())

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `data`."""
        return self._key.sign(_check_bytes(data, "data"))

    def __repr__(self) -> str:
        # Never print the secret; the public fingerprint identifies the key.
        return f"SigningKey(fingerprint={self.verify_key().fingerprint()[:16]})"
