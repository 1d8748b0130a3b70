"""homo_lr's checkpoints: what a client's secure-aggregation state is mid-round, sealed.

The resume rule (docs/components.md) needs every message a task re-sends after a restart to be
the bytes it sent the first time. A round's secure aggregation is not deterministic: each
client draws two X25519 key pairs and a self-mask seed, Shamir-shares them with fresh
polynomials and encrypts the shares under fresh AES-GCM nonces. So a client checkpoints its
`SecAggClient` (fedcrypto.secagg) before each message that depends on that randomness leaves:

  before sa_keys    phase "advertised": the two private keys and the self-mask seed
  before sa_shares  phase "shared": also the key directory, the client's own shares of its
                    secrets, and the encrypted shares it sends (re-sent as recorded)

The private keys, seed and shares go in sealed (ComponentContext.checkpoints.seal: AES-GCM
under the party's checkpoint key, never in the clear in the database). What comes later in the
round (the masked input, the unmasking answer) is a deterministic function of this state and
the messages received, which the durable mailbox gives back. fedcrypto's SecAggClient has no
export of its state, so `snapshot` / `restore` read and set its attributes; the unit tests
round-trip a snapshot through a whole aggregation, so a change there fails them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from fedcrypto.secagg import KEY_SIZE, EncryptedShares, SecAggClient, SecAggConfig, SecAggError
from fedcrypto.shamir import SHARE_VALUE_SIZE, Share

if TYPE_CHECKING:
    from fedflow.checkpoints import CheckpointScope

PURPOSE: Final = "homo_lr.secagg_client"
"""What the sealed secrets in a homo_lr checkpoint are (binds the sealing key to them)."""
_PHASES: Final = ("advertised", "shared")


def snapshot(
    client: SecAggClient, scope: CheckpointScope, sent: EncryptedShares | None = None
) -> dict[str, Any]:
    """The client's state after advertise_keys (phase advertised) or share_keys (phase shared,
    with the EncryptedShares it is about to send), its secrets sealed."""
    phase = client._phase
    if phase not in _PHASES:
        raise SecAggError(f"a client is checkpointed after its keys or shares, not in {phase!r}")
    secret = client._c_key.private_bytes_raw() + client._s_key.private_bytes_raw()
    secret += client._self_seed
    state: dict[str, Any] = {"phase": phase, "client_id": client.client_id}
    if phase == "shared":
        s_share, b_share = client._held[client.client_id]
        secret += s_share.y_bytes() + b_share.y_bytes()
        state["directory"] = {str(v): [c, s] for v, (c, s) in client._directory.items()}
        if sent is None:
            raise SecAggError("a client checkpointed after share_keys needs the shares it sends")
        state["sent"] = {str(v): blob for v, blob in sent.ciphertexts.items()}
    state["sealed"] = scope.seal(PURPOSE, secret)
    return state


def restore(
    state: Mapping[str, Any], config: SecAggConfig, scope: CheckpointScope
) -> tuple[SecAggClient, EncryptedShares | None]:
    """The client `snapshot` saved, in the same phase, and the shares it sent (phase shared)."""
    client = SecAggClient(int(state["client_id"]), config)
    secret = scope.open_sealed(PURPOSE, dict(state["sealed"]))
    phase = str(state["phase"])
    need = 3 * KEY_SIZE + (2 * SHARE_VALUE_SIZE if phase == "shared" else 0)
    if phase not in _PHASES or len(secret) != need:
        raise SecAggError(f"homo_lr checkpoint: a client state in phase {phase!r} is malformed")
    client._c_key = X25519PrivateKey.from_private_bytes(secret[:KEY_SIZE])
    client._s_key = X25519PrivateKey.from_private_bytes(secret[KEY_SIZE : 2 * KEY_SIZE])
    client._self_seed = secret[2 * KEY_SIZE : 3 * KEY_SIZE]
    client._phase = phase
    if phase == "advertised":
        return client, None
    me = client.client_id
    at = 3 * KEY_SIZE
    client._held[me] = (
        Share.from_y_bytes(me, secret[at : at + SHARE_VALUE_SIZE]),
        Share.from_y_bytes(me, secret[at + SHARE_VALUE_SIZE :]),
    )
    client._directory = {
        int(v): (bytes(pair[0]), bytes(pair[1])) for v, pair in dict(state["directory"]).items()
    }
    sent = EncryptedShares(me, {int(v): bytes(b) for v, b in dict(state["sent"]).items()})
    return client, sent
