"""The component kit: what every two-party homomorphic component needs, written once.

A component is a package (docs/components.md): `__init__.py` declares it (a ComponentDescriptor:
params, roles, protocol, where the code is), `math.py` is numpy only (the update rule, the loss,
the plaintext reference the tests use), `protocol.py` declares its messages, and `guest.py` /
`host.py` (/ `arbiter.py`) only orchestrate, with this kit:

  fedflow.kit.he         HeParty: this party's Paillier key pair and mask seed as sealed
                         per-task secrets (ctx.secret), the public-key exchange, encryption
                         with obfuscators precomputed in the background, masked decryption by
                         the other key holder ("mask, send, unmask"), received-ciphertext checks
  fedflow.kit.masking    the exact integer masks of masked decryption
  fedflow.kit.payloads   ciphertexts and public keys as FederationData
  fedflow.kit.resume     Resumable: checkpoint helpers, ciphertexts recorded before they are
                         sent and re-sent as the same bytes when an iteration is redone
  fedflow.kit.threads    the thread pools the party's runtime options allow (ctx.runtime)
  fedflow.kit.loop       the iteration loop: cancellation, stop condition, progress

Importing this package is light; its modules import fedcrypto and numpy.
"""

from __future__ import annotations

from typing import Final

PAILLIER_KEY_FORMAT: Final = "fedcrypto.paillier.public_key.v1"
"""The blob format of a Paillier public key message (declared in protocols, checked on receipt)."""

HE_DIMS: Final = {
    "c": "64-bit limbs of one ciphertext (key bits / 32)",
    "p": "64-bit limbs of one plaintext residue (key bits / 64)",
}
"""The protocol dims HeParty.exchange_keys binds: ciphertext shapes are "(rows, c)", masked
answers "(rows, p)"."""
