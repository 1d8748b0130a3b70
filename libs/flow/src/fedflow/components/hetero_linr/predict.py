"""hetero_linr_predict: the guest outputs u_g + sum u_h per row; the hosts run
hetero_lr_predict's host code (they send their partial scores). Each party first checks that
its table has every column its part of the model weighs (fedflow.kit.inputs), then that
the parties' rows are the same ids in the same order (fedflow.kit.alignment)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from fedflow.components.hetero_lr import predict as lr_predict
from fedflow.components.hetero_lr.predict import linear_scores
from fedflow.components.hetero_lr.session import INTERCEPT
from fedflow.kit.alignment import check_alignment
from fedflow.kit.inputs import check_predict_columns
from fedflow.tables import Table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


def guest(ctx: ComponentContext) -> Mapping[str, Table]:
    table, model = ctx.input("data"), ctx.input("model")
    check_predict_columns(ctx, ctx.component_type, weighted(model))
    check_alignment(ctx)
    prediction = linear_scores(ctx, table, model)
    ctx.metrics.log("rows", float(table.rows))
    return {
        "data": Table(
            ids=table.ids,
            features=np.asarray(prediction, dtype=np.float64).reshape(-1, 1),
            feature_names=["prediction"],
            labels=table.labels,
            label_name=table.label_name,
        )
    }


def host(ctx: ComponentContext) -> Mapping[str, Table]:
    check_predict_columns(ctx, ctx.component_type, weighted(ctx.input("model")))
    check_alignment(ctx)
    return lr_predict.host(ctx)


def weighted(model: Table) -> list[str]:
    """The columns a party's part of a linear model weighs (its rows, the intercept left out)."""
    return [str(name) for name in model.ids.tolist() if str(name) != INTERCEPT]
