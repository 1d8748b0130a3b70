"""Sealing: component secrets (a Paillier private key, a mask seed) encrypted for a checkpoint.

A checkpoint is a row in the party's database, and a database is backed up, replicated and read
by people who run it; a private key stored there in the clear outlives the task that needed it.
A component that must survive a restart with a secret (hetero_lr: its Paillier key pair, since
its peer keeps sending ciphertexts under that key and its own stored ciphertexts were made with
it) stores the secret *sealed*: AES-256-GCM under a key that never enters the database.

Key schedule:
  party secret   the worker's `checkpoint_key` setting (the same at every replica of a party's
                 worker, so any of them can resume the task), or, when none is configured, 32
                 random bytes held by this process only (`CheckpointSealer.in_memory()`): then
                 only the process that sealed a secret can open it again, and a task resumed by
                 another process fails with `SealedStateError` instead of resuming;
  task key       HKDF-SHA256(party secret, salt "fedflow.seal.v1",
                 info = job, component, attempt, party, role and purpose, each length-prefixed):
                 one key per task and purpose, so a sealed secret copied into another task's row
                 (or used for another purpose) does not open;
  sealed         {"format": "fedflow.sealed.v1", "nonce": 12 random bytes,
                 "sealed": AES-GCM(task key, nonce, secret, aad = info)}.
What the database holds is the sealed mapping only; it is deleted with the task's checkpoint.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

if TYPE_CHECKING:
    from fedflow.task import TaskKey

SEALED_FORMAT: Final = "fedflow.sealed.v1"
MIN_SECRET_BYTES: Final = 32
"""A party secret shorter than this is refused: HKDF does not stretch a weak secret."""
_SALT: Final = b"fedflow.seal.v1"
_NONCE_BYTES: Final = 12
_KEY_BYTES: Final = 32


class SealedStateError(ValueError):
    """A sealed secret that cannot be opened: another party secret (or another process's
    ephemeral one), another task or purpose, or tampered bytes."""


def _info(key: TaskKey, purpose: str) -> bytes:
    parts = (key.job_id, key.component, str(key.attempt), key.party_id, key.role, purpose)
    out = bytearray()
    for part in parts:
        raw = part.encode()
        # Length-prefixed: ("ab", "c") and ("a", "bc") must not derive the same key.
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


class CheckpointSealer:
    """Seals and opens secrets for one party's checkpoints."""

    def __init__(self, secret: bytes, *, ephemeral: bool = False) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"a checkpoint sealing secret needs at least {MIN_SECRET_BYTES} bytes, "
                f"got {len(secret)}"
            )
        self._secret = bytes(secret)
        self.ephemeral = ephemeral
        """True: the secret lives in this process only (nothing sealed survives it)."""

    @classmethod
    def in_memory(cls) -> CheckpointSealer:
        """A sealer whose secret is random and never leaves this process."""
        return cls(os.urandom(_KEY_BYTES), ephemeral=True)

    @property
    def fingerprint(self) -> str:
        """A short, non-secret name of the party secret (for logs): the first 8 bytes of
        SHA-256 over a domain tag and the secret."""
        return hashlib.sha256(b"fedflow.seal.fingerprint\x00" + self._secret).hexdigest()[:16]

    def _task_key(self, info: bytes) -> AESGCM:
        derived = HKDF(algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=_SALT, info=info)
        return AESGCM(derived.derive(self._secret))

    def seal(self, key: TaskKey, purpose: str, secret: bytes) -> dict[str, Any]:
        """`secret` sealed for task `key` and `purpose`: a mapping safe to checkpoint."""
        info = _info(key, purpose)
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._task_key(info).encrypt(nonce, bytes(secret), info)
        return {"format": SEALED_FORMAT, "nonce": nonce, "sealed": sealed}

    def open(self, key: TaskKey, purpose: str, sealed: Mapping[str, Any]) -> bytes:
        """The secret `seal(key, purpose, ...)` sealed; SealedStateError if it does not open."""
        if sealed.get("format") != SEALED_FORMAT:
            raise SealedStateError(f"not a {SEALED_FORMAT} sealed secret")
        nonce, body = sealed.get("nonce"), sealed.get("sealed")
        if not isinstance(nonce, bytes) or len(nonce) != _NONCE_BYTES:
            raise SealedStateError("sealed secret: bad nonce")
        if not isinstance(body, bytes):
            raise SealedStateError("sealed secret: no ciphertext")
        info = _info(key, purpose)
        try:
            return self._task_key(info).decrypt(nonce, body, info)
        except InvalidTag:
            hint = (
                "this process holds only an ephemeral sealing secret, so a secret sealed by "
                "another process (a worker that died) cannot be opened; configure the party's "
                "checkpoint key to resume across restarts"
                if self.ephemeral
                else "it was sealed under another checkpoint key, for another task, or altered"
            )
            raise SealedStateError(
                f"{key.job_id}/{key.component}: the checkpoint's sealed {purpose} does not "
                f"open: {hint}"
            ) from None
