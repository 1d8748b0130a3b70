"""homo_nn on a non-IID split beats every party's own network: default credit's 24,000 training
rows sorted by feature x1 and cut in thirds, so each party sees one slice of the feature space
(and its own default rate). The federated network is math.reference_fedavg's, which the
component's model equals to 1e-9 (test_homo_nn.py; bench/homo/non_iid.py runs the component
itself on this split)."""

from __future__ import annotations

import numpy as np
from fedflow.components.evaluation.math import binary_metrics
from fedflow.components.homo_lr import math as hmath
from fedflow.components.homo_nn import math as nmath

from tests.homo.conftest import load, training

CREDIT = ["default_credit_homo_guest", "default_credit_homo_host_1", "default_credit_homo_host_2"]
PARAMS = {"rounds": 3, "batch_size": 64, "learning_rate": 0.1, "alpha": 0.01, "seed": 0}
HIDDEN = 8


def sorted_thirds(column: int) -> list[tuple[hmath.Floats, hmath.Floats]]:
    """The pooled training rows sorted by one feature, in three parts (stable order)."""
    tables = [load(name) for name in CREDIT]
    x = np.vstack([t.features for t in tables])
    y = np.concatenate([t.labels for t in tables if t.labels is not None])
    order = np.argsort(x[:, column], kind="stable")
    return [(x[rows], y[rows]) for rows in np.array_split(order, 3)]


def test_federated_network_beats_each_partys_own_network_on_a_non_iid_split() -> None:
    # Prepare
    split = sorted_thirds(1)
    test = load("default_credit_homo_test")
    assert test.labels is not None

    def auc(weights: hmath.Floats) -> float:
        scores = nmath.scores(weights, test.features, HIDDEN)
        return binary_metrics(test.labels == 1.0, scores, threshold=0.5, curve_points=2).auc

    # Execute: the federated network, and each party's network trained on its rows alone
    federated = auc(nmath.reference_fedavg(split, training(PARAMS), PARAMS["rounds"], HIDDEN))
    own = [
        auc(nmath.reference_pooled(x, y, training(PARAMS), PARAMS["rounds"], HIDDEN))
        for x, y in split
    ]

    # Assert: better than the best party alone, by a margin
    print(f"federated {federated:.5f}, each party alone {[round(a, 5) for a in own]}")
    assert federated > max(own) + 0.005
