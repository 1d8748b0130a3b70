"""imputation: each party fills the missing values of its own columns; the fill values are a
model, so a predict pipeline fills new rows with the training rows' values.

Runs at the guest and every host, each on its own table; exchanges nothing. Per column the fill
value is the mean or the median of its present values, or `constant`; values listed in
`missing_values` (e.g. -999) count as missing too. A column with no present value cannot be
filled by its mean or median: refused, naming it (use method: constant). Labels and ids pass
through. Outputs: `data` (no missing value left in the imputed columns) and `model` (columns,
fill values, missing_values); with a `model` input it fits nothing and applies that model.
Metrics: `imputed_values`, `imputed_columns`, `rows`. docs/preprocessing.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedflow.components.base import ComponentDescriptor, ComponentParams, InputSpec, OwnColumns
from fedflow.protocol import Protocol


class ImputationParams(ComponentParams):
    method: Literal["mean", "median", "constant"] = "mean"
    constant: float = 0.0
    """The fill value of method: constant."""
    columns: OwnColumns = None
    """This party's columns to impute; None: every feature column."""
    missing_values: list[float] = Field(default_factory=list, max_length=100)
    """Values that mean "missing" besides an empty field (e.g. -999)."""


IMPUTATION = ComponentDescriptor(
    name="imputation",
    description="each party fills its own missing values (mean, median or a constant)",
    entry="fedflow.components.imputation.component:run",
    roles=("guest", "host"),
    params=ImputationParams,
    inputs=(
        InputSpec("data", description="this party's table"),
        InputSpec("model", required=False, description="an imputation model to apply"),
    ),
    outputs=("data", "model"),
    protocol=Protocol(component_type="imputation", description="exchanges nothing"),
)
