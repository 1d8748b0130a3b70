"""homo_feature_scale's code: fit the global standard scaling in secure steps (or take a given
model) and apply it to this client's rows; the model is a feature_scale model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from fedflow.artifacts import Artifact
from fedflow.components.feature_scale.component import from_model, to_model
from fedflow.components.feature_scale.math import Scaling
from fedflow.components.homo_feature_scale import HomoFeatureScaleParams, secure
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

NAME = "homo_feature_scale"


def columns_table(table: Table, columns: list[str], name: str) -> Table:
    """`table` cut to `columns` (in that order); a clear error naming a missing one."""
    if len(set(columns)) != len(columns):
        raise ValueError(f"{name}: columns names a column twice")
    missing = [c for c in columns if c not in table.feature_names]
    if missing:
        raise TableError(
            f"{name}: no column {missing[0]!r} in this party's table "
            f"(features: {', '.join(table.feature_names)})"
        )
    where = [table.feature_names.index(c) for c in columns]
    return Table(table.ids, table.features[:, where], list(columns), None, None)


def fit(
    ctx: ComponentContext, params: HomoFeatureScaleParams, table: Table | None
) -> Scaling | None:
    """The global scaling of `table`'s chosen columns (None at the arbiter, which has no
    column names: the clients keep the model)."""
    plan = secure.MomentsPlan(params.value_bound)
    if table is None:
        secure.fit(ctx, plan, None, params)
        return None
    columns = params.columns or list(table.feature_names)
    part = secure.checked_rows(columns_table(table, columns, NAME), NAME, params.value_bound)
    stats = secure.fit(ctx, plan, part, params)
    assert stats is not None
    f = len(columns)
    mean, std = stats[:f], stats[f:]
    scale = np.where(np.isfinite(std) & (std > 0.0), std, 1.0)
    return Scaling("standard", columns, mean, scale)


def run(ctx: ComponentContext) -> Mapping[str, Artifact]:
    params = ctx.params_as(HomoFeatureScaleParams)
    if ctx.role == "arbiter":
        fit(ctx, params, None)
        return {}
    table = ctx.input("data")
    if "model" in ctx.inputs:
        scaling = from_model(ctx.model("model"))
        secure.tell_arbiter_apply(ctx)
    else:
        found = fit(ctx, params, table)
        assert found is not None
        scaling = found
    part = columns_table(table, scaling.columns, NAME)
    where = [table.feature_names.index(c) for c in scaling.columns]
    features = table.features.copy()
    features[:, where] = scaling.apply(part.features)
    ctx.metrics.log("scaled_columns", float(len(where)))
    ctx.metrics.log("rows", float(table.rows))
    scaled = Table(table.ids, features, list(table.feature_names), table.labels, table.label_name)
    return {"data": scaled, "model": to_model(scaling)}
