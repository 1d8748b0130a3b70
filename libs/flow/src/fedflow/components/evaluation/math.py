"""Evaluation metrics (numpy only, no IO; tests/flow/test_evaluation.py checks each against
scikit-learn's, which is a development tool kept out of the runtime images):

- binary: AUC, KS, accuracy, precision, recall, log loss and the roc/ks/pr curves
  (`binary_metrics`); F1 and the confusion matrix at a threshold, precision/recall/F1 at a list
  of thresholds (`at_thresholds`); cumulative gain and lift by population quantile
  (`gain_lift`); the population stability index of the scores against a reference set's,
  e.g. validate against train (`population_stability`);
- regression: RMSE, MAE, R², explained variance (`regression_metrics`);
- multi-class: accuracy, per-class precision and recall, macro and micro F1, the confusion
  matrix (`multiclass_metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]


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
    # KS, like AUC, compares the two classes' score distributions: undefined with one class
    # (the gap of a missing class's all-zero rate was reported as KS 1).
    ks = float(np.abs(gap).max()) if positives and negatives else float("nan")
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


@dataclass(frozen=True)
class ThresholdMetrics:
    """Precision, recall and F1 of "score >= threshold means positive", per threshold, and the
    confusion counts (tp, fp, tn, fn)."""

    thresholds: Floats
    precision: Floats
    recall: Floats
    f1: Floats
    tp: Floats
    fp: Floats
    tn: Floats
    fn: Floats


def _ratio(num: Floats, den: Floats) -> Floats:
    """num / den, 0 where den is 0 (scikit-learn's zero_division=0)."""
    return np.asarray(np.where(den > 0, num / np.maximum(den, 1), 0.0), dtype=np.float64)


def at_thresholds(
    labels: NDArray[np.bool_], scores: Floats, thresholds: Floats
) -> ThresholdMetrics:
    """The confusion counts and precision / recall / F1 at each threshold."""
    t = np.asarray(thresholds, dtype=np.float64)
    decided = scores[None, :] >= t[:, None]
    tp = (decided & labels[None, :]).sum(axis=1).astype(np.float64)
    fp = (decided & ~labels[None, :]).sum(axis=1).astype(np.float64)
    fn = float(labels.sum()) - tp
    tn = float((~labels).sum()) - fp
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return ThresholdMetrics(t, precision, recall, f1, tp, fp, tn, fn)


def gain_lift(
    labels: NDArray[np.bool_], scores: Floats, bins: int
) -> tuple[Floats, Floats, Floats]:
    """The population fractions k / bins (k = 1..bins), the cumulative gain at each (the share
    of all positives among the top-scored fraction of rows) and the lift (gain / fraction).
    Rows are ranked by score, highest first; ties keep their order."""
    n, positives = len(labels), int(labels.sum())
    if n == 0 or positives == 0:
        raise ValueError("evaluation: gain and lift need rows with a positive label")
    ranked = labels[np.argsort(-scores, kind="mergesort")]
    found = np.cumsum(ranked)
    fractions = np.arange(1, bins + 1) / bins
    cut = np.ceil(fractions * n).astype(np.int64)
    gain = found[cut - 1] / positives
    return fractions, gain, gain / (cut / n)


@dataclass(frozen=True)
class RegressionMetrics:
    rmse: float
    mae: float
    r2: float
    explained_variance: float


def regression_metrics(y: Floats, predicted: Floats) -> RegressionMetrics:
    """RMSE, MAE, R² (1 - SS_res / SS_tot) and explained variance (1 - Var(y - p) / Var(y));
    R² and explained variance are NaN for a constant y."""
    if len(y) == 0:
        raise ValueError("evaluation: no rows to evaluate")
    error = predicted - y
    variance = float(np.var(y))
    ss_res = float(np.mean(error**2))
    r2 = 1.0 - ss_res / variance if variance > 0 else float("nan")
    explained = 1.0 - float(np.var(error)) / variance if variance > 0 else float("nan")
    return RegressionMetrics(
        rmse=float(np.sqrt(ss_res)),
        mae=float(np.mean(np.abs(error))),
        r2=r2,
        explained_variance=explained,
    )


@dataclass(frozen=True)
class MulticlassMetrics:
    classes: Floats
    accuracy: float
    precision: Floats
    """Per class, in the order of `classes`."""
    recall: Floats
    f1: Floats
    macro_f1: float
    micro_f1: float
    confusion: NDArray[np.int64]
    """confusion[i, j]: rows of true class i predicted as class j."""


def multiclass_metrics(y: Floats, predicted: Floats) -> MulticlassMetrics:
    """The metrics of predicted classes against true ones (both class values; the classes are
    every value either holds, sorted)."""
    if len(y) == 0:
        raise ValueError("evaluation: no rows to evaluate")
    classes = np.unique(np.concatenate([y, predicted]))
    true_at = np.searchsorted(classes, y)
    pred_at = np.searchsorted(classes, predicted)
    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (true_at, pred_at), 1)
    tp = np.diag(confusion).astype(np.float64)
    predicted_count = confusion.sum(axis=0).astype(np.float64)
    true_count = confusion.sum(axis=1).astype(np.float64)
    precision, recall = _ratio(tp, predicted_count), _ratio(tp, true_count)
    f1 = _ratio(2 * tp, predicted_count + true_count)
    accuracy = float(tp.sum() / len(y))
    # Micro F1 counts every row once: with one predicted class per row it is the accuracy.
    return MulticlassMetrics(
        classes=classes,
        accuracy=accuracy,
        precision=precision,
        recall=recall,
        f1=f1,
        macro_f1=float(f1.mean()),
        micro_f1=accuracy,
        confusion=confusion,
    )


PSI_FLOOR = 1e-4
"""A bin's share below this counts as this in the PSI (an empty bin would make it infinite)."""


@dataclass(frozen=True)
class Stability:
    psi: float
    edges: Floats
    """The inner bin edges: the reference scores' quantiles 1/bins .. (bins-1)/bins."""
    expected: Floats
    """The reference's share of rows in each bin."""
    actual: Floats


def population_stability(reference: Floats, scores: Floats, bins: int) -> Stability:
    """PSI = sum over bins of (a - e) ln(a / e), a and e the shares of `scores` and of
    `reference` in each bin; the bins cut at the reference's quantiles (equal-frequency on the
    reference; tied edges merge), a bin's share floored at PSI_FLOOR. Below 0.1 is usually read
    as stable, above 0.25 as shifted."""
    if len(reference) == 0 or len(scores) == 0:
        raise ValueError("evaluation: PSI needs reference and scored rows")
    edges = np.unique(np.quantile(reference, np.arange(1, bins) / bins))
    expected = np.bincount(
        np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1
    )
    actual = np.bincount(np.searchsorted(edges, scores, side="right"), minlength=len(edges) + 1)
    e = np.maximum(expected / len(reference), PSI_FLOOR)
    a = np.maximum(actual / len(scores), PSI_FLOOR)
    return Stability(
        psi=float(np.sum((a - e) * np.log(a / e))),
        edges=np.asarray(edges, dtype=np.float64),
        expected=np.asarray(expected / len(reference), dtype=np.float64),
        actual=np.asarray(actual / len(scores), dtype=np.float64),
    )
