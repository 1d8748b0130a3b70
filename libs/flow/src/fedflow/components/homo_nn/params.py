"""homo_nn's parameters (light: pydantic only, read by the pipeline validator)."""

from __future__ import annotations

from pydantic import Field

from fedflow.components.base import ComponentParams
from fedflow.components.homo_lr.params import HomoLrParams


class HomoNnParams(HomoLrParams):
    """homo_lr's (rounds, local training, FedProx, server optimizer, secure aggregation,
    dropouts) plus the network's shape."""

    hidden_units: int = Field(default=16, ge=1, le=4096)
    """Units of the one hidden layer (tanh); the output is one logistic unit."""


class HomoNnPredictParams(ComponentParams):
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
