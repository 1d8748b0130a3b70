"""feature_scale: each party scales its own columns; the fitted parameters are a model.

Runs at the guest and every host, each on its own table; exchanges nothing (no party learns
anything about another's columns). Methods:

  standard  x' = (x - mean) / std          (std over the rows, ddof 0; a constant column: 0)
  min_max   x' = (x - min) / (max - min)   (a constant column: 0)

Missing values (NaN) are left out of the fit and stay missing. `columns` names the columns to
scale (this party's; per party in the pipeline's params sections); the default is every
feature. Labels and ids pass through unchanged.

Outputs: `data` (the scaled table) and `model` (a ModelArtifact: the method, the columns and
their center and scale). Given a `model` input (a feature_scale model from a training job's
pipeline, or an upstream one), the component fits nothing and applies that model: a predict
pipeline scales new data with the training data's parameters.

Layout: this `__init__` (the declaration, light), math.py (fit and apply, numpy only),
component.py (the orchestration).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedflow.components.base import ComponentDescriptor, ComponentParams, InputSpec
from fedflow.protocol import Protocol


class FeatureScaleParams(ComponentParams):
    method: Literal["standard", "min_max"] = "standard"
    columns: list[str] | None = Field(default=None, min_length=1)
    """This party's columns to scale; None: every feature column."""


FEATURE_SCALE = ComponentDescriptor(
    name="feature_scale",
    description="each party scales its own columns (standard or min-max); the fit is a model",
    entry="fedflow.components.feature_scale.component:run",
    roles=("guest", "host"),
    params=FeatureScaleParams,
    inputs=(
        InputSpec("data", description="this party's table"),
        InputSpec(
            "model",
            required=False,
            description="a feature_scale model to apply instead of fitting one",
        ),
    ),
    outputs=("data", "model"),
    protocol=Protocol(component_type="feature_scale", description="exchanges nothing"),
)
