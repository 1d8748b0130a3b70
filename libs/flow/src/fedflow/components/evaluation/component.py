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
    return _column(table, "label_column", params.label_column)


def _column(table: Table, param: str, name: str) -> Floats:
    """The column `name` that the param `param` names, refused naming the param and the
    columns there are."""
    if name == table.label_name and table.labels is not None:
        return table.labels
    if name not in table.feature_names:
        label = f"label {table.label_name!r}, " if table.labels is not None else ""
        raise TableError(
            f"evaluation: {param} {name!r} is not a column of its input ({label}columns: "
            f"{', '.join(table.feature_names[:30]) or 'none'})"
        )
    return table.column(name)


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
        scores = _column(table, "score_column", params.score_column)
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
        _check_classes(table, labels, scores)
        _multiclass(ctx, labels, scores, lambda classes: _class_names(table, params, classes))
    else:
        positive = _positive_label(table, params)
        _check_binary(table, params, labels, positive)
        _binary(ctx, params, labels == positive, scores)
        if "reference" in ctx.inputs:
            reference = _scores(ctx.input("reference"), params)
            _stability(ctx, reference[~np.isnan(reference)], scores, params.bins)
    return {}


def _shown(table: Table, values: Floats, limit: int = 10) -> str:
    """Distinct label values as the data wrote them (a text label's class with its name)."""
    found, counts = np.unique(values, return_counts=True)
    listed = []
    for value, count in zip(found.tolist()[:limit], counts.tolist()[:limit], strict=True):
        name = f" = {table.class_name(value)!r}" if table.label_classes is not None else ""
        listed.append(f"{value:g}{name} ({count} row{'s' if count != 1 else ''})")
    more = f", ... ({len(found)} values)" if len(found) > limit else ""
    return ", ".join(listed) + more


def _check_binary(table: Table, params: EvaluationParams, labels: Floats, positive: float) -> None:
    """Binary metrics need labels of two values, one of them the positive class: a label of
    several classes or a numeric target evaluated as binary gave an AUC of "class 1 against
    the rest" or nan without a word."""
    values = np.unique(labels)
    where = f"evaluation (eval_type binary): label column {table.label_name!r}"
    if params.label_column is not None:
        where = f"evaluation (eval_type binary): label column {params.label_column!r}"
    if len(values) == 0:
        raise ValueError(f"{where}: no row has both a label and a score, nothing to evaluate")
    if len(values) > 2:
        raise ValueError(
            f"{where} holds {len(values)} distinct values ({_shown(table, labels)}), binary "
            f"metrics take two (positive: pos_label {positive:g}): set eval_type: regression "
            "for a numeric target, eval_type: multi (with score_column: predicted) for class "
            "labels, or map the labels to 0 and 1 with label_transform before the model"
        )
    if positive not in values:
        raise ValueError(
            f"{where} holds {_shown(table, labels)}, no row of the positive class (pos_label "
            f"{positive:g}): set pos_label (or pos_class) to the positive class, or evaluate "
            "more rows"
        )
    if len(values) == 1:
        raise ValueError(
            f"{where} holds one class only, {_shown(table, labels)}, in the rows evaluated: "
            "AUC and KS need rows of both classes (evaluate more rows, e.g. a larger test or "
            "validate fraction in data_split)"
        )


def _check_classes(table: Table, labels: Floats, predicted: Floats) -> None:
    """Multi-class metrics compare class labels with predicted classes: a numeric target, or
    a binary model's scores (probabilities), gave a metric per distinct value without a
    word."""
    if not _classes_mask(labels).all():
        raise ValueError(
            f"evaluation (eval_type multi): label column {table.label_name!r} holds values that "
            f"are not classes (integers >= 0): {_shown(table, labels[~_classes_mask(labels)])}; "
            "set eval_type: regression for a numeric target"
        )
    if not _classes_mask(predicted).all():
        odd = predicted[~_classes_mask(predicted)]
        raise ValueError(
            f"evaluation (eval_type multi): the score column holds values that are not "
            f"classes (integers >= 0), e.g. {', '.join(f'{v:g}' for v in odd[:5])}: it takes a "
            "multi-class model's predicted class (score_column: predicted, the predict "
            "components' class column); a binary model's scores need eval_type: binary"
        )


def _classes_mask(values: Floats) -> NDArray[np.bool_]:
    """Which values are class numbers (integers >= 0)."""
    return np.asarray((values >= 0) & (values == np.round(values)), dtype=np.bool_)


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
