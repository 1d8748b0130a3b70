"""TEST ONLY: the malicious-party harness the audit's tests (and an operator's drill) use.

It builds the messages a cheating party's worker would send -- a key of the wrong width, a
ciphertext >= n^2 or equal to 1, a replayed ciphertext vector, NaN in an aggregate, another
algorithm's message inside a component -- and injects one on a party's broker as that party's
worker would (on `out.<peer>`, so its gateway signs and relays it and both audits see it).
`unmasked_decryption` turns the components of this process into cheats of another kind: they
send their peer values to decrypt without the mask (what a party does to learn what it holds
under the peer's key), which only the key holder's check of what it decrypted can see.

Off unless explicitly enabled: every function raises HooksDisabled unless the process has
FEDMQ_AUDIT_TEST_HOOKS=1 and FEDMQ_ENVIRONMENT is not "production". Nothing in the service
imports this module; it ships with it so that the harness is versioned with the rules it
exercises instead of living only in the test suite.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Final

import numpy as np
from fedbus import Bus, Message
from fedcrypto.paillier.keys import PublicKey
from fedcrypto.paillier.limbs import from_mpz
from fedschemas import Envelope, FederationData, PartyRef, encode_envelope, new_envelope, topics
from fedschemas.payloads import task_scope_id

ENABLE_VARIABLE: Final = "FEDMQ_AUDIT_TEST_HOOKS"
KEY_FORMAT: Final = "fedcrypto.paillier.public_key.v1"


class HooksDisabled(RuntimeError):
    """The harness was called without FEDMQ_AUDIT_TEST_HOOKS=1 (or in production)."""


def enabled() -> bool:
    return (
        os.environ.get(ENABLE_VARIABLE) == "1"
        and os.environ.get("FEDMQ_ENVIRONMENT", "").lower() != "production"
    )


def _require() -> None:
    if not enabled():
        raise HooksDisabled(
            f"fedaudit.test_hooks sends forged messages: set {ENABLE_VARIABLE}=1 (never in "
            "production) to use it"
        )


def odd_key(bits: int) -> bytes:
    """A serialized Paillier 'public key' of exactly `bits` bits (1024, 2025, 2049...)."""
    _require()
    n = (1 << (bits - 1)) | 0xF1 | 1
    return PublicKey(n, insecure_allow_short=True).to_bytes()


def key_message(bits: int) -> FederationData:
    """public_key: a key of `bits` bits (data.key_below_policy / data.key_width)."""
    return FederationData(kind="public_key", blob=odd_key(bits), blob_format=KEY_FORMAT)


def ciphertexts(values: Sequence[int], key: PublicKey) -> FederationData:
    """ciphertext_vector of raw `values` in `key`'s limb layout: n^2 + 1 (data.ciphertext_range),
    1 (data.ciphertext_trivial), a multiple of n (data.ciphertext_not_coprime) or a vector sent
    before (data.ciphertext_repeated)."""
    _require()
    return FederationData(
        kind="ciphertext_vector",
        array=from_mpz(list(values), key.limbs),
        meta={"exponent": 0, "bound": "ff"},
    )


def nan_aggregate(shape: tuple[int, ...] = ()) -> FederationData:
    """An aggregate holding NaN (data.nonfinite)."""
    _require()
    return FederationData(kind="aggregate", array=np.full(shape, np.nan, dtype=np.float64))


ATTACKS: Final[dict[str, Callable[..., FederationData]]] = {
    "key_1024": lambda **_: key_message(1024),
    "key_2025": lambda **_: key_message(2025),
    "key_2049": lambda **_: key_message(2049),
    "ciphertext_out_of_range": lambda key, **_: ciphertexts([int(key.nsquare) + 1], key),
    "ciphertext_one": lambda key, **_: ciphertexts([1], key),
    "ciphertext_not_coprime": lambda key, **_: ciphertexts([int(key.n) * 3], key),
    "nan": lambda **_: nan_aggregate(),
}
"""name -> payload builder (keyword `key`: the Paillier key the ciphertexts are under)."""


def forged(
    payload: FederationData,
    *,
    job_id: str,
    component: str,
    sender: PartyRef,
    receiver: PartyRef,
    tag: str,
    iteration: int = -1,
    seq: int = 0,
    attempt: int = 0,
) -> Envelope:
    """The envelope a cheating worker of `sender` would publish (`attempt` picks another
    message id than an honest message of the same tag)."""
    _require()
    return new_envelope(
        payload,
        job_id=job_id,
        component=component,
        task_id=task_scope_id(job_id, component, sender.party_id, sender.role),
        attempt=attempt,
        source=sender,
        destination=receiver,
        tag=tag,
        iteration=iteration,
        seq=seq,
        created_at=datetime.now(UTC),
    )


def inject(bus: Bus, envelope: Envelope) -> None:
    """Publish `envelope` on its sender's out.<receiver>, as the sender's worker would."""
    _require()
    topic = topics.out_topic(envelope.destination.party_id)
    bus.publish(Message(topic, encode_envelope(envelope), envelope.message_id))


@contextlib.contextmanager
def unmasked_decryption() -> Iterator[None]:
    """While it lasts, masked decryption in this process sends [[m]] re-randomised but without
    its mask R (fedflow.kit.masking.add_mask replaced): the key holder decrypts m itself, and
    a signed m < 0 decrypts near n, far outside the masked range [0, n/3)
    (data.decrypted_bounds, judged from the key holder worker's report)."""
    _require()
    from fedcrypto import EncryptedVector
    from fedflow.kit import masking

    honest = masking.add_mask

    def unmasked(vec: EncryptedVector, masks: list[int], executor: object) -> EncryptedVector:
        return vec.obfuscate(executor=executor)  # type: ignore[arg-type]

    masking.add_mask = unmasked
    try:
        yield
    finally:
        masking.add_mask = honest
