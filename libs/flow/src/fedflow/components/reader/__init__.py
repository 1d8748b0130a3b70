"""reader: this party's uploaded table, as the `data` output of a pipeline.

Runs at every guest and host; each reads the table its own params name from its own
TableStore (the table never leaves the party). Exchanges no messages.
"""

from __future__ import annotations

from pydantic import Field

from fedflow.components.base import ComponentDescriptor, ComponentParams
from fedflow.names import TABLE_NAME_PATTERN
from fedflow.protocol import Protocol


class ReaderParams(ComponentParams):
    table: str = Field(pattern=TABLE_NAME_PATTERN, description="name of an uploaded table")


READER = ComponentDescriptor(
    name="reader",
    description="this party's uploaded table",
    entry="fedflow.components.reader.component:run",
    roles=("guest", "host"),
    params=ReaderParams,
    outputs=("data",),
    protocol=Protocol(component_type="reader", description="exchanges nothing"),
    table_param="table",
)
