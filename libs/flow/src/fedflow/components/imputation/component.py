"""imputation's code: fit the fill values of this party's columns (or take a model's), fill."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from fedflow.artifacts import Artifact, ModelArtifact
from fedflow.components.imputation import ImputationParams
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

NAME = "imputation"
MODEL_KIND = "imputation"


def positions(table: Table, columns: list[str]) -> list[int]:
    missing = [c for c in columns if c not in table.feature_names]
    if missing:
        raise TableError(
            f"{NAME}: no column {missing[0]!r} in this party's table "
            f"(features: {', '.join(table.feature_names)})"
        )
    return [table.feature_names.index(c) for c in columns]


def marked_missing(x: np.ndarray, missing_values: list[float]) -> np.ndarray:
    """A copy of `x` with the `missing_values` turned into NaN."""
    out = np.array(x, dtype=np.float64, copy=True)
    if missing_values:
        out[np.isin(out, np.asarray(missing_values, dtype=np.float64))] = np.nan
    return out


def fit(method: str, constant: float, columns: list[str], x: np.ndarray) -> np.ndarray:
    """The fill value of each column of `x` (NaN = missing)."""
    if method == "constant":
        return np.full(len(columns), constant, dtype=np.float64)
    values = np.empty(len(columns), dtype=np.float64)
    for i, name in enumerate(columns):
        present = x[:, i][~np.isnan(x[:, i])]
        if present.size == 0:
            raise ValueError(
                f"{NAME}: column {name!r} has no value to take the {method} of (every row is "
                "missing); impute it with method: constant or leave it out of columns"
            )
        values[i] = float(np.mean(present)) if method == "mean" else float(np.median(present))
    return values


def run(ctx: ComponentContext) -> Mapping[str, Artifact]:
    params = ctx.params_as(ImputationParams)
    table = ctx.input("data")
    if "model" in ctx.inputs:
        model = ctx.model("model")
        if model.document.get("kind") != MODEL_KIND:
            raise TypeError(f"{NAME}: the model input is a {model.document.get('kind')!r} model")
        columns = [str(c) for c in model.document["columns"]]
        missing_values = [float(v) for v in model.document["missing_values"]]
        values = np.asarray(model.arrays["values"], dtype=np.float64)
        if values.shape != (len(columns),):
            raise ValueError(f"{NAME}: the model's values do not fit its columns")
        where = positions(table, columns)
        x = marked_missing(table.features[:, where], missing_values)
    else:
        columns = params.columns or list(table.feature_names)
        missing_values = list(params.missing_values)
        where = positions(table, columns)
        x = marked_missing(table.features[:, where], missing_values)
        values = fit(params.method, params.constant, columns, x)
        model = ModelArtifact(
            document={
                "kind": MODEL_KIND,
                "method": params.method,
                "columns": columns,
                "missing_values": missing_values,
            },
            arrays={"values": values},
        )
    holes = np.isnan(x)
    filled = np.where(holes, values[np.newaxis, :], x)
    features = table.features.copy()
    features[:, where] = filled
    ctx.metrics.log("imputed_values", float(holes.sum()))
    ctx.metrics.log("imputed_columns", float(np.any(holes, axis=0).sum()))
    ctx.metrics.log("rows", float(table.rows))
    out = Table(table.ids, features, list(table.feature_names), table.labels, table.label_name)
    return {"data": out, "model": model}
