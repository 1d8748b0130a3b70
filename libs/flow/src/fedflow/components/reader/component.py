"""reader's code: the party's table, with its size as metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from fedflow.components.base import LabelRule
from fedflow.components.reader import (
    ReaderLabelCount,
    ReaderLabelRule,
    ReaderParams,
    binary_label_hint,
)
from fedflow.tables import Table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


def check_labels(table: Table, name: str, allowed: list[float]) -> None:
    """Refuse a table whose labels the model downstream cannot take (a clear error now rather
    than a failure after PSI, or a model trained on the wrong target)."""
    wanted = ", ".join(f"{v:g}" for v in sorted(allowed))
    if table.labels is None:
        raise ValueError(
            f"table {name} has no label column, but the model its data flows into needs labels "
            f"in {{{wanted}}}"
        )
    values, counts = np.unique(table.labels, return_counts=True)
    bad = [
        (v, c) for v, c in zip(values.tolist(), counts.tolist(), strict=True) if v not in allowed
    ]
    if bad:
        found = ", ".join(_value(table, v) + f" ({c} rows)" for v, c in bad[:10])
        hint = binary_label_hint(values.tolist(), sorted(allowed), table.label_classes is not None)
        raise ValueError(
            f"table {name}: label column {table.label_name!r} has values outside {{{wanted}}}, "
            f"which the model its data flows into needs: {found}; "
            f"{hint}"
        )


def check_label_rules(table: Table, name: str, rules: list[ReaderLabelRule]) -> None:
    """Refuse a table whose labels a model downstream of kind "classes" or "numeric" cannot
    take: no label column, values that do not fit, or class names where it takes numbers."""
    for given in rules:
        rule = LabelRule(given.kind, names=given.names)
        if table.labels is None:
            raise ValueError(
                f"table {name} has no label column, but {given.model}, which its data flows "
                f"into, takes {rule.expected()}"
            )
        if table.label_classes is not None and not rule.takes_names():
            refusal = rule.names_problem(given.model, table.label_name, table.label_classes)
            raise ValueError(f"table {name}: {refusal}")
        problem = rule.problem(np.unique(table.labels).tolist())
        if problem is not None:
            raise ValueError(
                f"table {name}: label column {table.label_name!r} does not fit {given.model}, "
                f"which {problem}"
            )


def check_label_count(table: Table, name: str, wanted: ReaderLabelCount) -> None:
    """Refuse a table with fewer distinct labels than a classifier that trains on it needs."""
    if table.labels is None:
        return  # refused by the label rules already, naming the model
    values, counts = np.unique(table.labels, return_counts=True)
    if len(values) < wanted.count:
        found = ", ".join(
            _value(table, v) + f" ({c} rows)"
            for v, c in zip(values.tolist(), counts.tolist(), strict=True)
        )
        raise ValueError(
            f"table {name}: label column {table.label_name!r} holds a single class ({found}), "
            f"but {wanted.model}, which trains on it, needs at least {wanted.count} classes: a "
            "model trained on one class predicts it for every row; check the label column"
        )


def _value(table: Table, value: float) -> str:
    """A label value as the data wrote it: a text label's class with its name."""
    if table.label_classes is None:
        return f"{value:g}"
    return f"{value:g} = {table.class_name(value)!r}"


def run(ctx: ComponentContext) -> Mapping[str, Table]:
    params = ctx.params_as(ReaderParams)
    table = ctx.read_table(params.table)
    if params.label_values is not None:
        check_labels(table, params.table, params.label_values)
    if params.label_rules:
        check_label_rules(table, params.table, params.label_rules)
    if params.min_label_values is not None:
        check_label_count(table, params.table, params.min_label_values)
    ctx.metrics.log("rows", float(len(table.ids)))
    ctx.metrics.log("features", float(table.features.shape[1]))
    ctx.metrics.log("missing_values", float(table.missing_count))
    return {"data": table}
