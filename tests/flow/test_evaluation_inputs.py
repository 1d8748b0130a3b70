"""evaluation refuses labels and scores that do not fit its eval_type, saying which to set,
instead of metrics that mean nothing: binary metrics of a 3-class label (class 1 against the
rest, silently) or of a numeric target (auc nan), multi-class metrics of probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.tables import Table
from sklearn.datasets import load_diabetes, load_wine
from sklearn.metrics import roc_auc_score

from tests.flow.modelling_runs import GUEST, run_component


def scored(labels: Any, scores: Any) -> Table:
    """A predict output as the guest holds it: a `score` and a `predicted` column."""
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    return Table(
        ids=np.array([f"r{i}" for i in range(len(labels))], dtype=np.str_),
        features=np.column_stack([scores, (scores >= 0.5).astype(np.float64)]),
        feature_names=["score", "predicted"],
        labels=labels,
        label_name="y",
    )


def refusal(tmp_path: Path, table: Table, params: dict[str, Any]) -> str:
    outcome = run_component(tmp_path, "evaluation", {GUEST: {"data": table}}, params)
    assert GUEST in outcome.errors, "evaluation accepted the table"
    return str(outcome.errors[GUEST])


def test_binary_metrics_of_a_three_class_label_are_refused(tmp_path: Path) -> None:
    # Prepare: wine's three classes and some scores in (0, 1)
    y = load_wine().target
    scores = np.random.default_rng(0).random(len(y))

    # Execute
    message = refusal(tmp_path, scored(y, scores), {})

    # Assert
    assert message == (
        "evaluation (eval_type binary): label column 'y' holds 3 distinct values (0 (59 rows), "
        "1 (71 rows), 2 (48 rows)), binary metrics take two (positive: pos_label 1): set "
        "eval_type: regression for a numeric target, eval_type: multi (with score_column: "
        "predicted) for class labels, or map the labels to 0 and 1 with label_transform before "
        "the model"
    )


def test_binary_metrics_of_a_numeric_target_are_refused(tmp_path: Path) -> None:
    # Prepare: diabetes' target (214 distinct values) as a regression model predicts it
    y = load_diabetes().target

    # Execute
    message = refusal(tmp_path, scored(y, y + 1.0), {"score_column": "score"})

    # Assert
    assert message.startswith(
        "evaluation (eval_type binary): label column 'y' holds 214 distinct values ("
    )
    assert "set eval_type: regression for a numeric target" in message


@pytest.mark.parametrize(
    ("labels", "params", "expected"),
    [
        (
            [0.0] * 20,
            {},
            "evaluation (eval_type binary): label column 'y' holds 0 (20 rows), no row of the "
            "positive class (pos_label 1): set pos_label (or pos_class) to the positive "
            "class, or evaluate more rows",
        ),
        (
            [1.0] * 20,
            {},
            "evaluation (eval_type binary): label column 'y' holds one class only, 1 (20 rows), "
            "in the rows evaluated: AUC and KS need rows of both classes (evaluate more rows, "
            "e.g. a larger test or validate fraction in data_split)",
        ),
        (
            [1.0] * 10 + [2.0] * 10,
            {},
            None,  # two values, 1 positive: evaluated (2 is the negative class)
        ),
        (
            [1.0] * 10 + [2.0] * 10,
            {"pos_label": 0.0},
            "evaluation (eval_type binary): label column 'y' holds 1 (10 rows), 2 (10 rows), no "
            "row of the positive class (pos_label 0): set pos_label (or pos_class) to the "
            "positive class, or evaluate more rows",
        ),
    ],
    ids=["no_positive", "one_class", "two_values_accepted", "wrong_pos_label"],
)
def test_binary_metrics_need_rows_of_both_classes(
    tmp_path: Path, labels: list[float], params: dict[str, Any], expected: str | None
) -> None:
    # Prepare
    scores = np.linspace(0.05, 0.95, len(labels))
    table = scored(labels, scores)

    # Execute
    outcome = run_component(tmp_path, "evaluation", {GUEST: {"data": table}}, params)

    # Assert
    if expected is None:
        assert outcome.errors == {}
        positive = np.asarray(labels) == params.get("pos_label", 1.0)
        assert outcome.metrics[GUEST]["auc"] == pytest.approx(roc_auc_score(positive, scores))
    else:
        assert str(outcome.errors[GUEST]) == expected


def test_multi_class_metrics_of_scores_or_of_a_numeric_target_are_refused(tmp_path: Path) -> None:
    # Prepare: wine's classes scored by probabilities (a binary model's output), and the
    # diabetes target, which is not a class label
    y = load_wine().target
    probabilities = np.random.default_rng(1).random(len(y))
    target = load_diabetes().target / 10.0

    # Execute
    on_scores = refusal(tmp_path / "a", scored(y, probabilities), {"eval_type": "multi"})
    on_target = refusal(
        tmp_path / "b", scored(target, target), {"eval_type": "multi", "score_column": "score"}
    )

    # Assert
    assert on_scores.startswith(
        "evaluation (eval_type multi): the score column holds values that are not classes "
        "(integers >= 0), e.g. "
    )
    assert on_scores.endswith(
        "it takes a multi-class model's predicted class (score_column: predicted, the predict "
        "components' class column); a binary model's scores need eval_type: binary"
    )
    assert on_target.startswith(
        "evaluation (eval_type multi): label column 'y' holds values that are not classes "
    )
    assert on_target.endswith("set eval_type: regression for a numeric target")


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"score_column": "colour"},
            "evaluation: score_column 'colour' is not a column of its input (label 'y', "
            "columns: score, predicted)",
        ),
        (
            {"label_column": "target"},
            "evaluation: label_column 'target' is not a column of its input (label 'y', "
            "columns: score, predicted)",
        ),
    ],
    ids=["score_column", "label_column"],
)
def test_a_column_param_naming_no_column_is_refused_naming_the_param(
    tmp_path: Path, params: dict[str, Any], expected: str
) -> None:
    # Execute
    message = refusal(tmp_path, scored([0.0, 1.0] * 10, np.linspace(0, 1, 20)), params)

    # Assert
    assert message == expected
