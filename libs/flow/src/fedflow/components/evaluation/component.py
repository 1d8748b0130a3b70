"""evaluation's code: the guest's labels and scores in, metrics and curves out."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from fedflow.components.evaluation import EvaluationParams
from fedflow.components.evaluation.math import (
    Floats,
    at_thresholds,
    binary_metrics,
    gain_lift,
    multiclass_metrics,
    population_stability,
    regression_metrics,
)
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


def _labels(table: Table, params: EvaluationParams) -> Floats:
    if params.label_column is None:
        if table.labels is None:
            raise TableError("evaluation: the input table has no label column")
        return table.labels
    return table.column(params.label_column)


def _positive_label(table: Table, params: EvaluationParams) -> float:
    """`pos_label`, or the number of the class `pos_class` names."""
    if params.pos_class is None:
        return params.pos_label
    if params.label_column not in (None, table.label_name) or table.label_classes is None:
        raise TableError(
            f"evaluation: pos_class {params.pos_class!r} names a class, but the label column "
            "holds numbers (use pos_label)"
        )
    if params.pos_class not in table.label_classes:
        raise TableError(
            f"evaluation: pos_class {params.pos_class!r} is not a class of label column "
            f"{table.label_name!r} (its classes: {', '.join(table.label_classes)})"
        )
    return float(table.label_classes.index(params.pos_class))


CLASS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


def _class_names(table: Table, params: EvaluationParams, classes: list[float]) -> list[str]:
    """How the multi-class metrics name each class: its name (text labels, each name fit for a
    metric name), else its number."""
    numbers = [f"{c:g}" for c in classes]
    if table.label_classes is None or params.label_column not in (None, table.label_name):
        return numbers
    names = [table.class_name(c) for c in classes]
    if all(CLASS_NAME.match(n) for n in names) and len(set(names)) == len(names):
        return names
    return numbers


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
    ctx.metrics.log("rows", float(usable.sum()))
    ctx.metrics.log("skipped_rows", float((~usable).sum()))
    labels, scores = labels[usable], scores[usable]
    if params.eval_type == "regression":
        _regression(ctx, labels, scores)
    elif params.eval_type == "multi":
        _multiclass(ctx, labels, scores, lambda classes: _class_names(table, params, classes))
    else:
        _binary(ctx, params, labels == _positive_label(table, params), scores)
        if "reference" in ctx.inputs:
            reference = _scores(ctx.input("reference"), params)
            _stability(ctx, reference[~np.isnan(reference)], scores, params.bins)
    return {}


def _stability(ctx: ComponentContext, reference: Floats, scores: Floats, bins: int) -> None:
    found = population_stability(reference, scores, bins)
    ctx.metrics.log("psi", found.psi)
    index = np.arange(len(found.expected), dtype=np.float64)
    ctx.metrics.curve("psi_expected", index, found.expected, x_label="bin", y_label="share")
    ctx.metrics.curve("psi_actual", index, found.actual, x_label="bin", y_label="share")


def _regression(ctx: ComponentContext, labels: Floats, predicted: Floats) -> None:
    found = regression_metrics(labels, predicted)
    ctx.metrics.log_many(
        [
            ("rmse", found.rmse, -1),
            ("mae", found.mae, -1),
            ("r2", found.r2, -1),
            ("explained_variance", found.explained_variance, -1),
        ]
    )


def _multiclass(
    ctx: ComponentContext,
    labels: Floats,
    predicted: Floats,
    class_names: Callable[[list[float]], list[str]],
) -> None:
    found = multiclass_metrics(labels, predicted)
    rows = [
        ("accuracy", found.accuracy, -1),
        ("macro_f1", found.macro_f1, -1),
        ("micro_f1", found.micro_f1, -1),
    ]
    names = class_names(found.classes.tolist())
    for i, name in enumerate(names):
        rows += [
            (f"precision.{name}", float(found.precision[i]), -1),
            (f"recall.{name}", float(found.recall[i]), -1),
            (f"f1.{name}", float(found.f1[i]), -1),
        ]
        rows += [
            (f"confusion.{name}.{other}", float(found.confusion[i, j]), -1)
            for j, other in enumerate(names)
        ]
    ctx.metrics.log_many(rows)


def _binary(
    ctx: ComponentContext, params: EvaluationParams, positive: NDArray[np.bool_], scores: Floats
) -> None:
    metrics = binary_metrics(
        positive, scores, threshold=params.threshold, curve_points=params.curve_points
    )
    log = ctx.metrics.log
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
    at = at_thresholds(positive, scores, np.array([params.threshold]))
    log("f1", float(at.f1[0]))
    for name, value in (("tp", at.tp), ("fp", at.fp), ("tn", at.tn), ("fn", at.fn)):
        log(name, float(value[0]))
    table = at_thresholds(positive, scores, np.asarray(params.thresholds, dtype=np.float64))
    for name, values in (
        ("precision_at", table.precision),
        ("recall_at", table.recall),
        ("f1_at", table.f1),
    ):
        ctx.metrics.curve(name, table.thresholds, values, x_label="threshold", y_label=name[:-3])
    if positive.any():
        fractions, gain, lift = gain_lift(positive, scores, params.bins)
        ctx.metrics.curve("gain", fractions, gain, x_label="population", y_label="gain")
        ctx.metrics.curve("lift", fractions, lift, x_label="population", y_label="lift")
        log("lift_top", float(lift[0]))
