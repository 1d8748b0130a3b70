"""homo_lr test helpers: pipelines over N clients, the example data, AUC on the test rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedflow.components.evaluation.math import binary_metrics
from fedflow.components.homo_lr import math as hmath
from fedflow.components.homo_nn import math as nmath
from fedflow.tables import Table, read_table

EXAMPLE_DATA = Path(__file__).resolve().parents[2] / "examples" / "data"


def pipeline(
    tables: list[str],
    test_table: str,
    params: dict[str, Any],
    name: str = "homo-lr-test",
    arbiter: str | None = None,
    *,
    score: bool = True,
) -> dict[str, Any]:
    """reader -> homo_lr -> reader(test) -> homo_lr_predict -> evaluation (score=False: the
    first two), with the client i reading tables[i] (party 9999 is the guest, then 10000,
    10001, ...)."""
    parties = [str(9999 + i) for i in range(len(tables))]
    spec: dict[str, Any] = {
        "name": name,
        "parties": {"guest": parties[0], "host": parties[1:], "arbiter": arbiter},
        "components": [
            {
                "name": "reader_0",
                "type": "reader",
                "params": {p: {"table": t} for p, t in zip(parties, tables, strict=True)},
            },
            {
                "name": "homo_lr_0",
                "type": "homo_lr",
                "inputs": {"data": "reader_0.data"},
                "params": {"common": params},
            },
            {"name": "reader_1", "type": "reader", "params": {"common": {"table": test_table}}},
            {
                "name": "predict_0",
                "type": "homo_lr_predict",
                "inputs": {"model": "homo_lr_0.model", "data": "reader_1.data"},
            },
            {
                "name": "eval_0",
                "type": "evaluation",
                "inputs": {"data": "predict_0.data"},
                "params": {"common": {"score_column": "score"}},
            },
        ],
    }
    if not score:  # training only: the test scores the model itself
        spec["components"] = spec["components"][:2]
    return spec


def training(params: dict[str, Any]) -> hmath.LocalTraining:
    return hmath.LocalTraining(
        params.get("local_epochs", 1),
        params.get("batch_size", 32),
        params.get("learning_rate", 0.1),
        params.get("alpha", 0.0),
        params.get("seed", 0),
        params.get("proximal_mu", 0.0),
        params.get("learning_rate_decay", 1.0),
    )


def parts(tables: list[Table]) -> list[tuple[hmath.Floats, hmath.Floats]]:
    out = []
    for t in tables:
        assert t.labels is not None
        out.append((t.features, t.labels))
    return out


def auc_on(weights: hmath.Floats, test: Table) -> float:
    assert test.labels is not None
    scores = hmath.sigmoid(hmath.with_intercept(test.features) @ weights)
    return binary_metrics(test.labels == 1.0, scores, threshold=0.5, curve_points=2).auc


def nn_auc_on(weights: hmath.Floats, test: Table, hidden: int) -> float:
    """The built-in homo_nn network's test AUC."""
    assert test.labels is not None
    scores = nmath.scores(weights, test.features, hidden)
    return binary_metrics(test.labels == 1.0, scores, threshold=0.5, curve_points=2).auc


def load(name: str) -> Table:
    return read_table(EXAMPLE_DATA / f"{name}.csv")
