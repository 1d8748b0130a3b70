"""A label column a binary model cannot take is refused by the reader before PSI, and the
refusal says what to use instead: a multi-class model or label_transform for several classes,
a regression model for a numeric target, label_transform for two values other than 0 and 1."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from fedflow.pipeline import Pipeline
from fedflow.standalone import StandaloneError, run_pipeline
from sklearn.datasets import load_diabetes, load_wine

GUEST, HOST = "9999", "10000"


def write(path: Path, ids: list[str], labels: list[str] | None, x: np.ndarray) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", *(["y"] if labels else []), *[f"x{j}" for j in range(x.shape[1])]])
        for i, key in enumerate(ids):
            writer.writerow([key, *([labels[i]] if labels else []), *map(repr, x[i].tolist())])
    return path


def hetero_lr_refusal(tmp_path: Path, labels: list[str], x: np.ndarray) -> str:
    ids = [f"r{i}" for i in range(len(labels))]
    tables = {
        GUEST: {"g": write(tmp_path / "g.csv", ids, labels, x[:, :2])},
        HOST: {"h": write(tmp_path / "h.csv", ids, None, x[:, 2:])},
    }
    pipeline = Pipeline.from_dict(
        {
            "name": "binary-on-other-labels",
            "parties": {"guest": GUEST, "host": [HOST]},
            "components": [
                {
                    "name": "reader_0",
                    "type": "reader",
                    "params": {"guest": {"table": "g"}, "host": {"table": "h"}},
                },
                {"name": "psi_0", "type": "psi", "inputs": {"data": "reader_0.data"}},
                {
                    "name": "lr_0",
                    "type": "hetero_lr",
                    "inputs": {"data": "psi_0.data"},
                    "params": {"common": {"key_bits": 512, "insecure_short_keys": True}},
                },
            ],
        }
    )
    with pytest.raises(StandaloneError) as failed:
        run_pipeline(pipeline, tables, tmp_path / "run", recv_timeout=30)
    return str(failed.value)


def test_three_classes_for_a_binary_model_point_to_multi_class_or_label_transform(
    tmp_path: Path,
) -> None:
    # Prepare: wine's three classes by name
    wine = load_wine()
    labels = [str(wine.target_names[t]) for t in wine.target]

    # Execute
    message = hetero_lr_refusal(tmp_path, labels, wine.data[:, :4])

    # Assert
    assert message == (
        "reader_0 failed at party 9999 (guest): ValueError: table g: label column 'y' has "
        "values outside {0, 1}, which the model its data flows into needs: 2 = 'class_2' "
        "(48 rows); it holds 3 classes: a multi-class model takes them (hetero_lr with "
        "multi_class: true, hetero_secureboost with objective: multi:softmax), or map them to "
        "0 and 1 with label_transform before the model"
    )


def test_a_numeric_target_for_a_binary_model_points_to_a_regression_model(tmp_path: Path) -> None:
    # Prepare: diabetes' target, whole numbers with 214 distinct values
    diabetes = load_diabetes()
    labels = [f"{v:g}" for v in diabetes.target]

    # Execute
    message = hetero_lr_refusal(tmp_path, labels, diabetes.data[:, :4])

    # Assert
    assert message.endswith(
        "; it holds 214 distinct values, a numeric target: a regression model takes it "
        "(hetero_linr; hetero_poisson for counts), or make a 0/1 label of it before the model"
    )


def test_two_values_other_than_0_and_1_point_to_label_transform(tmp_path: Path) -> None:
    # Prepare: labels 1 and 2
    x = np.random.default_rng(0).normal(size=(100, 4))
    labels = ["1" if i % 3 else "2" for i in range(100)]

    # Execute
    message = hetero_lr_refusal(tmp_path, labels, x)

    # Assert
    assert message.endswith(
        f"needs: 2 ({labels.count('2')} rows); map its values to 0 and 1 with label_transform "
        "before the model"
    )
