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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from fedflow.components.base import ComponentParams, ComponentType, InputSpec
from fedflow.protocol import Protocol
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

MAX_CURVE_POINTS = 1001

Floats = NDArray[np.float64]


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


@dataclass(frozen=True)
class BinaryMetrics:
    auc: float
    ks: float
    accuracy: float
    precision: float
    recall: float
    log_loss: float | None
    roc: tuple[Floats, Floats]
    ks_curve: tuple[Floats, Floats]
    pr: tuple[Floats, Floats]


def _average_ranks(values: Floats) -> Floats:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    # Start index of each run of equal values, and each run's average rank.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    average = (starts + ends + 1) / 2.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def _thin(x: Floats, y: Floats, points: int) -> tuple[Floats, Floats]:
    if len(x) <= points:
        return x, y
    keep = np.unique(np.linspace(0, len(x) - 1, points).round().astype(np.int64))
    return x[keep], y[keep]


def binary_metrics(
    labels: NDArray[np.bool_], scores: Floats, *, threshold: float, curve_points: int
) -> BinaryMetrics:
    """The metrics of `scores` against boolean `labels` (both 1-D, same length, no NaN)."""
    n = len(labels)
    positives = int(labels.sum())
    negatives = n - positives
    if n == 0:
        raise ValueError("evaluation: no rows to evaluate")
    if positives == 0 or negatives == 0:
        auc = float("nan")
    else:
        rank_sum = float(_average_ranks(scores)[labels].sum())
        auc = (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)
    # ROC: one point per distinct score, from the highest threshold down.
    order = np.argsort(-scores, kind="mergesort")
    ordered, hits = scores[order], labels[order]
    last_of_run = np.r_[ordered[1:] != ordered[:-1], True]
    tp = np.cumsum(hits)[last_of_run].astype(np.float64)
    fp = np.cumsum(~hits)[last_of_run].astype(np.float64)
    thresholds = ordered[last_of_run]
    tpr = np.r_[0.0, tp / positives] if positives else np.zeros(len(tp) + 1)
    fpr = np.r_[0.0, fp / negatives] if negatives else np.zeros(len(fp) + 1)
    gap = tpr - fpr
    ks = float(np.abs(gap).max())
    precision_at = tp / np.maximum(tp + fp, 1.0)
    recall_at = tp / positives if positives else np.zeros_like(tp)
    decided = scores >= threshold
    true_pos = int((decided & labels).sum())
    accuracy = float((decided == labels).mean())
    precision = true_pos / int(decided.sum()) if decided.any() else 0.0
    recall = true_pos / positives if positives else 0.0
    log_loss: float | None = None
    if np.all((scores >= 0.0) & (scores <= 1.0)):
        p = np.clip(scores, 1e-15, 1 - 1e-15)
        log_loss = float(-np.mean(np.where(labels, np.log(p), np.log1p(-p))))
    return BinaryMetrics(
        auc=float(auc),
        ks=ks,
        accuracy=accuracy,
        precision=float(precision),
        recall=float(recall),
        log_loss=log_loss,
        roc=_thin(fpr, tpr, curve_points),
        ks_curve=_thin(np.r_[np.inf, thresholds], gap, curve_points),
        pr=_thin(recall_at, precision_at, curve_points),
    )


def _labels(table: Table, params: EvaluationParams) -> Floats:
    if params.label_column is None:
        if table.labels is None:
            raise TableError("evaluation: the input table has no label column")
        return table.labels
    return table.column(params.label_column)


def _scores(table: Table, params: EvaluationParams) -> Floats:
    if params.score_column is not None:
        scores = table.column(params.score_column)
    elif table.features.shape[1]:
        scores = table.features[:, 0]
    else:
        raise TableError("evaluation: the input table has no feature column to use as score")
    scores = scores * params.score_scale
    if params.score_transform == "sigmoid":
        scores = 1.0 / (1.0 + np.exp(-scores))
    return np.asarray(scores, dtype=np.float64)


def run(ctx: ComponentContext) -> Mapping[str, Table]:
    params = ctx.params_as(EvaluationParams)
    table = ctx.input("data")
    labels, scores = _labels(table, params), _scores(table, params)
    usable = ~np.isnan(scores) & ~np.isnan(labels)
    metrics = binary_metrics(
        labels[usable] == params.pos_label,
        scores[usable],
        threshold=params.threshold,
        curve_points=params.curve_points,
    )
    log = ctx.metrics.log
    log("rows", float(usable.sum()))
    log("skipped_rows", float((~usable).sum()))
    log("auc", metrics.auc)
    log("ks", metrics.ks)
    log("accuracy", metrics.accuracy)
    log("precision", metrics.precision)
    log("recall", metrics.recall)
    if metrics.log_loss is not None:
        log("log_loss", metrics.log_loss)
    ctx.metrics.curve("roc", *metrics.roc, x_label="fpr", y_label="tpr")
    thresholds, gap = metrics.ks_curve
    ctx.metrics.curve("ks", np.minimum(thresholds, 1e300), gap, x_label="threshold", y_label="ks")
    ctx.metrics.curve("pr", *metrics.pr, x_label="recall", y_label="precision")
    return {}


EVALUATION = ComponentType(
    name="evaluation",
    description="AUC, KS, accuracy, precision, recall (and log loss) of guest-held scores",
    run=run,
    roles=("guest",),
    params=EvaluationParams,
    inputs=(InputSpec("data", description="a table with labels and a score column"),),
    protocol=Protocol(component_type="evaluation", description="exchanges nothing"),
)
