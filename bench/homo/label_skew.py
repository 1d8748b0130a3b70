"""homo_nn under label skew: which training settings, if any, put the federated network above
every party's own network (issue #16's "above every single party's own model").

    .venv/bin/python bench/homo/label_skew.py

The split is bench/homo/non_iid.py's label skew (default credit's 24,000 training rows, party 1
holds 70% of the defaults: default rates 0.375, 0.114, 0.114). Each setting runs the plaintext
federated rounds (homo_nn's math, FedAvg weighted by rows, then the server optimizer: the same
arithmetic the component runs, which non_iid.py checks equals the component to 1e-9), each
party's own network trained on its rows alone with the same local training for as many
epochs, and the network trained on the pooled rows; all scored by AUC on default credit's test
set after every round. "positives x3": every party's positive rows taken three times (a
class reweighting, by duplicating rows; homo_nn has no class-weight param), in its own, the
federated and the pooled training alike. Results: bench/homo/label_skew.json (docs/benchmarks.md and
docs/homo_nn.md by hand).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fedflow.components.evaluation.math import binary_metrics  # noqa: E402
from fedflow.components.homo_lr import math as hmath  # noqa: E402
from fedflow.components.homo_nn import math as nmath  # noqa: E402
from fedflow.tables import read_table  # noqa: E402
from non_iid import DATA, by_label, pooled  # noqa: E402

HIDDEN = 8
SETTINGS: list[dict[str, Any]] = [
    {"name": "non_iid.py's (5 rounds)", "rounds": 5},
    {"name": "15 rounds", "rounds": 15},
    {"name": "15 rounds, 3 local epochs", "rounds": 15, "local_epochs": 3},
    {"name": "30 rounds, 3 local epochs", "rounds": 30, "local_epochs": 3},
    {"name": "15 rounds, lr 0.3", "rounds": 15, "learning_rate": 0.3},
    {"name": "15 rounds, FedProx mu 0.1", "rounds": 15, "proximal_mu": 0.1},
    {"name": "15 rounds, server lr 2", "rounds": 15, "server_learning_rate": 2.0},
    {
        "name": "20 rounds, FedAdam 0.05",
        "rounds": 20,
        "server": "adam",
        "server_learning_rate": 0.05,
    },
    {
        "name": "20 rounds, FedAdam 0.03",
        "rounds": 20,
        "server": "adam",
        "server_learning_rate": 0.03,
    },
    {
        "name": "20 rounds, FedYogi 0.05",
        "rounds": 20,
        "server": "yogi",
        "server_learning_rate": 0.05,
    },
    {"name": "5 rounds, positives x3", "rounds": 5, "positive_copies": 3},
    {"name": "15 rounds, positives x3", "rounds": 15, "positive_copies": 3},
]


def with_copies(x: hmath.Floats, y: hmath.Floats, copies: int) -> tuple[hmath.Floats, hmath.Floats]:
    """The rows with every positive row taken `copies` times."""
    rows = np.concatenate([np.arange(y.size), *[np.flatnonzero(y == 1)] * (copies - 1)])
    return x[rows], y[rows]


def main() -> None:
    load_before = os.getloadavg()
    x, y = pooled()
    split = by_label(x, y)
    test = read_table(DATA / "default_credit_homo_test.csv")
    assert test.labels is not None
    positives = test.labels == 1.0

    def auc(w: hmath.Floats) -> float:
        scores = nmath.scores(w, test.features, HIDDEN)
        return binary_metrics(positives, scores, threshold=0.5, curve_points=2).auc

    rows = []
    for setting in SETTINGS:
        started = time.perf_counter()
        rounds = setting["rounds"]
        copies = setting.get("positive_copies", 1)
        data = [
            (hmath.with_intercept(np.nan_to_num(px, nan=0.0)), py)
            for px, py in (with_copies(*part, copies) for part in split)
        ]
        all_x, all_y = with_copies(x, y, copies)
        x1_all = hmath.with_intercept(np.nan_to_num(all_x, nan=0.0))
        training = hmath.LocalTraining(
            setting.get("local_epochs", 1),
            64,
            setting.get("learning_rate", 0.1),
            0.01,
            0,
            setting.get("proximal_mu", 0.0),
        )
        rule = hmath.ServerRule(
            setting.get("server", "sgd"), setting.get("server_learning_rate", 1.0)
        )
        w = nmath.initial(x.shape[1], HIDDEN, 0)
        moments = rule.initial(w.size)
        federated = []
        for r in range(rounds):
            total = np.zeros(w.size + hmath.EXTRA)
            for i, (x1, py) in enumerate(data):
                local = nmath.local_sgd(w, x1, py, training, (0, r, i + 1), HIDDEN)
                total += hmath.contribution(w, local, 0.0, len(py))
            delta, _ = hmath.average(w, total)
            w, moments = rule.step(w, delta, moments)
            federated.append(auc(w))
        own = []
        for x1, py in [*data, (x1_all, all_y)]:
            v = nmath.initial(x.shape[1], HIDDEN, 0)
            for r in range(rounds):
                v = nmath.local_sgd(v, x1, py, training, (0, r, 0), HIDDEN)
            own.append(auc(v))
        row = {
            **setting,
            "federated_auc_by_round": [round(a, 5) for a in federated],
            "federated_auc": federated[-1],
            "own_auc": own[:3],
            "pooled_auc": own[3],
            "margin_over_best_own": federated[-1] - max(own[:3]),
            "seconds": time.perf_counter() - started,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {
        "model": f"homo_nn, {HIDDEN} hidden units, batch 64, alpha 0.01, label skew 70%",
        "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
        "rows": rows,
    }
    Path(__file__).with_name("label_skew.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
