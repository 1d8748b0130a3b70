"""homo_lr's declared messages (light: read by the pipeline validator, the audit service and
the protocol guard). The package docstring gives the round step by step.

The aggregator is the guest's task (it is also a client: its own contribution goes into the
sum in-process); the hosts are the other clients. Every message of round r has iteration r.
"""

from __future__ import annotations

from typing import Final

from fedflow.protocol import NONE, MessageRule, Protocol, ProtocolRole, array_rule

KEYS_FORMAT: Final = "secagg.x25519_pair.v1"
DIRECTORY_FORMAT: Final = "secagg.directory.v1"
SHARES_FORMAT: Final = "secagg.shares.v1"
UNMASK_FORMAT: Final = "secagg.unmask.v1"


def _blob_rule(
    tag: str,
    sender: ProtocolRole,
    receiver: ProtocolRole,
    kinds: tuple[str, ...],
    order: int,
    blob_format: str,
    description: str,
) -> MessageRule:
    return MessageRule(
        tag=tag,
        sender=sender,
        receiver=receiver,
        kinds=kinds,  # type: ignore[arg-type]
        per_iteration=True,
        order=order,
        shape=NONE,
        blob_formats=(blob_format,),
        description=description,
    )


HOMO_LR_PROTOCOL = Protocol(
    component_type="homo_lr",
    description=(
        "horizontal LR, FedAvg over Bonawitz secure aggregation (fedcrypto.secagg): the "
        "aggregator (the guest) learns only the sum of the clients' weighted updates, their "
        "weighted loss and their total weight per round, and who took part"
    ),
    dims={
        "d": "model length: the features + 1 (intercept)",
        "v": "a client's contribution: d + 2 (weighted loss, weight)",
    },
    messages=(
        array_rule(
            "global_model",
            "guest",
            "host",
            "aggregate",
            1,
            "(d,)",
            "the global model at the start of round r (meta final: the last one, no round follows)",
            per_iteration=True,
        ),
        _blob_rule(
            "sa_keys",
            "host",
            "guest",
            ("public_key", "plain_control"),
            2,
            KEYS_FORMAT,
            "the client's two fresh X25519 public keys for the round (c: share encryption, "
            "s: pairwise masks); or plain_control with meta withdraw: the reason it sits out",
        ),
        _blob_rule(
            "sa_directory",
            "guest",
            "host",
            ("public_key", "plain_control"),
            3,
            DIRECTORY_FORMAT,
            "U1's public keys; plain_control with meta excluded: this client is out of round r",
        ),
        _blob_rule(
            "sa_shares",
            "host",
            "guest",
            ("ciphertext_vector",),
            4,
            SHARES_FORMAT,
            "AES-GCM encrypted Shamir shares of the client's mask key and self-mask seed, one "
            "per other client (the aggregator only routes them)",
        ),
        _blob_rule(
            "sa_routed",
            "guest",
            "host",
            ("ciphertext_vector", "plain_control"),
            5,
            SHARES_FORMAT,
            "the encrypted shares addressed to this client; plain_control: excluded",
        ),
        array_rule(
            "sa_masked",
            "host",
            "guest",
            "masked_vector",
            6,
            "(v,)",
            "the client's quantised contribution plus its self mask and pairwise masks, mod 2^64",
            per_iteration=True,
            dtype="uint64",
        ),
        MessageRule(
            tag="sa_unmask",
            sender="guest",
            receiver="host",
            kinds=("plain_control",),
            per_iteration=True,
            order=7,
            shape=NONE,
            description="meta survivors / dropped (client ids), or excluded",
        ),
        _blob_rule(
            "sa_unmask_shares",
            "host",
            "guest",
            ("masked_vector",),
            8,
            UNMASK_FORMAT,
            "this client's Shamir shares of the survivors' self-mask seeds and of the dropped "
            "clients' mask keys (never both for one client)",
        ),
    ),
)

HOMO_LR_PREDICT_PROTOCOL = Protocol(
    component_type="homo_lr_predict",
    description="every party scores its own rows with the shared model; nothing crosses",
    messages=(),
)
