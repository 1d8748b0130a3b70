"""hetero_secureboost's declared messages (light: read by the pipeline validator, the audit
service and the protocol guard). The package docstring gives the exchange step by step.

Iterations: tree t, depth d is iteration t * max_depth + d (d < max_depth).
"""

from __future__ import annotations

from typing import Final

from fedflow.alignment_protocol import with_alignment
from fedflow.kit import HE_DIMS, ciphertext_rule, public_key_rules
from fedflow.protocol import NONE, MessageRule, Protocol, array_rule, control_rule

MAX_HOSTS: Final = 16

SECUREBOOST_DIMS: Final = {
    **HE_DIMS,
    "n": "rows of the training table (every party has the same rows in the same order)",
}

_TRAINING_EXCHANGE = Protocol(
    component_type="hetero_secureboost",
    description=(
        "vertical gradient-boosted trees (SecureBoost): the guest's Paillier key, (g, h) packed "
        "one plaintext per row, encrypted per-bin histograms at the hosts, compressed several "
        "cells per ciphertext; the guest picks every split and tells the winning host an id"
    ),
    dims=SECUREBOOST_DIMS,
    messages=(
        public_key_rules("the guest's Paillier public key")[0],
        MessageRule(
            tag="host_features",
            sender="host",
            receiver="guest",
            kinds=("plain_control",),
            order=1,
            shape=NONE,
            description="meta: the host's feature count (its histograms' shape)",
        ),
        ciphertext_rule(
            "gh",
            "guest",
            "host",
            1,
            "n",
            "[[q_g << (c + f) | q_h << c | 1]] per row, guest key (0 for an unsampled row); "
            "sent at depth 0 of every tree the hosts take part in",
            decrypt=False,
        ),
        array_rule(
            "positions",
            "guest",
            "host",
            "plain_control",
            1,
            "(n,)",
            "each row's open node at this depth (-1: in a leaf); meta: nodes. The host learns "
            "the instance space of every node, as in SecureBoost",
            per_iteration=True,
            dtype="int32",
        ),
        array_rule(
            "histogram_cells",
            "host",
            "guest",
            "plain_control",
            2,
            "(*,)",
            "per node, feature and bin of the histograms that follow (the smaller child of each "
            "sibling pair): 0 empty (no row of the node; only when every row is sampled), 1 sent, "
            "2 left out (the node's most frequent bin of the feature, restored by the guest from "
            "the node's total); the guest learns no more than the cells' row counts tell it",
            per_iteration=True,
            dtype="uint8",
        ),
        ciphertext_rule(
            "histograms",
            "host",
            "guest",
            2,
            "*",
            "the host's (g, h, rows) of the cells histogram_cells lists as sent, in (node, "
            "feature, bin) order, compressed and re-randomised, guest key; for each sibling "
            "pair only the smaller child (the guest subtracts)",
            per_iteration_decrypts=MAX_HOSTS,
        ),
        array_rule(
            "splits",
            "guest",
            "host",
            "plain_control",
            3,
            "(*, 4)",
            "per open node: [heap id, split id of this host or -1, missing goes left, gain]; "
            "a split id is slot * max_bin + bin, the slot an opaque place in the host's secret "
            "per-tree order of its features; meta: next_nodes (0: the tree is complete), ties "
            "(JSON, only where several slots of the winner tie: node -> [[id, missing left]])",
            per_iteration=True,
        ),
        array_rule(
            "instance_split",
            "host",
            "guest",
            "partial_score",
            4,
            "(n,)",
            "for the rows at the nodes this host won: 1 left, 0 right (-1 elsewhere); the "
            "guest learns each such node's children's instance spaces; meta: chosen (JSON, "
            "node -> the tied candidate the host took, first in its own feature order)",
            per_iteration=True,
            dtype="int8",
        ),
        array_rule(
            "validate_directions",
            "host",
            "guest",
            "partial_score",
            5,
            "(*,)",
            "with a validate_data input, at a tree's last iteration: for every validation row "
            "and each node of that tree the host split, 1 = left (row-major)",
            per_iteration=True,
            dtype="uint8",
        ),
        control_rule(
            "boost_stop",
            "guest",
            "host",
            6,
            "early stopping, at a round's last iteration: meta stop, keep_trees",
        ),
    ),
)
HETERO_SECUREBOOST_PROTOCOL = with_alignment(_TRAINING_EXCHANGE)
"""hetero_secureboost's messages: the row-alignment check (fedflow.kit.alignment), then the
above."""

_PREDICT_EXCHANGE = Protocol(
    component_type="hetero_secureboost_predict",
    description=(
        "batch prediction, one message per host: for every row and every node the host splits, "
        "which way the row goes (never the threshold); the guest walks the trees"
    ),
    # Each host sends rows x its own split count (checked by the guest): "*", not a named dim
    # (which would bind one size for all hosts).
    messages=(
        array_rule(
            "host_directions",
            "host",
            "guest",
            "partial_score",
            1,
            "(*,)",
            "rows x the host's split nodes; 1 = left, row-major (row, host node in (tree, "
            "node) order): the guest learns, for every row, the side of each of the host's "
            "split nodes",
            dtype="uint8",
        ),
    ),
)
HETERO_SECUREBOOST_PREDICT_PROTOCOL = with_alignment(_PREDICT_EXCHANGE)
"""hetero_secureboost_predict's messages: the row-alignment check, then the above."""
