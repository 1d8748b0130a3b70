"""label_transform without a mapping refuses a numeric target instead of making a class of
each of its values (diabetes' 214 values became classes 0 .. 213 without a word)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fedflow.tables import Table
from sklearn.datasets import load_diabetes, load_digits

from tests.flow.modelling_runs import GUEST, run_component


def guest_table(labels: np.ndarray, x: np.ndarray) -> Table:
    ids = np.array([f"r{i}" for i in range(len(labels))], dtype=np.str_)
    names = [f"x{j}" for j in range(x.shape[1])]
    return Table(ids, x, names, labels.astype(np.float64), "y")


def test_a_numeric_target_is_refused_and_ten_classes_are_mapped(tmp_path: Path) -> None:
    # Prepare: diabetes' target (214 distinct whole numbers) and digits' 10 classes
    diabetes, digits = load_diabetes(), load_digits()

    # Execute
    target = run_component(
        tmp_path / "t",
        "label_transform",
        {GUEST: {"data": guest_table(diabetes.target, diabetes.data[:, :3])}},
    )
    classes = run_component(
        tmp_path / "c",
        "label_transform",
        {GUEST: {"data": guest_table(digits.target + 1, digits.data[:, :3])}},
    )

    # Assert
    assert str(target.errors[GUEST]) == (
        "label_transform: label column 'y' holds 214 distinct values (25, 31, 37, 39, 40, ...), "
        "and without a mapping each would become a class (0 .. 213): is it a numeric target? a "
        "regression model (hetero_linr) takes it as it is; else give a mapping"
    )
    assert classes.errors == {}
    mapped = classes.outputs[GUEST]["data"].labels
    assert np.array_equal(mapped, digits.target)
