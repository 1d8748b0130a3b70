"""reader: this party's uploaded table, as the `data` output of a pipeline.

Runs at every guest and host; each reads the table its own params name from its own
TableStore (the table never leaves the party). Exchanges no messages.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from fedflow.components.base import ComponentDescriptor, ComponentParams
from fedflow.names import TABLE_NAME_PATTERN
from fedflow.protocol import Protocol


class ReaderLabelRule(BaseModel):
    """A model's labels other than binary ones (fedflow.components.base.LabelRule): "classes"
    (integers >= 0) or "numeric" (finite numbers), and whether a text label column (class
    names) fits."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["classes", "numeric"]
    names: bool
    model: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    """The model's component type, to name it in a refusal."""


class ReaderLabelCount(BaseModel):
    """The distinct label values a table must hold at least: 2 where a classifier trains on
    it (one class trains a model that predicts that class for every row)."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=2, le=64)
    model: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    """The classifier's component type, to name it in a refusal."""


class ReaderParams(ComponentParams):
    table: str = Field(pattern=TABLE_NAME_PATTERN, description="name of an uploaded table")
    label_values: list[float] | None = None
    """The label values the components downstream take (filled in by the pipeline from their
    `label_values`, e.g. 0 and 1 for hetero_lr's guest): a table with a label outside them,
    or with no label column, is refused here, before PSI. None: any labels, or none."""
    label_rules: list[ReaderLabelRule] | None = Field(default=None, max_length=16)
    """The other label rules of the models downstream (filled in by the pipeline: hetero_linr's
    numbers, hetero_poisson's counts, multi-class hetero_lr's classes): a table without a label
    column, with labels that do not fit, or with class names where a model takes numbers is
    refused here, before PSI. None: no such model."""

    min_label_values: ReaderLabelCount | None = None
    """Filled in by the pipeline where a classifier trains on this table's rows: a table
    with fewer distinct labels is refused here, before PSI. None: no such check."""

    @model_serializer(mode="wrap")
    def _omit_unset_labels(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Absent rather than null: a reader's task.run stays what it was unless a model
        # downstream needs the check (a worker of the previous version refuses unknown keys).
        data: dict[str, Any] = handler(self)
        for key in ("label_values", "label_rules", "min_label_values"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


MANY_CLASSES = 20
"""More distinct whole numbers than this in a label column read as a numeric target (a count,
an amount), not as classes, in binary_label_hint."""


def binary_label_hint(values: list[float], wanted: list[float], named: bool = False) -> str:
    """What to do with a label column of the distinct `values` (`named`: class names) where a
    model takes the binary `wanted` (light: the scheduler's check against recorded labels may
    use it too): several classes and a numeric target each have their own model, or a
    label_transform makes them binary."""
    whole = all(v >= 0 and float(v).is_integer() for v in values)
    if len(values) > 2 and (named or (whole and len(values) <= MANY_CLASSES)):
        return (
            f"it holds {len(values)} classes: a multi-class model takes them (hetero_lr with "
            "multi_class: true, hetero_secureboost with objective: multi:softmax), or map them "
            "to 0 and 1 with label_transform before the model"
        )
    if len(values) > 2:
        return (
            f"it holds {len(values)} distinct values, a numeric target: a regression model "
            "takes it (hetero_linr; hetero_poisson for counts), or make a 0/1 label of it "
            "before the model"
        )
    shown = " and ".join(f"{v:g}" for v in wanted)
    return f"map its values to {shown} with label_transform before the model"


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
