"""homo_lr_predict: each party scores its own rows with the shared model; nothing crosses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from fedflow.components.homo_lr import math as hmath
from fedflow.components.homo_lr.learner import INTERCEPT
from fedflow.components.homo_lr.params import HomoLrPredictParams
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


def weights_for(model: Table, names: list[str]) -> hmath.Floats:
    """The model's weights in the order of `names` + intercept (TableError naming a missing
    one)."""
    position = {str(name): i for i, name in enumerate(model.ids.tolist())}
    missing = [name for name in [*names, INTERCEPT] if name not in position]
    if missing:
        raise TableError(f"homo_lr_predict: the model has no weight for {missing[0]!r}")
    weights = model.features[:, 0]
    return np.array([weights[position[n]] for n in [*names, INTERCEPT]], dtype=np.float64)


def scores(model: Table, table: Table) -> hmath.Floats:
    x = np.nan_to_num(np.asarray(table.features, dtype=np.float64), nan=0.0)
    return hmath.sigmoid(hmath.with_intercept(x) @ weights_for(model, list(table.feature_names)))


def run(ctx: ComponentContext) -> Mapping[str, Table]:
    params = ctx.params_as(HomoLrPredictParams)
    table, model = ctx.input("data"), ctx.input("model")
    score = scores(model, table)
    predicted = (score >= params.threshold).astype(np.float64)
    ctx.metrics.log("rows", float(table.rows))
    ctx.metrics.log("positive_rate", float(predicted.mean()) if table.rows else 0.0)
    return {
        "data": Table(
            ids=table.ids,
            features=np.stack([score, predicted], axis=1),
            feature_names=["score", "predicted"],
            labels=table.labels,
            label_name=table.label_name,
        )
    }
