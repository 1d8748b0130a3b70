"""hetero_lr_predict: each host sends its partial scores; the guest outputs sigmoid(u_g + u_h).
Each party first checks that its table has every column its part of the model weighs
(fedflow.kit.inputs: a missing one counted as weight 0 before), then that the parties' rows are
the same ids in the same order (fedflow.kit.alignment)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from fedschemas import FederationData

from fedflow.components.hetero_lr import math as lrmath
from fedflow.components.hetero_lr import session
from fedflow.components.hetero_lr.params import HeteroLrPredictParams
from fedflow.components.hetero_lr.session import INTERCEPT
from fedflow.kit.alignment import check_alignment
from fedflow.kit.inputs import check_predict_columns
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


def class_weights_for(model: Table, names: list[str], component: str) -> lrmath.Floats:
    """A one-vs-rest model's weights, (len(names), classes), rows in the order of `names`."""
    position = {str(name): i for i, name in enumerate(model.ids.tolist())}
    missing = [name for name in names if name not in position]
    if missing:
        raise TableError(f"{component}: the model has no weight for {missing[0]!r}")
    return np.asarray(model.features[[position[name] for name in names]], dtype=np.float64)


def trained_columns(model: Table) -> list[str]:
    """The columns a party's part of a linear model weighs (its rows, the intercept left out)."""
    return [str(name) for name in model.ids.tolist() if str(name) != INTERCEPT]


def checked_host(ctx: ComponentContext) -> Mapping[str, Table]:
    """hetero_lr_predict at a host: the checks, then `host` (hetero_linr_predict and
    hetero_poisson_predict make their own checks and call `host`)."""
    check_predict_columns(ctx, ctx.component_type, trained_columns(ctx.input("model")))
    check_alignment(ctx)
    return host(ctx)


def host(ctx: ComponentContext) -> Mapping[str, Table]:
    table, model = ctx.input("data"), ctx.input("model")
    names = list(table.feature_names)
    if model.features.shape[1] > 1:  # one-vs-rest: a column per class
        scores = session.features(table) @ class_weights_for(model, names, ctx.component_type)
        ctx.federation.send(
            FederationData(kind="partial_score", array=scores.ravel()),
            to=ctx.parties["guest"][0],
            tag="host_class_scores",
        )
        return {}
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


def class_scores(ctx: ComponentContext, table: Table, model: Table) -> lrmath.Floats:
    """One-vs-rest: the guest's U_g plus every host's partial scores, (rows, classes)."""
    weights = class_weights_for(model, [*table.feature_names, INTERCEPT], ctx.component_type)
    z = lrmath.with_intercept(session.features(table)) @ weights
    ctx.federation.bind_dims(mk=z.size)
    for party, got in ctx.federation.recv_all(frm="host", tag="host_class_scores").items():
        if got.array is None:
            raise ValueError(f"{ctx.component_type}: host {party} sent no scores")
        z = z + np.asarray(got.array, dtype=np.float64).reshape(z.shape)
    return z


def guest(ctx: ComponentContext) -> Mapping[str, Table]:
    params = ctx.params_as(HeteroLrPredictParams)
    table, model = ctx.input("data"), ctx.input("model")
    check_predict_columns(ctx, ctx.component_type, trained_columns(model))
    check_alignment(ctx)
    if model.features.shape[1] > 1:
        return {"data": _one_vs_rest(ctx, table, model)}
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


def _one_vs_rest(ctx: ComponentContext, table: Table, model: Table) -> Table:
    """A one-vs-rest model's output: `predicted` the class whose model scores highest,
    `score` that model's sigmoid, and `score_<class>` every class's."""
    columns = list(model.feature_names)
    try:
        classes = [float(name.removeprefix("weight_")) for name in columns]
    except ValueError:
        raise TableError(
            f"{ctx.component_type}: the model's columns {columns} are not weight_<class>"
        ) from None
    scores = lrmath.sigmoid(class_scores(ctx, table, model))
    winner = np.argmax(scores, axis=1)
    predicted = np.asarray(classes, dtype=np.float64)[winner]
    ctx.metrics.log("rows", float(table.rows))
    ctx.metrics.log("classes", float(len(classes)))
    return Table(
        ids=table.ids,
        features=np.column_stack([scores[np.arange(table.rows), winner], predicted, scores]),
        feature_names=["score", "predicted", *[f"score_{value:g}" for value in classes]],
        labels=table.labels,
        label_name=table.label_name,
    )
