"""homo_nn's parameters (light: pydantic only, read by the pipeline validator)."""

from __future__ import annotations

from typing import Any, Final

from pydantic import Field

from fedflow.components.base import ComponentParams
from fedflow.components.homo_lr.params import HomoLrParams
from fedflow.import_path import IMPORT_PATH

MODEL_PATH: Final = IMPORT_PATH
"""An import path `package.module:callable`."""
CODE: Final[dict[str, Any]] = {
    "policy": "code",
    "what": "a PyTorch module factory every party imports and calls",
}
"""The policy marker of a param that names code to import (fedflow.policy, `allow_code`)."""


class HomoNnParams(HomoLrParams):
    """homo_lr's (rounds, local training, FedProx, server optimizer, secure aggregation,
    dropouts) plus the network's shape."""

    hidden_units: int = Field(default=16, ge=1, le=4096)
    """Units of the built-in network's one hidden layer (tanh); the output is one logistic
    unit. Not used with `model`."""
    model: str | None = Field(
        default=None, max_length=200, pattern=MODEL_PATH, json_schema_extra=CODE
    )
    """A PyTorch module instead of the built-in numpy network: `package.module:factory`, where
    factory(features: int) returns a torch.nn.Module mapping a (rows, features) float tensor to
    one logit per row. Needs torch at every party (the extra fedmq-flow[torch]); the module's
    code must be importable on every party's worker, and importing it runs it: a party imports
    a path another party's pipeline names only when its policy lists it
    (`components.homo_nn.allow_code`, docs/policy.md)."""


class HomoNnPredictParams(ComponentParams):
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    model: str | None = Field(
        default=None, max_length=200, pattern=MODEL_PATH, json_schema_extra=CODE
    )
    """The PyTorch module's import path the training used (a model table of a PyTorch module
    needs it; the built-in network's does not). Imported as homo_nn's is: another party's path
    only when the policy lists it (`components.homo_nn_predict.allow_code`)."""
