"""label_transform's code: the guest's label mapping (fitted, given or a model's), applied."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from fedflow.artifacts import Artifact, ModelArtifact
from fedflow.components.label_transform import LabelTransformParams
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

NAME = "label_transform"
MODEL_KIND = "label_transform"


def run(ctx: ComponentContext) -> Mapping[str, Artifact]:
    params = ctx.params_as(LabelTransformParams)
    table = ctx.input("data")
    if ctx.role != "guest":
        return {
            "data": table,
            "model": ModelArtifact(document={"kind": MODEL_KIND, "role": ctx.role}),
        }
    if table.labels is None:
        raise TableError(f"{NAME}: the guest's input has no label column")
    if "model" in ctx.inputs:
        model = ctx.model("model")
        if model.document.get("kind") != MODEL_KIND or "values" not in model.document:
            raise TypeError(f"{NAME}: the model input is not a guest's label_transform model")
        values = [float(v) for v in model.document["values"]]
        classes = [int(c) for c in model.document["classes"]]
    else:
        if params.mapping is None:
            values = sorted({float(v) for v in np.unique(table.labels).tolist()})
            classes = list(range(len(values)))
        else:
            values = [float(k) for k in params.mapping]
            classes = list(params.mapping.values())
        model = ModelArtifact(document={"kind": MODEL_KIND, "values": values, "classes": classes})
    lookup = dict(zip(values, classes, strict=True))
    unknown = sorted({float(v) for v in np.unique(table.labels).tolist()} - set(lookup))
    if unknown:
        shown = ", ".join(f"{v:g}" for v in unknown[:10])
        raise ValueError(
            f"{NAME}: label values {shown} in column {table.label_name!r} have no class "
            f"(the mapping names {', '.join(f'{v:g}' for v in values[:10])})"
        )
    mapped = np.array([lookup[float(v)] for v in table.labels.tolist()], dtype=np.float64)
    found = np.unique(mapped)
    ctx.metrics.log("classes", float(found.size))
    for k in found.tolist():
        ctx.metrics.log(f"rows_in_class.{int(k)}", float(np.sum(mapped == k)))
    out = Table(table.ids, table.features, list(table.feature_names), mapped, table.label_name)
    return {"data": out, "model": model}
