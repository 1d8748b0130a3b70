"""evaluation's code: the guest's labels and scores in, metrics and curves out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from fedflow.components.evaluation import EvaluationParams
from fedflow.components.evaluation.math import Floats, binary_metrics
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


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
