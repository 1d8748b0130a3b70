"""reader's code: the party's table, with its size as metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from fedflow.components.reader import ReaderParams
from fedflow.tables import Table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


def run(ctx: ComponentContext) -> Mapping[str, Table]:
    params = ctx.params_as(ReaderParams)
    table = ctx.read_table(params.table)
    ctx.metrics.log("rows", float(len(table.ids)))
    ctx.metrics.log("features", float(table.features.shape[1]))
    ctx.metrics.log("missing_values", float(table.missing_count))
    return {"data": table}
