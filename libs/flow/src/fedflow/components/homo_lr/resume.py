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
the messages received, which the durable mailbox gives back. The state is fedcrypto's own
export (`SecAggClient.export_state` / `from_state`); this module only seals its secret part
and stores the rest as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from fedcrypto.secagg import (
    ClientState,
    EncryptedShares,
    SecAggClient,
    SecAggConfig,
    SecAggError,
)

if TYPE_CHECKING:
    from fedflow.checkpoints import CheckpointScope

PURPOSE: Final = "homo_lr.secagg_client"
"""What the sealed secrets in a homo_lr checkpoint are (binds the sealing key to them)."""


def snapshot(
    client: SecAggClient, scope: CheckpointScope, sent: EncryptedShares | None = None
) -> dict[str, Any]:
    """The client's state after advertise_keys (phase advertised) or share_keys (phase shared,
    with the EncryptedShares it is about to send), its secrets sealed."""
    exported = client.export_state()
    state: dict[str, Any] = {"phase": exported.phase, "client_id": exported.client_id}
    if exported.phase == "shared":
        state["directory"] = {str(v): [c, s] for v, (c, s) in exported.directory.items()}
        if sent is None:
            raise SecAggError("a client checkpointed after share_keys needs the shares it sends")
        state["sent"] = {str(v): blob for v, blob in sent.ciphertexts.items()}
    state["sealed"] = scope.seal(PURPOSE, exported.secret)
    return state


def restore(
    state: Mapping[str, Any], config: SecAggConfig, scope: CheckpointScope
) -> tuple[SecAggClient, EncryptedShares | None]:
    """The client `snapshot` saved, in the same phase, and the shares it sent (phase shared)."""
    phase = str(state["phase"])
    directory = {
        int(v): (bytes(pair[0]), bytes(pair[1]))
        for v, pair in dict(state.get("directory", {})).items()
    }
    exported = ClientState(
        int(state["client_id"]), phase, scope.open_sealed(PURPOSE, dict(state["sealed"])), directory
    )
    try:
        client = SecAggClient.from_state(exported, config)
    except SecAggError as exc:
        raise SecAggError(f"homo_lr checkpoint: {exc}") from None
    if phase != "shared":
        return client, None
    me = client.client_id
    sent = EncryptedShares(me, {int(v): bytes(b) for v, b in dict(state["sent"]).items()})
    return client, sent
