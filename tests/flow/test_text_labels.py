"""Text labels through a pipeline: a guest table whose label column holds class names is read
as classes 0 .. K-1 (the names sorted), the names follow the labels through psi to the
evaluation, which takes the positive class by name and names the classes in its multi-class
metrics, and to `fedmq standalone data`, which exports them as names; a positive class that is
not one of them is refused naming the classes; a model of numbers (hetero_linr, hetero_poisson)
refuses a text label column."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.pipeline import Pipeline
from fedflow.standalone import StandaloneError, StandaloneResult, run_pipeline
from fedflow.tables import Table
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import accuracy_score, roc_auc_score
from typer.testing import CliRunner

from fedmq.standalone_cli import standalone_app
from tests.flow.modelling_runs import run_component

GUEST, HOST = "9999", "10000"
NAMES = ("malignant", "benign")
"""scikit-learn's breast-cancer target: 0 malignant, 1 benign. Sorted, benign is class 0."""


def write_tables(folder: Path) -> tuple[dict[str, str], dict[str, float], dict[str, str]]:
    """The breast table with its target as names (guest: diagnosis, a score, a 3-class
    `stage` guess; host: one column); returns diagnosis, score and stage by id."""
    data = load_breast_cancer()
    rng = np.random.default_rng(4)
    ids = [f"b{i:03d}" for i in range(len(data.target))]
    diagnosis = {k: NAMES[t] for k, t in zip(ids, data.target.tolist(), strict=True)}
    score = dict(zip(ids, data.data[:, 27].tolist(), strict=True))  # worst concave points
    stages = ("early", "late", "mid")
    stage = {k: stages[int(i)] for k, i in zip(ids, rng.integers(0, 3, len(ids)), strict=True)}
    with (folder / "g.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "y", "score", "guess"])
        for k in ids:
            # the guess is right two times in three (its class number, as a model predicts)
            right = rng.random() < 2 / 3
            guess = stages.index(stage[k]) if right else int(rng.integers(0, 3))
            out.writerow([k, diagnosis[k], score[k], guess])
    with (folder / "h.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "x"])
        out.writerows([k, 1.0] for k in ids)
    with (folder / "s.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "y", "guess"])
        with (folder / "g.csv").open(newline="") as g:
            rows = list(csv.reader(g))[1:]
        out.writerows([r[0], stage[r[0]], r[3]] for r in rows)
    return diagnosis, score, stage


def pipeline(evaluations: list[dict[str, Any]], guest_table: str = "g") -> Pipeline:
    return Pipeline.from_dict(
        {
            "name": "text-labels",
            "parties": {"guest": GUEST, "host": [HOST]},
            "components": [
                {
                    "name": "reader_0",
                    "type": "reader",
                    "params": {"guest": {"table": guest_table}, "host": {"table": "h"}},
                },
                {"name": "psi_0", "type": "psi", "inputs": {"data": "reader_0.data"}},
                *(
                    {
                        "name": f"eval_{i}",
                        "type": "evaluation",
                        "inputs": {"data": "psi_0.data"},
                        "params": {"guest": params},
                    }
                    for i, params in enumerate(evaluations)
                ),
            ],
        }
    )


def run(tmp_path: Path, evaluations: list[dict[str, Any]], guest_table: str) -> StandaloneResult:
    data = tmp_path / "data"
    return run_pipeline(
        pipeline(evaluations, guest_table), {GUEST: data, HOST: data}, tmp_path, recv_timeout=30
    )


@pytest.fixture
def tables(tmp_path: Path) -> tuple[dict[str, str], dict[str, float], dict[str, str]]:
    (tmp_path / "data").mkdir()
    return write_tables(tmp_path / "data")


def test_the_positive_class_is_taken_by_name_and_the_names_follow_the_labels(
    tmp_path: Path, tables: tuple[dict[str, str], dict[str, float], dict[str, str]]
) -> None:
    # Prepare
    diagnosis, score, _ = tables

    # Execute: malignant is class 1 here (benign sorts first), whatever the original target
    result = run(tmp_path, [{"score_column": "score", "pos_class": "malignant"}], "g")
    exported = CliRunner().invoke(
        standalone_app,
        ["data", result.job_id, "psi_0", "--party", GUEST, "--workdir", str(tmp_path)],
    )

    # Assert: the psi output still names the classes, and the AUC is scikit-learn's with
    # malignant positive (worst concave points rank malignant tumours high)
    joined = result.output(GUEST, "guest", "psi_0", "data")
    assert joined.label_classes == ["benign", "malignant"]
    assert joined.labels is not None
    assert [joined.class_name(v) for v in joined.labels] == [diagnosis[k] for k in joined.ids]
    ids = joined.ids.tolist()
    expected = roc_auc_score([diagnosis[k] == "malignant" for k in ids], [score[k] for k in ids])
    assert result.metric("eval_0", "auc") == pytest.approx(expected, abs=1e-12)
    assert expected > 0.9
    # exported as the data was written: the diagnosis by name
    assert exported.exit_code == 0, exported.output
    rows = list(csv.reader(exported.output.splitlines()))
    assert rows[0] == ["id", "score", "guess", "y"]
    assert {r[0]: r[-1] for r in rows[1:]} == diagnosis


def test_multi_class_metrics_name_the_classes(
    tmp_path: Path, tables: tuple[dict[str, str], dict[str, float], dict[str, str]]
) -> None:
    # Prepare
    _, _, stage = tables

    # Execute: the guess column holds class numbers (early 0, late 1, mid 2)
    result = run(tmp_path, [{"score_column": "guess", "eval_type": "multi"}], "s")

    # Assert
    joined = result.output(GUEST, "guest", "psi_0", "data")
    assert joined.label_classes == ["early", "late", "mid"]
    guess = joined.column("guess")
    truth = [stage[k] for k in joined.ids.tolist()]
    predicted = [joined.class_name(g) for g in guess]
    assert result.metric("eval_0", "accuracy") == pytest.approx(accuracy_score(truth, predicted))
    for name in ("early", "late", "mid"):
        hits = sum(t == p == name for t, p in zip(truth, predicted, strict=True))
        assert result.metric("eval_0", f"recall.{name}") == pytest.approx(hits / truth.count(name))
        assert result.metric("eval_0", f"confusion.{name}.{name}") == hits


def test_a_positive_class_the_labels_do_not_name_is_refused_naming_them(
    tmp_path: Path, tables: tuple[dict[str, str], dict[str, float], dict[str, str]]
) -> None:
    with pytest.raises(
        StandaloneError,
        match=r"pos_class 'Malignant' is not a class of label column 'y' "
        r"\(its classes: benign, malignant\)",
    ):
        run(tmp_path, [{"score_column": "score", "pos_class": "Malignant"}], "g")


@pytest.mark.parametrize(
    ("component", "takes"),
    [("hetero_linr", "numeric labels"), ("hetero_poisson", "counts (integers >= 0)")],
)
def test_a_model_of_numbers_refuses_a_text_label_column_before_it_starts(
    tmp_path: Path, component: str, takes: str
) -> None:
    # Prepare: a text label column as the CSV import reads it (classes of the sorted names)
    ids = np.array([f"r{i}" for i in range(80)], dtype=np.str_)
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 2, 80).astype(np.float64)
    guest = Table(
        ids, rng.normal(size=(80, 2)), ["a", "b"], codes, "y", label_classes=["no", "yes"]
    )
    host = Table(ids, rng.normal(size=(80, 2)), ["c", "d"], None)

    # Execute
    out = run_component(
        tmp_path, component, {GUEST: {"data": guest}, HOST: {"data": host}},
        {"key_bits": 512, "insecure_short_keys": True, "batch_size": 80, "epochs": 1},
    )  # fmt: skip

    # Assert: refused at the guest, before any key was made or message sent
    assert f"{component} takes {takes}" in str(out.errors[GUEST])
    assert "but label column 'y' holds class names (no, yes)" in str(out.errors[GUEST])
    assert not [c for c in out.crossings if c.source == GUEST]
