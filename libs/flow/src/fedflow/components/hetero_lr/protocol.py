"""hetero_lr's declared messages (light: read by the pipeline validator, the audit service and
the protocol guard). The package docstring gives the exchange step by step."""

from __future__ import annotations

from typing import Final

from fedflow.alignment_protocol import with_alignment
from fedflow.kit import HE_DIMS, ciphertext_rule, masked_rule, public_key_rules
from fedflow.protocol import Protocol, array_rule, control_rule

MAX_HOSTS: Final = 16


def training_protocol(
    component_type: str,
    description: str,
    *,
    residual: str,
    peer_scores: str,
    host_cross: str,
    reveal_mode: bool,
    validation: bool = False,
    host_scores: str = "[[u_h]], host key",
) -> Protocol:
    """The training exchange of hetero_lr, or of a model with the same exchange and another
    residual (hetero_linr): what the residual, the peer scores and the cross term hold, and
    whether the reveal_host_scores mode exists."""
    revealed = (
        (
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
        )
        if reveal_mode
        else ()
    )
    validated = (
        (
            array_rule(
                "validate_scores",
                "host",
                "guest",
                "partial_score",
                4,
                "(v,)",
                "validate_data only, after each epoch: u_h = X_h w_h for each validation row, "
                "in plaintext (as hetero_lr_predict sends them); the guest learns the host's "
                "partial score of every validation row once per epoch",
                per_iteration=True,
            ),
        )
        if validation
        else ()
    )
    return Protocol(
        component_type=component_type,
        description=description,
        dims={
            **HE_DIMS,
            "k_g2": "(the guest's feature count + 1 (intercept) + 2 (loss aggregates)) times "
            "the classes: one lane per class with multi_class (fedflow.components.hetero_lr."
            "lanes), 1 lane without",
            "classes": "class lanes: the classes with multi_class (one-vs-rest, every class in "
            "the same messages), 1 without",
            **(
                {
                    "v": "validation rows (validate_data; every party has the same) times the "
                    "classes (multi_class: lane after lane)"
                }
                if validation
                else {}
            ),
        },
        messages=(
            *public_key_rules(
                "the guest's Paillier public key",
                "the host's Paillier public key; meta: its feature count",
            ),
            ciphertext_rule("residual", "guest", "host", 1, "*", residual, decrypt=False),
            ciphertext_rule(
                "host_scores",
                "host",
                "guest",
                1,
                "*",
                host_scores,
                decrypt=False,
            ),
            ciphertext_rule("peer_scores", "host", "host", 1, "*", peer_scores, decrypt=False),
            # Rows: the sending host's feature count (times the class lanes), checked against
            # what it announced (a dim name would bind one count for all hosts).
            ciphertext_rule(
                "host_gradient",
                "host",
                "guest",
                2,
                "*",
                "[[X_h^T d + R_h]], guest key; multi_class: one lane of k_h per class, "
                "(classes * k_h, c), a stopped class's lane [[0 + R_h]] (packed residual: one "
                "block of k_h per packed group, (ceil(active / S) * k_h, c))",
                per_iteration_decrypts=MAX_HOSTS,  # one per host (the guard counts per tag)
            ),
            ciphertext_rule(
                "guest_gradient",
                "guest",
                "host",
                2,
                "k_g2",
                "[[A^T u_h + R_g]], host key; multi_class: one lane per class, a stopped "
                "class's lane [[0 + R_g]]",
            ),
            ciphertext_rule(
                "host_cross",
                "host",
                "guest",
                2,
                "classes",
                host_cross,
                per_iteration_decrypts=MAX_HOSTS,
            ),
            masked_rule("host_gradient_masked", "guest", "host", "*", "X_h^T d + R_h"),
            masked_rule("guest_gradient_masked", "host", "guest", "k_g2", "A^T u_h + R_g"),
            *revealed,
            *validated,
            array_rule(
                "host_score_sq",
                "host",
                "guest",
                "aggregate",
                3,
                "()",
                "sum of u_h^2 over the batch (for the Taylor loss); the binary model",
                per_iteration=True,
            ),
            array_rule(
                "host_class_score_sq",
                "host",
                "guest",
                "aggregate",
                3,
                "(classes,)",
                "multi_class: per class lane, the sum of u_h^2 over the batch (for that class's "
                "Taylor loss; 0 for a class that stopped early)",
                per_iteration=True,
            ),
            control_rule(
                "epoch_end",
                "guest",
                "host",
                4,
                "after an epoch's last batch: stop (early stopping) or go on; multi_class: "
                "per class lane, best epoch and frozen (stopped early) as '0'/'1' strings",
            ),
        ),
    )


_TRAINING = training_protocol(
    "hetero_lr",
    "vertical LR, separable sigmoid with one host (Taylor with several, or sigmoid: taylor), "
    "two Paillier keys, integer masks, no arbiter",
    residual="[[u_g/4 + 0.5 - y]], guest key (sigmoid separable: [[a_0 - y; a_1; a_2]]); "
    "multi_class: the classes still training, lane after lane, (active * b, c) (separable: "
    "(active * 3b, c); sigmoid taylor with one host: packed, up to S classes a plaintext "
    "(fedflow.components.hetero_lr.packing), (ceil(active / S) * b, c))",
    peer_scores="several hosts: [[u_h / 4]] under the guest key, to the other hosts "
    "(multi_class: per active class lane, as residual)",
    host_cross="several hosts: [[sum over other hosts h' of u_h . u_h' / 4]], guest key, one "
    "per class lane (0 for a stopped class)",
    reveal_mode=True,
    validation=True,
    host_scores="[[u_h]], host key (sigmoid separable: [[b_1(u_h); b_2(u_h); u_h]]); "
    "multi_class: per active class lane, as residual",
)
HETERO_LR_PROTOCOL = with_alignment(_TRAINING)
"""The training exchange and, before it, the row-alignment round trip (fedflow.kit.alignment)."""


def predict_protocol(component_type: str, output: str, classes: bool = False) -> Protocol:
    """hetero_lr_predict's exchange (one message per host), for a model that outputs `output`
    of the linear score; `classes`: a one-vs-rest model's host sends one score per row and
    class instead (host_class_scores)."""
    per_class = (
        (
            array_rule(
                "host_class_scores",
                "host",
                "guest",
                "partial_score",
                1,
                "(mk,)",
                "one-vs-rest models: u_h = X_h W_h, one partial score per row and class (row "
                "by row, the classes of a row side by side), in plaintext: REVEALED to the "
                "guest as host_partial_scores is",
            ),
        )
        if classes
        else ()
    )
    return Protocol(
        component_type=component_type,
        description=(
            "batch prediction, one message per host: the host's per-row partial scores u_h to "
            f"the guest in plaintext. The guest learns u_h for every row (and outputs {output}); "
            "the host learns nothing (it receives no message)"
        ),
        dims={
            "m": "rows to predict (the guest's row count; every host sends that many)",
            **({"mk": "rows to predict times the model's classes"} if classes else {}),
        },
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
            *per_class,
        ),
    )


HETERO_LR_PREDICT_PROTOCOL = with_alignment(
    predict_protocol("hetero_lr_predict", "sigmoid(u_g + sum u_h)", classes=True)
)
