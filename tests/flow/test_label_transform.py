"""label_transform: the guest's label values mapped to classes (sorted or as given), kept as
a model for new rows; a host's table passes through; unknown values refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fedflow.components.label_transform import LabelTransformParams
from fedflow.tables import Table
from sklearn.datasets import load_iris

from tests.flow.modelling_runs import GUEST, run_component
from tests.flow.test_hetero_binning import HOST


def iris() -> tuple[Table, Table]:
    x, y = load_iris(return_X_y=True)
    ids = np.array([f"i{i:03d}" for i in range(len(y))], dtype=np.str_)
    labels = (y * 10.0 + 5.0).astype(np.float64)  # 5, 15, 25
    guest = Table(ids, x[:, :2].copy(), ["sl", "sw"], labels, "species")
    return guest, Table(ids, x[:, 2:].copy(), ["pl", "pw"], None)


def labels_of(out: object, party: str = GUEST) -> np.ndarray:
    data = out.outputs[party]["data"]  # type: ignore[attr-defined]
    assert isinstance(data, Table) and data.labels is not None
    return data.labels


def test_sorted_values_become_classes_and_the_model_maps_new_rows(tmp_path: Path) -> None:
    guest, host = iris()

    out = run_component(
        tmp_path / "fit", "label_transform", {GUEST: {"data": guest}, HOST: {"data": host}}
    )

    assert not out.errors, out.errors
    assert guest.labels is not None
    np.testing.assert_array_equal(labels_of(out), (guest.labels - 5.0) / 10.0)
    host_data = out.outputs[HOST]["data"]
    assert isinstance(host_data, Table)
    np.testing.assert_array_equal(host_data.features, host.features)
    assert out.metrics[GUEST]["classes"] == 3.0
    assert out.metrics[GUEST]["rows_in_class.1"] == 50.0

    new = guest.take(np.array([0, 149], dtype=np.int64))
    applied = run_component(
        tmp_path / "apply",
        "label_transform",
        {GUEST: {"data": new, "model": out.outputs[GUEST]["model"]}},
    )
    assert labels_of(applied).tolist() == [0.0, 2.0]


def test_an_explicit_mapping_merges_values_and_refuses_one_it_does_not_name(
    tmp_path: Path,
) -> None:
    guest, _ = iris()

    merged = run_component(
        tmp_path / "a",
        "label_transform",
        {GUEST: {"data": guest}},
        {"mapping": {"5": 0, "15": 1, "25": 1}},
    )
    partial = run_component(
        tmp_path / "b", "label_transform", {GUEST: {"data": guest}}, {"mapping": {"5": 0}}
    )

    assert sorted(set(labels_of(merged).tolist())) == [0.0, 1.0]
    assert "label values 15, 25 in column 'species' have no class" in str(partial.errors[GUEST])


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"1": 0, "yes": 1}, "mixes label values and class names"),
        ({"1": -1}, "integers >= 0"),
        ({"1": 0, "1.0": 1}, "twice"),
        ({"inf": 0}, "finite"),
    ],
)
def test_bad_mappings_are_refused(mapping: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LabelTransformParams.model_validate({"mapping": mapping})


def credit(labels: list[str]) -> Table:
    """A guest table of text labels as the CSV import makes it (classes of the sorted names)."""
    names = sorted(set(labels))
    ids = np.array([f"c{i}" for i in range(len(labels))], dtype=np.str_)
    codes = np.array([names.index(v) for v in labels], dtype=np.float64)
    features = np.arange(len(labels), dtype=np.float64)[:, None]
    return Table(ids, features, ["x"], codes, "risk", label_classes=names)


def test_text_labels_are_mapped_by_name_and_the_model_maps_another_table_by_name(
    tmp_path: Path,
) -> None:
    # Prepare: "bad" is the positive class a credit team wants (sorted, it would be 0)
    train = credit(["good", "bad", "good", "good", "bad"])

    # Execute
    fitted = run_component(
        tmp_path / "fit", "label_transform", {GUEST: {"data": train}},
        {"mapping": {"bad": 1, "good": 0}},
    )  # fmt: skip
    # a table holding only bad rows numbers "bad" 0 (its only class): mapped by name, still 1
    only_bad = credit(["bad", "bad"])
    applied = run_component(
        tmp_path / "apply",
        "label_transform",
        {GUEST: {"data": only_bad, "model": fitted.outputs[GUEST]["model"]}},
    )
    numeric = run_component(
        tmp_path / "numeric", "label_transform", {GUEST: {"data": train}}, {"mapping": {"0": 1}}
    )

    # Assert
    assert not fitted.errors and not applied.errors, (fitted.errors, applied.errors)
    assert labels_of(fitted).tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]
    out = fitted.outputs[GUEST]["data"]
    assert isinstance(out, Table) and out.label_classes == ["good", "bad"]
    assert labels_of(applied).tolist() == [1.0, 1.0]
    assert "label column 'risk' holds class names (bad, good): map them by name" in str(
        numeric.errors[GUEST]
    )
