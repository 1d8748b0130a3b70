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

Importing this package is light (fedflow.descriptors may import it); its modules import fedcrypto
and numpy. The package itself declares the messages HeParty sends in fixed forms, for a
component's protocol.py: `public_key_rules()` (each party's Paillier public key, once),
`ciphertext_rule` (ciphertexts as "(rows, c)" uint64 limbs once per iteration, decrypted by the
receiver unless decrypt=False) and `masked_rule` (the masked answers of masked decryption,
"(rows, p)" uint64 residues); a component spells out only its tags, roles, order and rows.
"""

from __future__ import annotations

from typing import Final

from fedflow.protocol import NONE, DecryptRule, MessageRule, ProtocolRole, array_rule

PAILLIER_KEY_FORMAT: Final = "fedcrypto.paillier.public_key.v1"
"""The blob format of a Paillier public key message (declared in protocols, checked on receipt)."""

HE_DIMS: Final = {
    "c": "64-bit limbs of one ciphertext (key bits / 32)",
    "p": "64-bit limbs of one plaintext residue (key bits / 64)",
}
"""The protocol dims HeParty.exchange_keys binds: ciphertext shapes are "(rows, c)", masked
answers "(rows, p)"."""


def public_key_rules(
    guest_description: str = "", host_description: str = ""
) -> tuple[MessageRule, MessageRule]:
    """The key exchange of HeParty.exchange_keys: the guest's and the host's Paillier public
    keys, each sent once (order 1) to the other, as a blob and no array."""
    return (
        _public_key_rule("guest", "host", guest_description),
        _public_key_rule("host", "guest", host_description),
    )


def _public_key_rule(sender: ProtocolRole, receiver: ProtocolRole, description: str) -> MessageRule:
    return MessageRule(
        tag="public_key",
        sender=sender,
        receiver=receiver,
        kinds=("public_key",),
        order=1,
        shape=NONE,
        blob_formats=(PAILLIER_KEY_FORMAT,),
        description=description,
    )


def ciphertext_rule(
    tag: str,
    sender: ProtocolRole,
    receiver: ProtocolRole,
    order: int,
    rows: str,
    description: str = "",
    *,
    decrypt: bool = True,
    per_iteration_decrypts: int = 1,
) -> MessageRule:
    """Ciphertexts sent once per iteration, "(rows, c)" limbs. With `decrypt`, the receiver is
    the key holder that decrypts them (masked decryption), at most `per_iteration_decrypts`
    times an iteration; without, they are only computed on."""
    return MessageRule(
        tag=tag,
        sender=sender,
        receiver=receiver,
        kinds=("ciphertext_vector",),
        per_iteration=True,
        order=order,
        shape=f"({rows}, c)",
        dtypes=("uint64",),
        decrypt=(
            DecryptRule(by=receiver, max_per_iteration=per_iteration_decrypts) if decrypt else None
        ),
        description=description,
    )


def masked_rule(
    tag: str,
    sender: ProtocolRole,
    receiver: ProtocolRole,
    rows: str,
    description: str = "",
    *,
    order: int = 3,
) -> MessageRule:
    """The key holder's answer of masked decryption: the decrypted, still masked plaintext as
    "(rows, p)" residues, once per iteration (by default order 3: after the ciphertext it
    answers)."""
    return array_rule(
        tag,
        sender,
        receiver,
        "masked_vector",
        order,
        f"({rows}, p)",
        description,
        per_iteration=True,
        dtype="uint64",
    )
