"""hetero_lr's declared messages (light: read by the pipeline validator, the audit service and
the protocol guard). The package docstring gives the exchange step by step."""

from __future__ import annotations

from typing import Final

from fedflow.kit import HE_DIMS
from fedflow.kit import PAILLIER_KEY_FORMAT as KEY_FORMAT
from fedflow.protocol import NONE, DecryptRule, MessageRule, Protocol

MAX_HOSTS: Final = 16


def _ct_rule(
    tag: str,
    sender: str,
    receiver: str,
    order: int,
    rows: str,
    what: str,
    *,
    decrypt: bool = True,
    per_iteration_decrypts: int = 1,
) -> MessageRule:
    return MessageRule(
        tag=tag,
        sender=sender,  # type: ignore[arg-type]
        receiver=receiver,  # type: ignore[arg-type]
        kinds=("ciphertext_vector",),
        per_iteration=True,
        order=order,
        shape=f"({rows}, c)",
        dtypes=("uint64",),
        decrypt=(
            DecryptRule(by=receiver, max_per_iteration=per_iteration_decrypts)  # type: ignore[arg-type]
            if decrypt
            else None
        ),
        description=what,
    )


def _masked_rule(tag: str, sender: str, receiver: str, rows: str, what: str) -> MessageRule:
    return MessageRule(
        tag=tag,
        sender=sender,  # type: ignore[arg-type]
        receiver=receiver,  # type: ignore[arg-type]
        kinds=("masked_vector",),
        per_iteration=True,
        order=3,
        shape=f"({rows}, p)",
        dtypes=("uint64",),
        description=what,
    )


HETERO_LR_PROTOCOL = Protocol(
    component_type="hetero_lr",
    description="vertical LR, Taylor sigmoid, two Paillier keys, integer masks, no arbiter",
    dims={
        **HE_DIMS,
        "k_g2": "the guest's feature count + 1 (intercept) + 2 (loss aggregates)",
    },
    messages=(
        MessageRule(
            tag="public_key",
            sender="guest",
            receiver="host",
            kinds=("public_key",),
            order=1,
            shape=NONE,
            blob_formats=(KEY_FORMAT,),
            description="the guest's Paillier public key",
        ),
        MessageRule(
            tag="public_key",
            sender="host",
            receiver="guest",
            kinds=("public_key",),
            order=1,
            shape=NONE,
            blob_formats=(KEY_FORMAT,),
            description="the host's Paillier public key; meta: its feature count",
        ),
        _ct_rule(
            "residual", "guest", "host", 1, "*", "[[u_g/4 + 0.5 - y]], guest key", decrypt=False
        ),
        _ct_rule("host_scores", "host", "guest", 1, "*", "[[u_h]], host key", decrypt=False),
        _ct_rule(
            "peer_scores",
            "host",
            "host",
            1,
            "*",
            "several hosts: [[u_h / 4]] under the guest key, to the other hosts",
            decrypt=False,
        ),
        # Rows: the sending host's feature count, checked against what it announced (a dim
        # name would bind one count for all hosts).
        _ct_rule(
            "host_gradient",
            "host",
            "guest",
            2,
            "*",
            "[[X_h^T d + R_h]], guest key",
            per_iteration_decrypts=MAX_HOSTS,  # one per host (the guard counts per tag)
        ),
        _ct_rule("guest_gradient", "guest", "host", 2, "k_g2", "[[A^T u_h + R_g]], host key"),
        _ct_rule(
            "host_cross",
            "host",
            "guest",
            2,
            "1",
            "several hosts: [[sum over other hosts h' of u_h . u_h' / 4]], guest key",
            per_iteration_decrypts=MAX_HOSTS,
        ),
        _masked_rule("host_gradient_masked", "guest", "host", "*", "X_h^T d + R_h"),
        _masked_rule("guest_gradient_masked", "host", "guest", "k_g2", "A^T u_h + R_g"),
        MessageRule(
            tag="host_scores_revealed",
            sender="host",
            receiver="guest",
            kinds=("partial_score",),
            per_iteration=True,
            order=1,
            shape="(*,)",
            dtypes=("float64",),
            description=(
                "reveal_host_scores mode only: u_h = X_h w_h for each row of the batch, in "
                "plaintext; the guest learns the host's partial score of every training row"
            ),
        ),
        MessageRule(
            tag="host_score_sq",
            sender="host",
            receiver="guest",
            kinds=("aggregate",),
            per_iteration=True,
            order=3,
            shape="()",
            dtypes=("float64",),
            description="sum of u_h^2 over the batch (for the Taylor loss)",
        ),
        MessageRule(
            tag="epoch_end",
            sender="guest",
            receiver="host",
            kinds=("plain_control",),
            per_iteration=True,
            order=4,
            shape=NONE,
            description="after an epoch's last batch: stop (early stopping) or go on",
        ),
    ),
)

HETERO_LR_PREDICT_PROTOCOL = Protocol(
    component_type="hetero_lr_predict",
    description=(
        "batch prediction, one message per host: the host's per-row partial scores u_h to the "
        "guest in plaintext. The guest learns u_h for every row (and outputs sigmoid(u_g + sum "
        "u_h)); the host learns nothing (it receives no message)"
    ),
    dims={"m": "rows to predict (the guest's row count; every host sends that many)"},
    messages=(
        MessageRule(
            tag="host_partial_scores",
            sender="host",
            receiver="guest",
            kinds=("partial_score",),
            order=1,
            shape="(m,)",
            dtypes=("float64",),
            description=(
                "u_h = X_h w_h for each row, in plaintext (per-row partial linear predictor of "
                "the host's features under its weights): REVEALED to the guest, which could "
                "compute it anyway from the scores it is meant to get"
            ),
        ),
    ),
)
