"""homo_nn models served at one party: the built-in network's model table as
fedflow.components.homo_nn writes it (every party of the job holds all of it), scored with
homo_nn_predict's arithmetic (fedflow.components.homo_nn.math.scores), so an online score
equals the offline one of the same row.

The table's rows are the parameter vector, named `hidden<j>.<feature>`, `hidden<j>.intercept`,
`output.hidden<j>`, `output.intercept` (fedflow.components.homo_nn.math.parameter_names). The
registry keeps the vector as the version's weights and the feature names (plus the intercept,
as a hetero_lr guest part); the hidden units follow from the two lengths. A PyTorch module's
table (rows `torch.*`) is not served: scoring it would import and run the module here.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedflow.components.homo_nn import math as nmath
from fedflow.components.homo_nn.torch_learner import PREFIX

ALGORITHM = "homo_nn"
INTERCEPT_ROW = "intercept"


def is_torch(ids: Sequence[str]) -> bool:
    return bool(ids) and ids[0].startswith(PREFIX)


def layout(ids: Sequence[str]) -> list[str] | None:
    """The feature names when `ids` are exactly the built-in network's parameter names (in
    its order), else None."""
    hidden = sum(1 for v in ids if v.startswith("output.hidden"))
    if hidden == 0:
        return None
    rows = [v.removeprefix("hidden0.") for v in ids if v.startswith("hidden0.")]
    if not rows or rows[-1] != INTERCEPT_ROW:
        return None
    names = rows[:-1]
    return names if list(ids) == nmath.parameter_names(names, hidden) else None


def hidden_units(weights: nmath.Floats, features: int) -> int:
    """hidden * (features + 1) first-layer weights, hidden + 1 output weights."""
    return (len(weights) - 1) // (features + 2)


def scores(x: nmath.Floats, weights: nmath.Floats) -> nmath.Floats:
    """Each row's probability (a missing value, NaN, counts as 0, as offline)."""
    return nmath.scores(weights, x, hidden_units(weights, x.shape[1]))
