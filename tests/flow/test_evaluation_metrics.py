"""evaluation's metrics equal scikit-learn's on the same labels and scores: binary (AUC, KS,
precision / recall / F1 and the confusion matrix at thresholds, gain and lift), regression
(RMSE, MAE, R², explained variance) and multi-class (accuracy, per-class precision and recall,
macro and micro F1, the confusion matrix); and the PSI of scores against a reference set."""

from __future__ import annotations

import numpy as np
import pytest
from fedflow.components.evaluation.math import (
    at_thresholds,
    binary_metrics,
    gain_lift,
    multiclass_metrics,
    population_stability,
    regression_metrics,
)
from sklearn import metrics as sk

RNG = np.random.default_rng(17)


def binary_data(n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    labels = RNG.random(n) < 0.3
    scores = np.round(RNG.random(n) * 0.6 + 0.4 * labels, 2)  # ties on purpose
    return labels, scores


def test_binary_auc_ks_and_threshold_metrics_equal_sklearn() -> None:
    # Prepare
    labels, scores = binary_data()
    thresholds = np.array([0.1, 0.35, 0.5, 0.8, 2.0])

    # Execute
    found = binary_metrics(labels, scores, threshold=0.5, curve_points=1001)
    table = at_thresholds(labels, scores, thresholds)

    # Assert
    assert found.auc == pytest.approx(sk.roc_auc_score(labels, scores), abs=1e-12)
    fpr, tpr, _ = sk.roc_curve(labels, scores)
    assert found.ks == pytest.approx(float(np.max(tpr - fpr)), abs=1e-12)
    for i, t in enumerate(thresholds):
        decided = scores >= t
        assert table.precision[i] == pytest.approx(
            sk.precision_score(labels, decided, zero_division=0)
        )
        assert table.recall[i] == pytest.approx(sk.recall_score(labels, decided))
        assert table.f1[i] == pytest.approx(sk.f1_score(labels, decided, zero_division=0))
        tn, fp, fn, tp = sk.confusion_matrix(labels, decided, labels=[False, True]).ravel()
        assert (table.tp[i], table.fp[i], table.tn[i], table.fn[i]) == (tp, fp, tn, fn)


def test_gain_and_lift_by_decile_match_a_direct_count() -> None:
    # Prepare: distinct scores, so the ranking is unambiguous
    labels = RNG.random(1000) < 0.2
    scores = RNG.random(1000) + 0.5 * labels

    # Execute
    fractions, gain, lift = gain_lift(labels, scores, bins=10)

    # Assert: the top k deciles hold gain[k] of the positives; lift is gain over the share
    top = np.argsort(-scores)
    for k in range(10):
        captured = labels[top[: (k + 1) * 100]].sum() / labels.sum()
        assert gain[k] == pytest.approx(captured)
        assert lift[k] == pytest.approx(captured / fractions[k])
    assert gain[-1] == 1.0 and lift[0] > 1.5


def test_regression_metrics_equal_sklearn() -> None:
    y = RNG.normal(150.0, 70.0, 300)
    predicted = y + RNG.normal(5.0, 30.0, 300)

    found = regression_metrics(y, predicted)

    assert found.rmse == pytest.approx(np.sqrt(sk.mean_squared_error(y, predicted)), rel=1e-12)
    assert found.mae == pytest.approx(sk.mean_absolute_error(y, predicted), rel=1e-12)
    assert found.r2 == pytest.approx(sk.r2_score(y, predicted), rel=1e-12)
    assert found.explained_variance == pytest.approx(
        sk.explained_variance_score(y, predicted), rel=1e-12
    )


def test_multiclass_metrics_equal_sklearn() -> None:
    # Prepare: 4 classes, the wrong predictions among the first 3 only
    y = RNG.integers(0, 4, 400).astype(np.float64)
    predicted = np.where(RNG.random(400) < 0.7, y, RNG.integers(0, 3, 400)).astype(np.float64)

    # Execute
    found = multiclass_metrics(y, predicted)

    # Assert
    assert found.classes.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert found.accuracy == pytest.approx(sk.accuracy_score(y, predicted))
    p, r, f, _ = sk.precision_recall_fscore_support(y, predicted, zero_division=0)
    np.testing.assert_allclose(found.precision, p)
    np.testing.assert_allclose(found.recall, r)
    np.testing.assert_allclose(found.f1, f)
    assert found.macro_f1 == pytest.approx(sk.f1_score(y, predicted, average="macro"))
    assert found.micro_f1 == pytest.approx(sk.f1_score(y, predicted, average="micro"))
    assert found.confusion.tolist() == sk.confusion_matrix(y, predicted).tolist()


def test_population_stability_is_0_for_the_same_distribution_and_grows_with_a_shift() -> None:
    # Prepare: a reference, a sample of the same distribution, and a shifted one
    reference = RNG.random(10_000)
    same, shifted = RNG.random(5_000), RNG.random(5_000) * 0.5 + 0.5

    # Execute
    stable = population_stability(reference, same, bins=10)
    moved = population_stability(reference, shifted, bins=10)

    # Assert: deciles of the reference; the shifted half leaves 5 bins (nearly) empty
    np.testing.assert_allclose(stable.expected, 0.1, atol=1e-3)
    assert stable.psi < 0.01
    a = np.maximum(moved.actual, 1e-4)
    e = np.maximum(moved.expected, 1e-4)
    assert moved.psi == pytest.approx(float(np.sum((a - e) * np.log(a / e))))
    assert moved.psi > 1.0
    assert moved.actual[:5].sum() < 0.01


def test_auc_and_ks_of_a_single_class_are_undefined_not_perfect() -> None:
    # KS was 1 for a table of positives only (the missing class's rates are all 0)
    scores = np.linspace(0.0, 1.0, 50)

    for labels in (np.ones(50, dtype=bool), np.zeros(50, dtype=bool)):
        metrics = binary_metrics(labels, scores, threshold=0.5, curve_points=10)

        assert np.isnan(metrics.auc) and np.isnan(metrics.ks)
        assert metrics.accuracy == float(np.mean((scores >= 0.5) == labels))
