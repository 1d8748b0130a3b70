"""evaluation: binary-classification metrics of scores the guest holds, as job metrics.

Runs at the guest only (it holds the labels; nothing is exchanged). Scores come from a column
of the input table: `score_column` (a feature, e.g. a model's prediction joined to the data),
by default the first feature column -- a trivial score that lets a reader + psi + evaluation
pipeline run before any model component exists. Scores are multiplied by `score_scale` (-1 for
a score that ranks negatives first), then `score_transform: sigmoid` maps them to (0, 1).
Labels are the table's label column (or `label_column`, which may name the label or a 0/1
feature); a row is positive when its label equals `pos_label`. Rows whose score is missing are
left out and counted (`skipped_rows`).

Metrics: auc (Mann-Whitney, ties counted half), ks (max of |TPR - FPR| over thresholds),
accuracy, precision and recall at `threshold`, and log loss when every score is in [0, 1].
Curves: roc (FPR, TPR), ks (threshold, TPR - FPR) and pr (recall, precision), at most
`curve_points` points each.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedflow.components.base import ComponentDescriptor, ComponentParams, InputSpec
from fedflow.protocol import Protocol

MAX_CURVE_POINTS = 1001


class EvaluationParams(ComponentParams):
    label_column: str | None = None
    """The label column; None: the table's own label column."""
    score_column: str | None = None
    """The feature column holding scores; None: the first feature."""
    score_scale: float = 1.0
    """Scores are multiplied by this before the transform (-1 turns a score around)."""
    score_transform: Literal["identity", "sigmoid"] = "identity"
    threshold: float = 0.5
    pos_label: float = 1.0
    curve_points: int = Field(default=MAX_CURVE_POINTS, ge=2, le=100_001)


EVALUATION = ComponentDescriptor(
    name="evaluation",
    description="AUC, KS, accuracy, precision, recall (and log loss) of guest-held scores",
    entry="fedflow.components.evaluation.component:run",
    roles=("guest",),
    params=EvaluationParams,
    inputs=(InputSpec("data", description="a table with labels and a score column"),),
    protocol=Protocol(component_type="evaluation", description="exchanges nothing"),
)
