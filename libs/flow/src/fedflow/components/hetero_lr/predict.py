"""hetero_lr_predict: each host sends its partial scores; the guest outputs sigmoid(u_g + u_h)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from fedschemas import FederationData

from fedflow.components.hetero_lr import math as lrmath
from fedflow.components.hetero_lr import session
from fedflow.components.hetero_lr.params import HeteroLrPredictParams
from fedflow.components.hetero_lr.session import INTERCEPT
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


def weights_for(
    model: Table, names: list[str], component: str = "hetero_lr_predict"
) -> lrmath.Floats:
    """The model's weights in the order of `names` (TableError naming a missing one)."""
    position = {str(name): i for i, name in enumerate(model.ids.tolist())}
    missing = [name for name in names if name not in position]
    if missing:
        raise TableError(f"{component}: the model has no weight for {missing[0]!r}")
    weights = model.features[:, 0]
    return np.array([weights[position[name]] for name in names], dtype=np.float64)


def host(ctx: ComponentContext) -> Mapping[str, Table]:
    table, model = ctx.input("data"), ctx.input("model")
    names = list(table.feature_names)
    u_h = session.features(table) @ weights_for(model, names, ctx.component_type)
    ctx.federation.send(
        FederationData(kind="partial_score", array=u_h),
        to=ctx.parties["guest"][0],
        tag="host_partial_scores",
    )
    return {}


def linear_scores(ctx: ComponentContext, table: Table, model: Table) -> lrmath.Floats:
    """The guest's u_g plus every host's partial scores, row by row: z = u_g + sum u_h."""
    weights = weights_for(model, [*table.feature_names, INTERCEPT], ctx.component_type)
    z = lrmath.with_intercept(session.features(table)) @ weights
    ctx.federation.bind_dims(m=table.rows)
    for party, got in ctx.federation.recv_all(frm="host", tag="host_partial_scores").items():
        if got.array is None:
            raise ValueError(f"{ctx.component_type}: host {party} sent no scores")
        z = z + np.asarray(got.array, dtype=np.float64)
    return z


def guest(ctx: ComponentContext) -> Mapping[str, Table]:
    params = ctx.params_as(HeteroLrPredictParams)
    table, model = ctx.input("data"), ctx.input("model")
    score = lrmath.sigmoid(linear_scores(ctx, table, model))
    predicted = (score >= params.threshold).astype(np.float64)
    ctx.metrics.log("rows", float(table.rows))
    ctx.metrics.log("positive_rate", float(predicted.mean()))
    return {
        "data": Table(
            ids=table.ids,
            features=np.stack([score, predicted], axis=1),
            feature_names=["score", "predicted"],
            labels=table.labels,
            label_name=table.label_name,
        )
    }
