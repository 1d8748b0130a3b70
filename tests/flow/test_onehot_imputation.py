"""onehot and imputation: each party on its own columns, nothing exchanged; the fitted
categories / fill values are a model applied unchanged to new rows; clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.artifacts import ModelArtifact
from fedflow.pipeline import Pipeline, PipelineError
from fedflow.tables import Table
from sklearn.datasets import load_diabetes

from tests.flow.modelling_runs import GUEST, Outcome, run_component
from tests.flow.test_hetero_binning import HOST, breast


def one(tmp_path: Path, kind: str, inputs: dict[str, dict[str, Any]], **params: Any) -> Outcome:
    return run_component(tmp_path, kind, inputs, params)


def data(out: Outcome, party: str = GUEST) -> Table:
    found = out.outputs[party]["data"]
    assert isinstance(found, Table)
    return found


def diabetes() -> Table:
    x, y = load_diabetes(return_X_y=True, scaled=False)
    ids = np.array([f"d{i}" for i in range(len(y))], dtype=np.str_)
    x = x.astype(np.float64)
    x[::17, 1] = np.nan  # some rows without a sex value
    return Table(ids, x[:, :4].copy(), ["age", "sex", "bmi", "bp"], y.astype(np.float64), "y")


def test_onehot_encodes_a_categorical_column_in_place_and_applies_to_new_rows(
    tmp_path: Path,
) -> None:
    # Prepare: diabetes' sex column (1 or 2, some missing)
    table = diabetes()

    # Execute
    out = one(tmp_path / "fit", "onehot", {GUEST: {"data": table}}, columns=["sex"])

    # Assert
    assert not out.errors, out.errors
    got = data(out)
    assert got.feature_names == ["age", "sex_1", "sex_2", "bmi", "bp"]
    sex = table.column("sex")
    np.testing.assert_array_equal(got.column("sex_1"), (sex == 1).astype(float))
    np.testing.assert_array_equal(got.column("sex_2"), (sex == 2).astype(float))
    assert np.all(got.features[np.isnan(sex)][:, 1:3] == 0.0)
    np.testing.assert_array_equal(got.column("bmi"), table.column("bmi"))

    # Execute: new rows with a category never seen, through the model
    new = table.take(np.arange(5, dtype=np.int64))
    new.features[0, 1] = 3.0
    model = out.outputs[GUEST]["model"]
    applied = one(tmp_path / "apply", "onehot", {GUEST: {"data": new, "model": model}})
    refused = one(
        tmp_path / "refuse",
        "onehot",
        {GUEST: {"data": new, "model": model}},
        handle_unknown="error",
    )

    # Assert
    assert data(applied).feature_names == got.feature_names
    assert data(applied).features[0, 1:3].tolist() == [0.0, 0.0]
    assert applied.metrics[GUEST]["unknown_values"] == 1.0
    assert "column 'sex' has the value 3" in str(refused.errors[GUEST])


def test_onehot_refuses_a_continuous_column_naming_it(tmp_path: Path) -> None:
    out = one(tmp_path, "onehot", {GUEST: {"data": diabetes()}})

    assert "column 'age' has 58 distinct values" in str(out.errors[GUEST])


def test_imputation_fills_with_the_training_rows_mean_median_or_constant(tmp_path: Path) -> None:
    # Prepare: breast with missing values at both parties, -999 meaning missing at the host
    guest, host, _ = breast(seed=9)
    hx = host.features.copy()
    hx[:7, 0] = -999.0
    host = Table(host.ids, hx, host.feature_names, None)

    # Execute
    out = run_component(
        tmp_path / "fit",
        "imputation",
        {GUEST: {"data": guest}, HOST: {"data": host}},
        party_params={
            GUEST: {"method": "median"},
            HOST: {"method": "mean", "missing_values": [-999.0]},
        },
    )

    # Assert
    assert not out.errors, out.errors
    medians = np.nanmedian(guest.features, axis=0)
    expected = np.where(np.isnan(guest.features), medians, guest.features)
    np.testing.assert_allclose(data(out).features, expected, rtol=1e-14)
    marked = np.where(hx == -999.0, np.nan, hx)
    means = np.nanmean(marked, axis=0)
    np.testing.assert_allclose(
        data(out, HOST).features, np.where(np.isnan(marked), means, marked), rtol=1e-14
    )
    assert out.metrics[GUEST]["imputed_values"] == float(np.isnan(guest.features).sum())
    assert not [c for c in out.crossings if c.message_type == "federation.data"]

    # Execute: new rows filled with the TRAINING rows' values (not their own)
    new = guest.take(np.arange(20, dtype=np.int64))
    model = out.outputs[GUEST]["model"]
    assert isinstance(model, ModelArtifact)
    applied = one(tmp_path / "apply", "imputation", {GUEST: {"data": new, "model": model}})
    filled = np.where(np.isnan(new.features), medians, new.features)
    np.testing.assert_allclose(data(applied).features, filled, rtol=1e-14)
    assert np.array_equal(data(applied).features, data(out).features[:20])

    # Execute: a constant
    constant = one(tmp_path / "c", "imputation", {GUEST: {"data": guest}}, method="constant")
    assert np.array_equal(data(constant).features, np.nan_to_num(guest.features, nan=0.0))


def test_imputation_refuses_the_mean_of_an_all_missing_column(tmp_path: Path) -> None:
    guest, _, _ = breast()
    x = guest.features.copy()
    x[:, 4] = np.nan
    table = Table(guest.ids, x, guest.feature_names, guest.labels, "y")

    out = one(tmp_path, "imputation", {GUEST: {"data": table}})

    assert "column 'g4' has no value to take the mean of" in str(out.errors[GUEST])


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("imputation", {"method": "mode"}, "method"),
        ("imputation", {"columns": ["a", "a"]}, "twice"),
        ("imputation", {"constant": float("nan")}, "constant"),
        ("onehot", {"max_categories": 1}, "max_categories"),
        ("onehot", {"handle_unknown": "skip"}, "handle_unknown"),
    ],
)
def test_bad_params_are_refused_when_the_pipeline_is_read(
    kind: str, params: dict[str, Any], message: str
) -> None:
    spec = {
        "name": "prep",
        "parties": {"guest": GUEST, "host": [HOST]},
        "components": [
            {"name": "reader_0", "type": "reader", "params": {"common": {"table": "t"}}},
            {
                "name": "prep_0",
                "type": kind,
                "inputs": {"data": "reader_0.data"},
                "params": {"common": params},
            },
        ],
    }
    with pytest.raises(PipelineError, match=message):
        Pipeline.from_dict(spec)
