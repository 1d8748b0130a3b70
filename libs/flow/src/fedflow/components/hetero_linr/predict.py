"""hetero_linr_predict at the guest: u_g + sum u_h per row (the hosts run hetero_lr_predict's
host code: they send their partial scores)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from fedflow.components.hetero_lr.predict import linear_scores
from fedflow.tables import Table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


def guest(ctx: ComponentContext) -> Mapping[str, Table]:
    table, model = ctx.input("data"), ctx.input("model")
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
