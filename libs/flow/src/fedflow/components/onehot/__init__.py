"""onehot: each party replaces some of its own categorical columns by one 0/1 column per
category; the categories are a model, so a predict pipeline encodes new rows the same way.

Runs at the guest and every host, each on its own table; exchanges nothing. A column with the
categories c_1 < ... < c_k (its distinct present values) becomes k columns `<column>_<c>`
(`%.12g` of the value), in place; a missing value is 0 in all of them. A column with more than
`max_categories` distinct values is refused, naming it (a continuous column: bin it first with
hetero_feature_binning transform: bin). Applying a model to rows with a category it has not
seen: all 0 (`handle_unknown: ignore`) or an error naming the column and value (`error`).
Outputs: `data`, `model` (columns and their categories); with a `model` input nothing is fitted.
Metrics: `encoded_columns`, `new_columns`, `unknown_values`. docs/preprocessing.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedflow.components.base import ComponentDescriptor, ComponentParams, InputSpec, OwnColumns
from fedflow.protocol import Protocol


class OnehotParams(ComponentParams):
    columns: OwnColumns = None
    """This party's columns to encode; None: every feature column."""
    max_categories: int = Field(default=32, ge=2, le=1000)
    handle_unknown: Literal["ignore", "error"] = "ignore"


ONEHOT = ComponentDescriptor(
    name="onehot",
    description="each party one-hot encodes its own categorical columns",
    entry="fedflow.components.onehot.component:run",
    roles=("guest", "host"),
    params=OnehotParams,
    inputs=(
        InputSpec("data", description="this party's table"),
        InputSpec("model", required=False, description="an onehot model to apply"),
    ),
    outputs=("data", "model"),
    protocol=Protocol(component_type="onehot", description="exchanges nothing"),
)
