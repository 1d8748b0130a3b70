"""homo_lr's declared messages (light: read by the pipeline validator, the audit service and
the protocol guard). The package docstring gives the round step by step.

The aggregator is the arbiter when the pipeline names one (then the guest and the hosts are
the clients), else the guest's task (also a client: its own contribution goes into the sum
in-process). Every message of round r has iteration r.
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


def _round_messages(agg: ProtocolRole, client: ProtocolRole) -> tuple[MessageRule, ...]:
    """One round's messages between the aggregator role and one client role."""
    return (
        array_rule(
            "global_model",
            agg,
            client,
            "aggregate",
            1,
            "(d,)",
            "the global model at the start of round r (meta final: the last one, no round "
            "follows; features: a digest of the column names)",
            per_iteration=True,
        ),
        MessageRule(
            tag="plain_update",
            sender=client,
            receiver=agg,
            kinds=("aggregate", "plain_control"),
            per_iteration=True,
            order=2,
            shape="(v,)",
            dtypes=("float64",),
            description="only with aggregation other than fedavg (no secure aggregation): the "
            "client's contribution in the clear, (p delta, p loss, p); or plain_control with "
            "meta withdraw: the reason it sits out",
        ),
        _blob_rule(
            "sa_keys",
            client,
            agg,
            ("public_key", "plain_control"),
            2,
            KEYS_FORMAT,
            "the client's two fresh X25519 public keys for the round (c: share encryption, "
            "s: pairwise masks); or plain_control with meta withdraw: the reason it sits out",
        ),
        _blob_rule(
            "sa_directory",
            agg,
            client,
            ("public_key", "plain_control"),
            3,
            DIRECTORY_FORMAT,
            "U1's public keys; plain_control with meta excluded: this client is out of round r",
        ),
        _blob_rule(
            "sa_shares",
            client,
            agg,
            ("ciphertext_vector",),
            4,
            SHARES_FORMAT,
            "AES-GCM encrypted Shamir shares of the client's mask key and self-mask seed, one "
            "per other client (the aggregator only routes them)",
        ),
        _blob_rule(
            "sa_routed",
            agg,
            client,
            ("ciphertext_vector", "plain_control"),
            5,
            SHARES_FORMAT,
            "the encrypted shares addressed to this client; plain_control: excluded",
        ),
        array_rule(
            "sa_masked",
            client,
            agg,
            "masked_vector",
            6,
            "(v,)",
            "the client's quantised contribution plus its self mask and pairwise masks, mod 2^64",
            per_iteration=True,
            dtype="uint64",
        ),
        MessageRule(
            tag="sa_unmask",
            sender=agg,
            receiver=client,
            kinds=("plain_control",),
            per_iteration=True,
            order=7,
            shape=NONE,
            description="meta survivors / dropped (client ids), or excluded",
        ),
        _blob_rule(
            "sa_unmask_shares",
            client,
            agg,
            ("masked_vector",),
            8,
            UNMASK_FORMAT,
            "this client's Shamir shares of the survivors' self-mask seeds and of the dropped "
            "clients' mask keys (never both for one client)",
        ),
    )


def secagg_protocol(component_type: str, model: str) -> Protocol:
    """The rounds of a horizontal model over secure aggregation (homo_lr; homo_nn reuses them):
    `model` names what the parameter vector is."""
    return Protocol(
        component_type=component_type,
        description=(
            f"horizontal {model}, FedAvg over Bonawitz secure aggregation (fedcrypto.secagg): "
            "the aggregator (the arbiter when the pipeline names one, else the guest) learns "
            "only the sum of the clients' weighted updates, their weighted loss and their "
            "total weight per round, and who took part; with a robust aggregation (median, "
            "trimmed mean, Krum, FedAvg clipped by the aggregator) every client sends its "
            "update in the clear instead (plain_update) and the aggregator sees each one"
        ),
        dims={
            "d": f"model length: the parameters of the {model}",
            "v": "a client's contribution: d + 2 (weighted loss, weight)",
        },
        messages=(
            *_round_messages("guest", "host"),
            *_round_messages("arbiter", "guest"),
            *_round_messages("arbiter", "host"),
            MessageRule(
                tag="model_shape",
                sender="guest",
                receiver="arbiter",
                kinds=("plain_control",),
                order=0,
                shape=NONE,
                description="with an arbiter (which has no data): meta features (the column "
                "count) and digest (of the column names), once before round 0",
            ),
        ),
    )


HOMO_LR_PROTOCOL = secagg_protocol("homo_lr", "logistic regression (features + 1 intercept)")

HOMO_LR_PREDICT_PROTOCOL = Protocol(
    component_type="homo_lr_predict",
    description="every party scores its own rows with the shared model; nothing crosses",
    messages=(),
)
