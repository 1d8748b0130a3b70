"""reader: this party's uploaded table, as the `data` output of a pipeline.

Runs at every guest and host; each reads the table its own params name from its own
TableStore (the table never leaves the party). Exchanges no messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic import Field

from fedflow.components.base import ComponentParams, ComponentType
from fedflow.protocol import Protocol
from fedflow.tables import TABLE_NAME_PATTERN, Table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


class ReaderParams(ComponentParams):
    table: str = Field(pattern=TABLE_NAME_PATTERN, description="name of an uploaded table")


def run(ctx: ComponentContext) -> Mapping[str, Table]:
    params = ctx.params_as(ReaderParams)
    table = ctx.read_table(params.table)
    ctx.metrics.log("rows", float(len(table.ids)))
    ctx.metrics.log("features", float(table.features.shape[1]))
    ctx.metrics.log("missing_values", float(table.missing_count))
    return {"data": table}


READER = ComponentType(
    name="reader",
    description="this party's uploaded table",
    run=run,
    roles=("guest", "host"),
    params=ReaderParams,
    outputs=("data",),
    protocol=Protocol(component_type="reader", description="exchanges nothing"),
    table_param="table",
)
