"""label_transform: the guest maps its label values to classes 0, 1, 2, ...; the mapping is a
model, so a predict pipeline maps new rows' labels the same way.

Runs at the guest (which holds the labels) and every host (whose table passes through
unchanged, so downstream components find an input at every party); exchanges nothing. Without
`mapping`, the distinct label values in ascending order become classes 0 .. K-1; `mapping`
gives them explicitly ({"1": 0, "2": 1, "3": 1}: keys are label values, several may share a
class), and a label value it does not name is refused, naming it. With a `model` input nothing
is fitted. Outputs: `data`, `model` (`values` and their `classes`). Metrics: `classes`,
`rows_in_class.<k>`. docs/preprocessing.md.

Readers check labels against the models downstream of them before PSI (binary models declare
their values). label_transform declares that it remaps the guest's labels
(`remaps_labels`): the rules of the models below it do not reach the reader above it, and the
model checks the mapped labels when it starts (raw labels 1 and 2 -> label_transform ->
hetero_lr trains on 0 and 1).
"""

from __future__ import annotations

import math

from pydantic import Field, field_validator

from fedflow.components.base import ComponentDescriptor, ComponentParams, InputSpec
from fedflow.protocol import Protocol


class LabelTransformParams(ComponentParams):
    mapping: dict[str, int] | None = Field(default=None, min_length=1, max_length=10_000)
    """Label value (as written, e.g. "2" or "0.5") -> class (an integer >= 0)."""

    @field_validator("mapping")
    @classmethod
    def _numbers_to_classes(cls, mapping: dict[str, int] | None) -> dict[str, int] | None:
        if mapping is None:
            return None
        for key, value in mapping.items():
            try:
                number = float(key)
            except ValueError:
                raise ValueError(
                    f"mapping key {key!r} is not a number (labels are numbers)"
                ) from None
            if not math.isfinite(number):
                raise ValueError(f"mapping key {key!r} is not a finite number")
            if value < 0:
                raise ValueError(f"mapping value {value} for {key!r}: classes are integers >= 0")
        numbers = [float(k) for k in mapping]
        if len(set(numbers)) != len(numbers):
            raise ValueError("mapping names one label value twice (e.g. '1' and '1.0')")
        return mapping


LABEL_TRANSFORM = ComponentDescriptor(
    name="label_transform",
    description="the guest maps its label values to classes 0, 1, 2, ... (kept as a model)",
    entry="fedflow.components.label_transform.component:run",
    roles=("guest", "host"),
    params=LabelTransformParams,
    inputs=(
        InputSpec("data", description="this party's table"),
        InputSpec("model", required=False, description="a label_transform model to apply"),
    ),
    outputs=("data", "model"),
    protocol=Protocol(component_type="label_transform", description="exchanges nothing"),
    remaps_labels=("guest",),
)
