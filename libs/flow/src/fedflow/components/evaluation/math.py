"""Binary-classification metrics (numpy only, no IO): AUC, KS, accuracy, precision, recall,
log loss and the roc/ks/pr curves, as `binary_metrics` computes them."""

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
