"""onehot's code: the categories of this party's columns (or a model's), the 0/1 columns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from fedflow.artifacts import Artifact, ModelArtifact
from fedflow.components.onehot import OnehotParams
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

NAME = "onehot"
MODEL_KIND = "onehot"


def category_name(column: str, value: float) -> str:
    return f"{column}_{value:.12g}"


def fit(table: Table, columns: list[str], max_categories: int) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for name in columns:
        column = table.column(name)
        values = np.unique(column[~np.isnan(column)])
        if values.size > max_categories:
            raise ValueError(
                f"{NAME}: column {name!r} has {values.size} distinct values, more than "
                f"max_categories {max_categories} (is it continuous? bin it first, or raise "
                "max_categories)"
            )
        names = [category_name(name, float(v)) for v in values]
        if len(set(names)) != len(names):
            raise ValueError(f"{NAME}: column {name!r} has values that differ only past 12 digits")
        found[name] = [float(v) for v in values]
    return found


def encode(
    table: Table, categories: Mapping[str, list[float]], handle_unknown: str
) -> tuple[Table, int]:
    """The table with each encoded column replaced in place by its 0/1 columns, and how many
    present values were of no known category."""
    unknown = [c for c in categories if c not in table.feature_names]
    if unknown:
        raise TableError(
            f"{NAME}: no column {unknown[0]!r} in this party's table "
            f"(features: {', '.join(table.feature_names)})"
        )
    blocks: list[np.ndarray] = []
    names: list[str] = []
    unseen = 0
    for j, name in enumerate(table.feature_names):
        column = table.features[:, j]
        if name not in categories:
            blocks.append(column[:, np.newaxis])
            names.append(name)
            continue
        known = np.asarray(categories[name], dtype=np.float64)
        block = (column[:, np.newaxis] == known[np.newaxis, :]).astype(np.float64)
        strays = ~np.isnan(column) & (block.sum(axis=1) == 0)
        if strays.any() and handle_unknown == "error":
            raise ValueError(
                f"{NAME}: column {name!r} has the value {float(column[strays][0]):.12g}, "
                "which the model has no category for (handle_unknown: ignore encodes it as 0s)"
            )
        unseen += int(strays.sum())
        blocks.append(block)
        names += [category_name(name, float(v)) for v in known]
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise TableError(f"{NAME}: the encoded column {duplicate!r} already exists in the table")
    features = np.hstack(blocks) if blocks else np.zeros((table.rows, 0))
    return Table(table.ids, features, names, table.labels, table.label_name), unseen


def run(ctx: ComponentContext) -> Mapping[str, Artifact]:
    params = ctx.params_as(OnehotParams)
    table = ctx.input("data")
    if "model" in ctx.inputs:
        model = ctx.model("model")
        if model.document.get("kind") != MODEL_KIND:
            raise TypeError(f"{NAME}: the model input is a {model.document.get('kind')!r} model")
        categories = {
            str(c): [float(v) for v in values]
            for c, values in zip(
                model.document["columns"], model.document["categories"], strict=True
            )
        }
    else:
        columns = params.columns or list(table.feature_names)
        categories = fit(table, columns, params.max_categories)
        model = ModelArtifact(
            document={
                "kind": MODEL_KIND,
                "columns": list(categories),
                "categories": list(categories.values()),
            }
        )
    encoded, unseen = encode(table, categories, params.handle_unknown)
    ctx.metrics.log("encoded_columns", float(len(categories)))
    ctx.metrics.log("new_columns", float(sum(len(v) for v in categories.values())))
    ctx.metrics.log("unknown_values", float(unseen))
    return {"data": encoded, "model": model}
