"""homo_nn on non-IID splits: the federated network against each party's own network and the
network trained on the pooled rows, all scored on default credit's test set (AUC).

    .venv/bin/python bench/homo/non_iid.py [--rounds 5] [--hidden 8] [--component]

Default credit's 24,000 training rows (the three homo files pooled) are cut in three parties
four ways: sorted by one feature (x0, x1, x12) and cut in thirds, so each party sees one slice
of the feature space; and by label skew (party 1 gets 70% of the defaults). Each way, the
federated network is homo_nn's plaintext FedAvg reference (math.reference_fedavg, which the
component's model equals to 1e-9), each party's own network is the same network trained on its
rows alone for as many epochs, and the pooled one on all rows. With --component the x1 split
also runs the homo_nn component itself in standalone mode (secure aggregation, every message
through the signed relay) and checks it equals the reference.
Results: bench/homo/non_iid.json (docs/benchmarks.md and docs/homo_nn.md by hand).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fedflow.components.evaluation.math import binary_metrics  # noqa: E402
from fedflow.components.homo_lr import math as hmath  # noqa: E402
from fedflow.components.homo_nn import math as nmath  # noqa: E402
from fedflow.tables import Table, read_table  # noqa: E402

DATA = ROOT / "examples" / "data"
CREDIT = ["default_credit_homo_guest", "default_credit_homo_host_1", "default_credit_homo_host_2"]
Split = list[tuple[hmath.Floats, hmath.Floats]]


def pooled() -> tuple[hmath.Floats, hmath.Floats]:
    tables = [read_table(DATA / f"{name}.csv") for name in CREDIT]
    x = np.vstack([t.features for t in tables])
    y = np.concatenate([t.labels for t in tables if t.labels is not None])
    return x, y


def by_feature(x: hmath.Floats, y: hmath.Floats, column: int) -> Split:
    order = np.argsort(x[:, column], kind="stable")
    return [(x[rows], y[rows]) for rows in np.array_split(order, 3)]


def by_label(x: hmath.Floats, y: hmath.Floats, share: float = 0.7) -> Split:
    """Party 1 gets `share` of the positive rows, the others split the rest; negatives evenly."""
    rng = np.random.default_rng(0)
    pos, neg = rng.permutation(np.flatnonzero(y == 1)), rng.permutation(np.flatnonzero(y == 0))
    cut = int(share * pos.size)
    pos_parts = [pos[:cut], *np.array_split(pos[cut:], 2)]
    neg_parts = np.array_split(neg, 3)
    return [
        (x[np.concatenate([p, n])], y[np.concatenate([p, n])])
        for p, n in zip(pos_parts, neg_parts, strict=True)
    ]


def run_component(split: Split, names: list[str], params: dict[str, Any], hidden: int) -> Any:
    """The homo_nn component in standalone mode on `split`; the guest's model weights."""
    from fedflow.pipeline import Pipeline
    from fedflow.standalone import run_pipeline

    parties = [str(9999 + i) for i in range(len(split))]
    work = Path(tempfile.mkdtemp(prefix="bench-non-iid-"))
    folders = {}
    for party, (x, y) in zip(parties, split, strict=True):
        folder = work / party
        folder.mkdir()
        header = ["id", "y", *names]
        rows = [",".join(header)]
        for i, (xi, yi) in enumerate(zip(x, y, strict=True)):
            rows.append(",".join([f"r{party}_{i}", str(int(yi)), *(repr(float(v)) for v in xi)]))
        (folder / "part.csv").write_text("\n".join(rows) + "\n")
        folders[party] = folder
    spec = {
        "name": "bench-non-iid",
        "parties": {"guest": parties[0], "host": parties[1:]},
        "components": [
            {"name": "reader_0", "type": "reader", "params": {"common": {"table": "part"}}},
            {
                "name": "homo_nn_0",
                "type": "homo_nn",
                "inputs": {"data": "reader_0.data"},
                "params": {"common": {**params, "hidden_units": hidden}},
            },
        ],
    }
    result = run_pipeline(Pipeline.from_dict(spec), folders, work / "run")
    return result.output(parties[0], "guest", "homo_nn_0", "model").features[:, 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=8)
    parser.add_argument("--component", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("non_iid.json"))
    args = parser.parse_args()
    load_before = os.getloadavg()
    params = {"rounds": args.rounds, "batch_size": 64, "learning_rate": 0.1, "alpha": 0.01}
    training = hmath.LocalTraining(1, 64, 0.1, 0.01, 0)
    x, y = pooled()
    test: Table = read_table(DATA / "default_credit_homo_test.csv")
    assert test.labels is not None

    def auc(weights: hmath.Floats) -> float:
        scores = nmath.scores(weights, test.features, args.hidden)
        return binary_metrics(test.labels == 1.0, scores, threshold=0.5, curve_points=2).auc

    pooled_auc = auc(nmath.reference_pooled(x, y, training, args.rounds, args.hidden))
    splits = {
        "sorted by x0": by_feature(x, y, 0),
        "sorted by x1": by_feature(x, y, 1),
        "sorted by x12": by_feature(x, y, 12),
        "label skew 70%": by_label(x, y),
    }
    rows = []
    for name, split in splits.items():
        started = time.perf_counter()
        federated = nmath.reference_fedavg(split, training, args.rounds, args.hidden)
        own = [
            auc(nmath.reference_pooled(px, py, training, args.rounds, args.hidden))
            for px, py in split
        ]
        row: dict[str, Any] = {
            "split": name,
            "rows": [int(py.size) for _, py in split],
            "default_rate": [round(float(py.mean()), 3) for _, py in split],
            "federated_auc": auc(federated),
            "own_auc": own,
            "pooled_auc": pooled_auc,
            "margin_over_best_own": auc(federated) - max(own),
            "seconds": time.perf_counter() - started,
        }
        if args.component and name == "sorted by x1":
            weights = run_component(
                split, [f"x{i}" for i in range(x.shape[1])], params, args.hidden
            )
            row["component_equals_reference"] = bool(
                np.allclose(weights, federated, rtol=0, atol=1e-9)
            )
            row["component_auc"] = auc(weights)
        rows.append(row)
        print(json.dumps(row))
    out = {
        "model": f"homo_nn, {args.hidden} hidden units, {args.rounds} rounds, batch 64, lr 0.1",
        "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
        "rows": rows,
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
