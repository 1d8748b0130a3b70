"""homo_nn_predict: each party scores its own rows with the shared network (the built-in one,
or the PyTorch module named by `model`); nothing crosses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from fedflow.components.homo_nn import math as nmath
from fedflow.components.homo_nn.params import HomoNnPredictParams
from fedflow.components.homo_nn.torch_learner import PREFIX, TorchLearner, parameter_names
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


def weights_for(model: Table, names: list[str]) -> tuple[nmath.Floats, int]:
    """The network's parameter vector for features `names` (in that order) and its hidden
    units (TableError naming a missing parameter)."""
    ids = [str(v) for v in model.ids.tolist()]
    hidden = sum(1 for v in ids if v.startswith("output.hidden"))
    if hidden == 0:
        raise TableError("homo_nn_predict: the model has no output weights (not a homo_nn model)")
    position = {v: i for i, v in enumerate(ids)}
    wanted = nmath.parameter_names(names, hidden)
    missing = [v for v in wanted if v not in position]
    if missing:
        raise TableError(f"homo_nn_predict: the model has no parameter {missing[0]!r}")
    values = model.features[:, 0]
    return np.array([values[position[v]] for v in wanted], dtype=np.float64), hidden


def scores(
    model: Table, table: Table, path: str | None = None, where: str = "here"
) -> nmath.Floats:
    """Each row's score under `model`: the built-in network's table, or a PyTorch module's
    (ids torch.*), which needs the module's import path `path` (the training's `model`)."""
    ids = [str(v) for v in model.ids.tolist()]
    if ids and ids[0].startswith(PREFIX):
        if path is None:
            raise TableError(
                "homo_nn_predict: the model is a PyTorch module's (its rows are torch.*): give "
                "homo_nn_predict the `model` import path the training used"
            )
        learner = TorchLearner(path, where=where)
        features = len(table.feature_names)
        expected = parameter_names(learner.module(features))
        if expected != ids:
            raise TableError(
                f"homo_nn_predict: the model table does not fit {path!r} over {features} "
                f"columns ({len(ids)} parameters, the module has {len(expected)}, or other names)"
            )
        return learner.scores(model.features[:, 0], table.features)
    weights, hidden = weights_for(model, list(table.feature_names))
    return nmath.scores(weights, np.asarray(table.features, dtype=np.float64), hidden)


def run(ctx: ComponentContext) -> Mapping[str, Table]:
    params = ctx.params_as(HomoNnPredictParams)
    table, model = ctx.input("data"), ctx.input("model")
    score = scores(model, table, params.model, where=f"at party {ctx.party_id}")
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
