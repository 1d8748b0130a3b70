"""reader: this party's uploaded table, as the `data` output of a pipeline.

Runs at every guest and host; each reads the table its own params name from its own
TableStore (the table never leaves the party). Exchanges no messages.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from fedflow.components.base import ComponentDescriptor, ComponentParams
from fedflow.names import TABLE_NAME_PATTERN
from fedflow.protocol import Protocol


class ReaderParams(ComponentParams):
    table: str = Field(pattern=TABLE_NAME_PATTERN, description="name of an uploaded table")
    label_values: list[float] | None = None
    """The label values the components downstream take (filled in by the pipeline from their
    `label_values`, e.g. 0 and 1 for hetero_lr's guest): a table with a label outside them,
    or with no label column, is refused here, before PSI. None: any labels, or none."""

    @model_serializer(mode="wrap")
    def _omit_unset_labels(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Absent rather than null: a reader's task.run stays what it was unless a model
        # downstream needs the check (a worker of the previous version refuses unknown keys).
        data: dict[str, Any] = handler(self)
        if data.get("label_values") is None:
            data.pop("label_values", None)
        return data


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
