"""hetero_lr's declared messages (light: read by the pipeline validator, the audit service and
the protocol guard). The package docstring gives the exchange step by step."""

from __future__ import annotations

from typing import Final

from fedflow.kit import HE_DIMS, ciphertext_rule, masked_rule, public_key_rules
from fedflow.protocol import Protocol, array_rule, control_rule

MAX_HOSTS: Final = 16


HETERO_LR_PROTOCOL = Protocol(
    component_type="hetero_lr",
    description="vertical LR, Taylor sigmoid, two Paillier keys, integer masks, no arbiter",
    dims={
        **HE_DIMS,
        "k_g2": "the guest's feature count + 1 (intercept) + 2 (loss aggregates)",
    },
    messages=(
        *public_key_rules(
            "the guest's Paillier public key",
            "the host's Paillier public key; meta: its feature count",
        ),
        ciphertext_rule(
            "residual", "guest", "host", 1, "*", "[[u_g/4 + 0.5 - y]], guest key", decrypt=False
        ),
        ciphertext_rule("host_scores", "host", "guest", 1, "*", "[[u_h]], host key", decrypt=False),
        ciphertext_rule(
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
        ciphertext_rule(
            "host_gradient",
            "host",
            "guest",
            2,
            "*",
            "[[X_h^T d + R_h]], guest key",
            per_iteration_decrypts=MAX_HOSTS,  # one per host (the guard counts per tag)
        ),
        ciphertext_rule(
            "guest_gradient", "guest", "host", 2, "k_g2", "[[A^T u_h + R_g]], host key"
        ),
        ciphertext_rule(
            "host_cross",
            "host",
            "guest",
            2,
            "1",
            "several hosts: [[sum over other hosts h' of u_h . u_h' / 4]], guest key",
            per_iteration_decrypts=MAX_HOSTS,
        ),
        masked_rule("host_gradient_masked", "guest", "host", "*", "X_h^T d + R_h"),
        masked_rule("guest_gradient_masked", "host", "guest", "k_g2", "A^T u_h + R_g"),
        array_rule(
            "host_scores_revealed",
            "host",
            "guest",
            "partial_score",
            1,
            "(*,)",
            "reveal_host_scores mode only: u_h = X_h w_h for each row of the batch, in "
            "plaintext; the guest learns the host's partial score of every training row",
            per_iteration=True,
        ),
        array_rule(
            "host_score_sq",
            "host",
            "guest",
            "aggregate",
            3,
            "()",
            "sum of u_h^2 over the batch (for the Taylor loss)",
            per_iteration=True,
        ),
        control_rule(
            "epoch_end",
            "guest",
            "host",
            4,
            "after an epoch's last batch: stop (early stopping) or go on",
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
        array_rule(
            "host_partial_scores",
            "host",
            "guest",
            "partial_score",
            1,
            "(m,)",
            "u_h = X_h w_h for each row, in plaintext (per-row partial linear predictor of "
            "the host's features under its weights): REVEALED to the guest, which could "
            "compute it anyway from the scores it is meant to get",
        ),
    ),
)
