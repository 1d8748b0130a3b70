"""One class numbering per job: a table's text labels are numbered per table (the sorted
names), so a test table that lacks a class numbers the others differently from the training
table. The model keeps the class names it was trained on and the data it predicts or validates
is renumbered by name (fedflow.label_classes); a class the model never saw is refused."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.artifacts import ModelArtifact
from fedflow.label_classes import align_inputs, trained_classes, with_trained_classes
from fedflow.pipeline import Pipeline
from fedflow.standalone import StandaloneError, run_pipeline
from fedflow.tables import Table, TableError
from sklearn.datasets import load_iris

from fedmq.results import artifact_json

GUEST, HOST = "9999", "10000"
NAMES = ("setosa", "versicolor", "virginica")


def table(labels: list[float], classes: list[str] | None) -> Table:
    ids = np.array([f"r{i}" for i in range(len(labels))], dtype=np.str_)
    return Table(ids, np.zeros((len(labels), 1)), ["x"], np.array(labels), "y", classes)


def test_data_is_renumbered_by_the_names_of_the_models_classes() -> None:
    model = Table(np.array(["x"]), np.ones((1, 1)), ["weight"], None, trained_classes=[*NAMES])
    data = table([0.0, 1.0, 1.0], ["setosa", "virginica"])  # no versicolor: virginica is 1

    aligned = align_inputs({"model": model, "data": data}, "predict_0")

    assert aligned["data"].labels.tolist() == [0.0, 2.0, 2.0]
    assert aligned["data"].label_classes == list(NAMES)
    assert aligned["model"] is model


def test_validate_data_is_numbered_as_the_training_data_and_the_model_keeps_the_names() -> None:
    train = table([0.0, 1.0, 2.0], [*NAMES])
    valid = table([1.0, 0.0], ["versicolor", "virginica"])

    aligned = align_inputs({"data": train, "validate_data": valid}, "lr_0")
    model = ModelArtifact(document={"trees": []})
    outputs = with_trained_classes({"model": model}, aligned)

    assert aligned["validate_data"].labels.tolist() == [2.0, 1.0]
    assert trained_classes(outputs["model"]) == list(NAMES)


def test_a_class_the_model_never_saw_is_refused_naming_it() -> None:
    model = Table(np.array(["x"]), np.ones((1, 1)), ["weight"], None, trained_classes=["no", "yes"])
    data = table([0.0, 1.0, 2.0], ["maybe", "no", "yes"])

    with pytest.raises(
        TableError, match=r"input 'data' has label class\(es\) 'maybe' in column 'y'"
    ):
        align_inputs({"model": model, "data": data}, "predict_0")


def test_the_trained_classes_survive_the_artifact_store_format() -> None:
    model = Table(np.array(["x"]), np.ones((1, 1)), ["weight"], None, trained_classes=["a", "b"])

    assert Table.from_bytes(model.to_bytes()).trained_classes == ["a", "b"]
    assert artifact_json(model)["classes"] == ["a", "b"]  # fedmq job/standalone model
    assert Table.from_bytes(table([0.0], None).to_bytes()).trained_classes is None


def write_iris(folder: Path) -> None:
    """iris, standardized, split vertically (guest: petals and the species by name; host:
    sepals) into a training table of every other row and a test table without versicolor."""
    x, y = load_iris(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    rows = {
        "train": [i for i in range(150) if i % 2],
        "test": [i for i in range(150) if i % 2 == 0 and y[i] != 1],
    }
    for name, chosen in rows.items():
        with (folder / f"g_{name}.csv").open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["id", "y", "petal_l", "petal_w"])
            out.writerows([f"i{i}", NAMES[y[i]], x[i, 2], x[i, 3]] for i in chosen)
        with (folder / f"h_{name}.csv").open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["id", "sepal_l", "sepal_w"])
            out.writerows([f"i{i}", x[i, 0], x[i, 1]] for i in chosen)


def iris_pipeline(test: str) -> dict[str, Any]:
    def read(name: str, table: str) -> list[dict[str, Any]]:
        return [
            {
                "name": f"reader_{name}",
                "type": "reader",
                "params": {"guest": {"table": f"g_{table}"}, "host": {"table": f"h_{table}"}},
            },
            {"name": f"psi_{name}", "type": "psi", "inputs": {"data": f"reader_{name}.data"}},
        ]

    lr = {"multi_class": True, "epochs": 1, "batch_size": 64, "learning_rate": 1.0}
    return {
        "name": "iris-classes",
        "parties": {"guest": GUEST, "host": [HOST]},
        "components": [
            *read("train", "train"),
            *read("test", test),
            {
                "name": "lr_0",
                "type": "hetero_lr",
                "inputs": {"data": "psi_train.data"},
                "params": {
                    "common": {
                        **lr,
                        "key_bits": 512,
                        "insecure_short_keys": True,
                        "early_stop": False,
                    }
                },
            },
            {
                "name": "predict_0",
                "type": "hetero_lr_predict",
                "inputs": {"model": "lr_0.model", "data": "psi_test.data"},
            },
            {
                "name": "eval_0",
                "type": "evaluation",
                "inputs": {"data": "predict_0.data"},
                "params": {"guest": {"eval_type": "multi", "score_column": "predicted"}},
            },
        ],
    }


@pytest.mark.timeout(300)
def test_a_test_table_without_a_class_is_scored_in_the_training_tables_numbering(
    tmp_path: Path,
) -> None:
    # Prepare: the test table holds setosa and virginica only, so on its own it numbers
    # virginica 1 (versicolor's number in the training table)
    data = tmp_path / "data"
    data.mkdir()
    write_iris(data)

    # Execute
    result = run_pipeline(
        Pipeline.from_dict(iris_pipeline("test")), {GUEST: data, HOST: data}, tmp_path,
        recv_timeout=60,
    )  # fmt: skip

    # Assert: the test rows carry the training numbering; the predictions are right by name
    predicted = result.output(GUEST, "guest", "predict_0", "data")
    assert predicted.label_classes == list(NAMES)
    assert predicted.labels is not None
    assert set(predicted.labels.tolist()) == {0.0, 2.0}
    model = result.output(GUEST, "guest", "lr_0", "model")
    assert model.trained_classes == list(NAMES)
    accuracy = float(np.mean(predicted.column("predicted") == predicted.labels))
    assert accuracy >= 0.9
    assert result.metric("eval_0", "accuracy") == pytest.approx(accuracy)


def test_a_class_the_model_never_saw_stops_the_prediction_naming_it(tmp_path: Path) -> None:
    # Prepare: a test table with a species the training table does not have
    data = tmp_path / "data"
    data.mkdir()
    write_iris(data)
    rows = list(csv.reader((data / "g_test.csv").open()))
    rows[1][1] = "hybrid"
    with (data / "g_odd.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    (data / "h_odd.csv").write_text((data / "h_test.csv").read_text())
    spec = iris_pipeline("odd")
    spec["components"] = [c for c in spec["components"] if c["name"] != "eval_0"]

    # Execute / Assert
    with pytest.raises(
        StandaloneError, match=r"'hybrid' in column 'y' that the model \(model\) never saw"
    ):
        run_pipeline(Pipeline.from_dict(spec), {GUEST: data, HOST: data}, tmp_path, recv_timeout=30)
