"""label_transform's code: the guest's label mapping (fitted, given or a model's), applied."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from fedflow.artifacts import Artifact, ModelArtifact
from fedflow.components.label_transform import LabelTransformParams, number_of
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

NAME = "label_transform"
MODEL_KIND = "label_transform"
MAX_FITTED_CLASSES = 100
"""The most distinct label values a mapping is fitted for (hetero_secureboost's num_class
limit): more are a numeric target (diabetes' 214 values became 214 classes without a word)."""


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
    lookup: Mapping[str | float, int]
    keys: list[str | float]
    if table.label_classes is not None:
        lookup, model = _by_name(ctx, params, table, table.label_classes)
        keys = [table.class_name(v) for v in table.labels.tolist()]
    else:
        lookup, model = _by_value(ctx, params, table)
        keys = [float(v) for v in table.labels.tolist()]
    unknown = sorted({k for k in keys if k not in lookup}, key=str)
    if unknown:
        shown = ", ".join(_shown(k) for k in unknown[:10])
        named = ", ".join(_shown(k) for k in list(lookup)[:10])
        raise ValueError(
            f"{NAME}: label values {shown} in column {table.label_name!r} have no class "
            f"(the mapping names {named})"
        )
    mapped = np.array([lookup[k] for k in keys], dtype=np.float64)
    found = np.unique(mapped)
    ctx.metrics.log("classes", float(found.size))
    for k in found.tolist():
        ctx.metrics.log(f"rows_in_class.{int(k)}", float(np.sum(mapped == k)))
    out = Table(
        table.ids,
        table.features,
        list(table.feature_names),
        mapped,
        table.label_name,
        label_classes=_names_of_classes(lookup) if table.label_classes is not None else None,
    )
    return {"data": out, "model": model}


def _shown(key: str | float) -> str:
    return f"{key:g}" if isinstance(key, float) else repr(key)


def _stored(ctx: ComponentContext) -> dict[str, Any] | None:
    """The label_transform model input's document, checked; None without one."""
    if "model" not in ctx.inputs:
        return None
    model = ctx.model("model")
    if model.document.get("kind") != MODEL_KIND or "classes" not in model.document:
        raise TypeError(f"{NAME}: the model input is not a guest's label_transform model")
    return dict(model.document)


def _by_value(
    ctx: ComponentContext, params: LabelTransformParams, table: Table
) -> tuple[dict[str | float, int], ModelArtifact]:
    """Numeric labels: value -> class, and the model that records it."""
    stored = _stored(ctx)
    if stored is not None:
        if "values" not in stored:
            raise ValueError(
                f"{NAME}: the model maps class names, but label column {table.label_name!r} "
                "holds numbers"
            )
        values = [float(v) for v in stored["values"]]
        classes = [int(c) for c in stored["classes"]]
    elif params.mapping is None:
        assert table.labels is not None
        values = sorted({float(v) for v in np.unique(table.labels).tolist()})
        if len(values) > MAX_FITTED_CLASSES:
            raise ValueError(
                f"{NAME}: label column {table.label_name!r} holds {len(values)} distinct values "
                f"({', '.join(f'{v:g}' for v in values[:5])}, ...), and without a mapping each "
                f"would become a class (0 .. {len(values) - 1}): is it a numeric target? a "
                "regression model (hetero_linr) takes it as it is; else give a mapping"
            )
        classes = list(range(len(values)))
    else:
        if any(number_of(k) is None for k in params.mapping):
            raise ValueError(
                f"{NAME}: the mapping names classes ({', '.join(list(params.mapping)[:5])}), "
                f"but label column {table.label_name!r} holds numbers"
            )
        values = [float(k) for k in params.mapping]
        classes = list(params.mapping.values())
    document = {"kind": MODEL_KIND, "values": values, "classes": classes}
    lookup: dict[str | float, int] = dict(zip(values, classes, strict=True))
    return lookup, ModelArtifact(document=document)


def _by_name(
    ctx: ComponentContext, params: LabelTransformParams, table: Table, names: list[str]
) -> tuple[dict[str | float, int], ModelArtifact]:
    """Text labels: class name -> class, and the model that records it by name (another
    table numbers its classes by its own names)."""
    stored = _stored(ctx)
    if stored is not None:
        if "names" not in stored:
            raise ValueError(
                f"{NAME}: the model maps label values, but label column {table.label_name!r} "
                f"holds class names ({', '.join(names[:10])})"
            )
        known = [str(n) for n in stored["names"]]
        classes = [int(c) for c in stored["classes"]]
    elif params.mapping is None:
        known, classes = list(names), list(range(len(names)))
    else:
        if all(number_of(k) is not None for k in params.mapping):
            raise ValueError(
                f"{NAME}: label column {table.label_name!r} holds class names "
                f"({', '.join(names[:10])}): map them by name"
            )
        known, classes = list(params.mapping), list(params.mapping.values())
    document = {"kind": MODEL_KIND, "names": known, "classes": classes}
    lookup: dict[str | float, int] = dict(zip(known, classes, strict=True))
    return lookup, ModelArtifact(document=document)


def _names_of_classes(lookup: Mapping[str | float, int]) -> list[str] | None:
    """Class k's name for each k, where the classes are 0 .. K-1 and each has one name."""
    by_class = {c: str(n) for n, c in lookup.items()}
    if len(by_class) != len(lookup) or sorted(by_class) != list(range(len(by_class))):
        return None
    return [by_class[k] for k in range(len(by_class))]
