"""evaluation: binary-classification metrics of scores the guest holds, as job metrics.

Runs at the guest only (it holds the labels; nothing is exchanged). Scores come from a column
of the input table: `score_column` (a feature, e.g. a model's prediction joined to the data),
by default the first feature column -- a trivial score that lets a reader + psi + evaluation
pipeline run before any model component exists. Scores are multiplied by `score_scale` (-1 for
a score that ranks negatives first), then `score_transform: sigmoid` maps them to (0, 1).
Labels are the table's label column (or `label_column`, which may name the label or a 0/1
feature); a row is positive when its label equals `pos_label`, or, for a table whose label
column is text (class names, docs/data.md), when its class is named `pos_class`. Rows whose
score is missing are left out and counted (`skipped_rows`).

`eval_type` picks the metrics (fedflow.components.evaluation.math; each checked against
scikit-learn's in tests/flow/test_evaluation.py):

binary (the default): auc (Mann-Whitney, ties counted half), ks (max of |TPR - FPR| over
thresholds), accuracy, precision, recall and f1 at `threshold` with its confusion matrix (tp,
fp, tn, fn), log loss when every score is in [0, 1], and the top bin's lift (`lift_top`).
Curves: roc (FPR, TPR), ks (threshold, TPR - FPR), pr (recall, precision), at most
`curve_points` points each; precision_at, recall_at, f1_at (threshold, value) at each of
`thresholds`; gain and lift (population fraction, value) at `bins` quantiles of the ranking.
With a `reference` input (e.g. the train rows' scores when `data` holds the validate rows'):
`psi`, the population stability index of the scores against the reference's, over `bins`
equal-frequency bins of the reference, and the curves psi_expected / psi_actual (bin, share).

regression: the score column is the prediction: rmse, mae, r2, explained_variance.

multi: the score column is the predicted class: accuracy, macro_f1, micro_f1, and per class c
`precision.<c>`, `recall.<c>`, `f1.<c>`, and the confusion matrix as `confusion.<true>.<pred>`
(class values as %g; for text labels the class names, when every name is 1-40 letters, digits,
`_` or `-`, else the class numbers).

Refused, naming the values and what to set (component.py): binary metrics of a label with more
than two values (several classes, a numeric target), with one class, or with no row of the
positive class; multi-class metrics of labels or scores that are not class numbers (a numeric
target; a binary model's probabilities); a score_column or label_column naming no column. The
pipeline refuses, before anything runs, an eval_type that cannot fit the model whose
predictions it scores (fedflow.pipeline).
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
    pos_class: str | None = Field(default=None, min_length=1, max_length=256)
    """A text label column's positive class by name (instead of `pos_label`, its number)."""
    curve_points: int = Field(default=MAX_CURVE_POINTS, ge=2, le=100_001)
    eval_type: Literal["binary", "regression", "multi"] = "binary"
    thresholds: list[float] = Field(
        default_factory=lambda: [i / 10 for i in range(1, 10)], min_length=1, max_length=1001
    )
    """binary: the thresholds of the precision_at / recall_at / f1_at curves."""
    bins: int = Field(default=10, ge=1, le=1000)
    """binary: the population quantiles of the gain and lift curves (10: deciles)."""


EVALUATION = ComponentDescriptor(
    name="evaluation",
    description="binary, regression or multi-class metrics of guest-held scores and labels",
    entry="fedflow.components.evaluation.component:run",
    roles=("guest",),
    params=EvaluationParams,
    inputs=(
        InputSpec("data", description="a table with labels and a score column"),
        InputSpec(
            "reference",
            required=False,
            description="binary: scores of other rows (e.g. train) to compute the PSI against",
        ),
    ),
    protocol=Protocol(component_type="evaluation", description="exchanges nothing"),
)
