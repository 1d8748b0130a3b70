"""hetero_poisson_predict: the guest outputs exposure * exp(u_g + u_h) per row; the hosts run
hetero_lr_predict's host code (they send their partial scores). Each party first checks that
its table has every column its part of the model weighs (fedflow.kit.inputs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from fedflow.components.hetero_linr.predict import weighted
from fedflow.components.hetero_lr import math as lrmath
from fedflow.components.hetero_lr import predict as lr_predict
from fedflow.components.hetero_lr.predict import weights_for
from fedflow.components.hetero_lr.session import INTERCEPT
from fedflow.components.hetero_poisson import HeteroPoissonPredictParams
from fedflow.components.hetero_poisson.train import split_exposure
from fedflow.kit.alignment import check_alignment
from fedflow.kit.inputs import check_predict_columns
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


def guest(ctx: ComponentContext) -> Mapping[str, Table]:
    params = ctx.params_as(HeteroPoissonPredictParams)
    table, model = ctx.input("data"), ctx.input("model")
    exposure_column = [params.exposure] if params.exposure else []
    trained = weighted(model)
    check_predict_columns(ctx, ctx.component_type, trained, exposure_column)
    check_alignment(ctx)
    x, names, exposure = split_exposure(table, params.exposure)
    unweighted = [name for name in names if name not in trained]
    if len(unweighted) == 1 and params.exposure is None:
        # The likely case: trained with an exposure, predicting without the param.
        raise TableError(
            f"{ctx.component_type}: the model has no weight for {unweighted[0]!r}: if it is "
            f"the exposure, set exposure: {unweighted[0]} for {ctx.component_type} as for "
            "hetero_poisson; else predict on rows with the training columns"
        )
    z = lrmath.with_intercept(x) @ weights_for(model, [*names, INTERCEPT], ctx.component_type)
    ctx.federation.bind_dims(m=table.rows)
    for party, got in ctx.federation.recv_all(frm="host", tag="host_partial_scores").items():
        if got.array is None:
            raise ValueError(f"{ctx.component_type}: host {party} sent no scores")
        z = z + np.asarray(got.array, dtype=np.float64)
    prediction = exposure * np.exp(np.minimum(z, 700.0))
    ctx.metrics.log("rows", float(table.rows))
    return {
        "data": Table(
            ids=table.ids,
            features=prediction.reshape(-1, 1),
            feature_names=["prediction"],
            labels=table.labels,
            label_name=table.label_name,
        )
    }


def host(ctx: ComponentContext) -> Mapping[str, Table]:
    check_predict_columns(ctx, ctx.component_type, weighted(ctx.input("model")))
    check_alignment(ctx)
    return lr_predict.host(ctx)
