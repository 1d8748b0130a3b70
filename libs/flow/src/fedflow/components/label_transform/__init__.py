"""label_transform: the guest maps its label values to classes 0, 1, 2, ...; the mapping is a
model, so a predict pipeline maps new rows' labels the same way.

Runs at the guest (which holds the labels) and every host (whose table passes through
unchanged, so downstream components find an input at every party); exchanges nothing. Without
`mapping`, the distinct label values in ascending order become classes 0 .. K-1; `mapping`
gives them explicitly ({"1": 0, "2": 1, "3": 1}: keys are label values, several may share a
class), and a label value it does not name is refused, naming it. A text label column (class
names, fedflow.tables.LabelColumn) is mapped by its names ({"bad": 1, "good": 0}), and its
model keeps the names, so that it maps another table's rows by name whatever numbers that
table gave its classes. With a `model` input nothing is fitted. Outputs: `data` (with class
names when each class has exactly one name), `model` (`values` or `names`, and their
`classes`). Metrics: `classes`, `rows_in_class.<k>`. docs/preprocessing.md.

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
    """Label value (as written, e.g. "2" or "0.5") or, for a text label column, class name
    (e.g. "bad") -> class (an integer >= 0)."""

    @field_validator("mapping")
    @classmethod
    def _labels_to_classes(cls, mapping: dict[str, int] | None) -> dict[str, int] | None:
        if mapping is None:
            return None
        for key, value in mapping.items():
            if value < 0:
                raise ValueError(f"mapping value {value} for {key!r}: classes are integers >= 0")
        numbers = [number_of(key) for key in mapping]
        if all(n is None for n in numbers):
            return mapping  # class names (a text label column)
        if any(n is None for n in numbers):
            names = [k for k, n in zip(mapping, numbers, strict=True) if n is None]
            raise ValueError(
                f"mapping mixes label values and class names ({', '.join(map(repr, names[:5]))} "
                "are not numbers): a label column holds one or the other"
            )
        for key, number in zip(mapping, numbers, strict=True):
            if number is not None and not math.isfinite(number):
                raise ValueError(f"mapping key {key!r} is not a finite number")
        if len(set(numbers)) != len(numbers):
            raise ValueError("mapping names one label value twice (e.g. '1' and '1.0')")
        return mapping


def number_of(key: str) -> float | None:
    """A mapping key as a label value, None for a class name."""
    try:
        return float(key)
    except ValueError:
        return None


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
