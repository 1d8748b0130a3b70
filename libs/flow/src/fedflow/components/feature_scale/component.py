"""feature_scale's code: fit on this party's columns (or take a given model) and apply."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from fedflow.artifacts import Artifact, ModelArtifact
from fedflow.components.feature_scale import FeatureScaleParams
from fedflow.components.feature_scale.math import Scaling, fit
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

MODEL_KIND = "feature_scale"


def to_model(scaling: Scaling) -> ModelArtifact:
    return ModelArtifact(
        document={"kind": MODEL_KIND, "method": scaling.method, "columns": scaling.columns},
        arrays={"center": scaling.center, "scale": scaling.scale},
    )


def from_model(model: ModelArtifact) -> Scaling:
    doc = model.document
    if doc.get("kind") != MODEL_KIND:
        raise TypeError(f"feature_scale: the model input is a {doc.get('kind')!r} model")
    columns = [str(c) for c in doc["columns"]]
    center = np.asarray(model.arrays["center"], dtype=np.float64)
    scale = np.asarray(model.arrays["scale"], dtype=np.float64)
    if center.shape != (len(columns),) or scale.shape != (len(columns),):
        raise ValueError("feature_scale: the model's arrays do not fit its columns")
    return Scaling(str(doc["method"]), columns, center, scale)


def _positions(table: Table, columns: list[str]) -> list[int]:
    missing = [c for c in columns if c not in table.feature_names]
    if missing:
        raise TableError(
            f"feature_scale: no column {missing[0]!r} in this party's table "
            f"(features: {', '.join(table.feature_names)})"
        )
    return [table.feature_names.index(c) for c in columns]


def run(ctx: ComponentContext) -> Mapping[str, Artifact]:
    params = ctx.params_as(FeatureScaleParams)
    table = ctx.input("data")
    if "model" in ctx.inputs:
        scaling = from_model(ctx.model("model"))
    else:
        columns = params.columns or list(table.feature_names)
        where = _positions(table, columns)
        scaling = fit(params.method, columns, table.features[:, where])
    where = _positions(table, scaling.columns)
    features = table.features.copy()
    features[:, where] = scaling.apply(table.features[:, where])
    ctx.metrics.log("scaled_columns", float(len(where)))
    ctx.metrics.log("rows", float(table.rows))
    scaled = Table(table.ids, features, list(table.feature_names), table.labels, table.label_name)
    return {"data": scaled, "model": to_model(scaling)}
