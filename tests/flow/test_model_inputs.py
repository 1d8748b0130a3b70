"""Inputs a new user gives a model before any preprocessing, refused at the party that holds
them, before that party sends anything, with what to change (fedflow.kit.inputs): a table
with too few rows, a column with no value, a feature far too large to train on unscaled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.components.hetero_lr.session import INTERCEPT
from fedflow.components.hetero_poisson.math import check_exposure
from fedflow.tables import Table

from tests.flow.modelling_runs import GUEST, Outcome, run_component
from tests.flow.test_linr import LINR_PARAMS, diabetes

HOST = "10000"
LINEAR = ("hetero_linr", "hetero_poisson", "hetero_lr")
BOOST_PARAMS: dict[str, Any] = {
    "num_trees": 1,
    "max_depth": 2,
    "key_bits": 512,
    "insecure_short_keys": True,
}


def tables(model: str, rows: int | None = None) -> tuple[Table, Table]:
    """The diabetes table split vertically (guest: 4 columns and the label, host: 6), the
    label as `model` takes it: the target, a count, or 0/1 (the trees and hetero_lr)."""
    guest, host = diabetes()
    y = np.asarray(guest.labels)
    labels = {
        "hetero_linr": y,
        "hetero_poisson": np.floor(y / 50.0),
        "hetero_secureboost": (y > 140.0).astype(np.float64),
        "hetero_lr": (y > 140.0).astype(np.float64),
    }[model]
    keep = slice(None) if rows is None else slice(0, rows)
    return (
        Table(guest.ids[keep], guest.features[keep], guest.feature_names, labels[keep], "y"),
        Table(host.ids[keep], host.features[keep], host.feature_names, None),
    )


def with_rows(table: Table, rows: slice) -> Table:
    labels = None if table.labels is None else table.labels[rows]
    return Table(table.ids[rows], table.features[rows], table.feature_names, labels, "y")


def with_column(table: Table, name: str, values: Any) -> Table:
    features = np.array(table.features, dtype=np.float64)
    features[:, table.feature_names.index(name)] = values
    return Table(table.ids, features, table.feature_names, table.labels, table.label_name)


def run(
    tmp_path: Path,
    model: str,
    guest: Table,
    host: Table,
    validate: tuple[Table, Table] | None = None,
) -> Outcome:
    """`model` at the guest and one host; `validate`: their validate_data inputs."""
    params = BOOST_PARAMS if model == "hetero_secureboost" else {**LINR_PARAMS, "epochs": 1}
    inputs: dict[str, dict[str, Any]] = {GUEST: {"data": guest}, HOST: {"data": host}}
    if validate is not None:
        inputs[GUEST]["validate_data"], inputs[HOST]["validate_data"] = validate
    return run_component(tmp_path, model, inputs, params)


def sent_by(outcome: Outcome, party: str) -> list[str]:
    return [c.tag for c in outcome.crossings if c.source == party]


@pytest.mark.parametrize("model", LINEAR)
def test_a_two_row_table_is_refused_at_each_party_with_its_rows_and_the_minimum(
    tmp_path: Path, model: str
) -> None:
    # Prepare: two rows at both parties (the guest 4 features + intercept, the host 6)
    guest, host = tables(model, rows=2)

    # Execute
    outcome = run(tmp_path, model, guest, host)

    # Assert: each party says its table has 2 rows and needs 64 (not a batch_size error),
    # and nothing crossed
    for party, role, weights in ((GUEST, "guest", 5), (HOST, "host", 6)):
        message = str(outcome.errors[party])
        assert message.startswith(
            f"{model}: data at party {party} ({role}) has 2 rows, too few to train on: it "
            f"needs at least 64 (every batch of {model} must have at least 4 x (this party's "
            f"{weights} weights + 3) rows and never fewer than 64"
        )
        assert "batch_size" not in message
    assert outcome.crossings == []


@pytest.mark.parametrize("model", LINEAR)
def test_an_unscaled_feature_of_1e300_is_refused_by_its_party_before_it_sends_anything(
    tmp_path: Path, model: str
) -> None:
    # Prepare: the host's column s3 holds one value of 1e300 (the rest unit scale)
    guest, host = tables(model)
    s3 = np.array(host.features[:, 2])
    s3[7] = 1e300
    host = with_column(host, "s3", s3)

    # Execute
    outcome = run(tmp_path, model, guest, host)

    # Assert: the host names the column, its range, the bound and feature_scale; it sent
    # nothing (the guest's public key is all that crossed)
    assert str(outcome.errors[HOST]) == (
        f"{model}: data at party {HOST} (host): 's3' ranges from {s3.min():.4g} to 1e+300, "
        f"beyond the +-1e+12 that {model} takes unscaled: scale the features with "
        f"feature_scale (a feature_scale component before {model}, and the same model "
        "applied to the rows you validate or predict)"
    )
    assert sent_by(outcome, HOST) == []


def test_a_column_with_no_value_is_refused_naming_it(tmp_path: Path) -> None:
    # Prepare: the guest's column bp is empty in every row (a missing value is NaN)
    guest, host = tables("hetero_linr")
    guest = with_column(guest, "bp", np.nan)

    # Execute
    outcome = run(tmp_path, "hetero_linr", guest, host)

    # Assert
    assert str(outcome.errors[GUEST]) == (
        f"hetero_linr: column 'bp' of data at party {GUEST} (guest) has no value in any of its "
        "442 rows (every value missing), and would train as zeros: fill it with an imputation "
        "component (method: constant) or drop it with hetero_feature_selection "
        "(max_missing_rate, or drop_columns)"
    )
    assert sent_by(outcome, GUEST) == []


def test_a_validate_data_column_with_no_value_is_refused_naming_that_input(
    tmp_path: Path,
) -> None:
    # Prepare: the first 342 rows train, the last 100 validate; the host's validation rows
    # have no value in s1 (its training rows do)
    guest, host = tables("hetero_linr")

    train, validate = slice(0, 342), slice(342, None)
    host_validate = with_column(with_rows(host, validate), "s1", np.nan)

    # Execute
    outcome = run(
        tmp_path,
        "hetero_linr",
        with_rows(guest, train),
        with_rows(host, train),
        validate=(with_rows(guest, validate), host_validate),
    )

    # Assert
    assert str(outcome.errors[HOST]).startswith(
        f"hetero_linr: column 's1' of validate_data at party {HOST} (host) has no value in any "
        "of its 100 rows"
    )
    assert sent_by(outcome, HOST) == []


def test_secureboost_refuses_an_empty_column_and_takes_any_scale(tmp_path: Path) -> None:
    # Prepare: a host column without a value; then, instead, one of 1e300 (trees compare a
    # feature only with its own quantile cuts, so its scale does not matter)
    guest, host = tables("hetero_secureboost")
    s3 = np.array(host.features[:, 2])
    empty = with_column(host, "s3", np.nan)
    huge = with_column(host, "s3", s3 * 1e298)

    # Execute
    refused = run(tmp_path / "empty", "hetero_secureboost", guest, empty)
    trained = run(tmp_path / "huge", "hetero_secureboost", guest, huge)

    # Assert
    assert str(refused.errors[HOST]).startswith(
        f"hetero_secureboost: column 's3' of data at party {HOST} (host) has no value"
    )
    assert sent_by(refused, HOST) == []
    assert trained.errors == {}
    assert set(trained.outputs[HOST]) == {"model"}


def test_secureboost_refuses_a_table_too_small_for_one_split(tmp_path: Path) -> None:
    # Prepare: one row (a split needs min_samples_leaf, 1, on each side)
    guest, host = tables("hetero_secureboost", rows=1)

    # Execute
    outcome = run(tmp_path, "hetero_secureboost", guest, host)

    # Assert
    assert str(outcome.errors[GUEST]).startswith(
        f"hetero_secureboost: data at party {GUEST} (guest) has 1 row, too few to train on: "
        "it needs at least 2 (a split puts at least min_samples_leaf (1) rows on each side"
    )
    assert outcome.crossings == []


def test_a_standardised_exposure_is_refused_with_the_likely_cause() -> None:
    # Prepare: an exposure column through feature_scale (mean 0: about half the rows below
    # 0), and one with a single 0 (a data error, not a scaling)
    exposure = np.random.default_rng(2).uniform(0.5, 2.0, 200)
    standardised = (exposure - exposure.mean()) / exposure.std()
    one_zero = np.array(exposure)
    one_zero[3] = 0.0

    # Execute
    with pytest.raises(ValueError) as scaled:
        check_exposure(standardised, "exposure", "hetero_poisson")
    with pytest.raises(ValueError) as zero:
        check_exposure(one_zero, "exposure", "hetero_poisson")

    # Assert
    assert str(scaled.value).endswith(
        "; many values at or below 0, as a standardised column has: leave the exposure out of "
        "feature_scale's columns (and imputation's), it is not a feature"
    )
    assert str(zero.value) == (
        "hetero_poisson: exposure column 'exposure' must be > 0 on every row (1 rows are not: 0)"
    )


@pytest.mark.parametrize("model", [*LINEAR, "hetero_secureboost"])
def test_an_empty_validate_data_is_refused(tmp_path: Path, model: str) -> None:
    # Prepare: validate_data with no rows (data_split with validate_fraction 0); its loss
    # was 0 at every epoch
    guest, host = tables(model)
    empty = (with_rows(guest, slice(0, 0)), with_rows(host, slice(0, 0)))

    # Execute
    outcome = run(tmp_path, model, guest, host, validate=empty)

    # Assert
    assert str(outcome.errors[GUEST]) == (
        f"{model}: validate_data at party {GUEST} (guest) has no rows (is data_split's "
        "validate_fraction 0?): a validation loss over no rows is 0 every epoch; give it "
        "rows, or leave the input out"
    )
    assert outcome.crossings == []


@pytest.mark.parametrize("model", [*LINEAR, "hetero_secureboost"])
def test_a_host_without_a_feature_column_is_refused_there(tmp_path: Path, model: str) -> None:
    # Prepare: the host's table has ids and no column (the guest was told "10000 did not
    # say how many features it has")
    guest, host = tables(model)
    bare = Table(host.ids, np.zeros((host.rows, 0)), [], None)

    # Execute
    outcome = run(tmp_path, model, guest, bare)

    # Assert
    assert str(outcome.errors[HOST]) == (
        f"{model}: data at party {HOST} (host) has no feature column: a host takes part with "
        f"its own features (did the table, or a hetero_feature_selection before {model}, "
        "leave none?)"
    )
    assert sent_by(outcome, HOST) == []


def linear_model(names: list[str], weights: np.ndarray) -> Table:
    """A party's part of a hetero_linr / hetero_poisson model: a weight per column name."""
    return Table(np.array(names, dtype=np.str_), weights.reshape(-1, 1), ["weight"], None)


@pytest.mark.parametrize("model", ["hetero_linr_predict", "hetero_poisson_predict"])
def test_predicting_on_a_table_without_a_trained_column_is_refused(
    tmp_path: Path, model: str
) -> None:
    # Prepare: weights for the guest's 4 columns and intercept and the host's 6; the host's
    # table to predict lacks s6 (its weight counted as 0 without a word)
    guest, host = tables("hetero_linr")
    rng = np.random.default_rng(3)
    w_g, w_h = rng.normal(size=5) / 10, rng.normal(size=6) / 10
    models = (
        linear_model([*guest.feature_names, INTERCEPT], w_g),
        linear_model(list(host.feature_names), w_h),
    )
    short = Table(host.ids, host.features[:, :5], host.feature_names[:5], None)

    def predict(where: str, host_table: Table) -> Outcome:
        return run_component(
            tmp_path / where,
            model,
            {
                GUEST: {"model": models[0], "data": guest},
                HOST: {"model": models[1], "data": host_table},
            },
        )

    # Execute
    refused = predict("short", short)
    whole = predict("whole", host)

    # Assert: refused at the host, which sent nothing; with every column the prediction is
    # the model's (u = X w, and exp(u) for the Poisson model)
    assert str(refused.errors[HOST]) == (
        f"{model}: data at party {HOST} (host) lacks column 's6' of the model it applies "
        "(trained on s1, s2, s3, s4, s5, s6): predict on rows with the training columns (the "
        "same feature_scale, onehot or hetero_feature_selection models applied)"
    )
    assert sent_by(refused, HOST) == []
    z = guest.features @ w_g[:4] + w_g[4] + host.features @ w_h
    expected = z if model == "hetero_linr_predict" else np.exp(z)
    predicted = whole.outputs[GUEST]["data"].features[:, 0]
    assert whole.errors == {}
    np.testing.assert_allclose(predicted, expected, rtol=1e-12)


def test_predicting_without_the_exposure_param_names_it(tmp_path: Path) -> None:
    # Prepare: a model trained with an exposure (not a weighted column), a table to predict
    # that holds it, and hetero_poisson_predict without its exposure param
    guest, host = tables("hetero_poisson")
    exposure = np.random.default_rng(4).uniform(0.5, 2.0, guest.rows)
    with_exposure = Table(
        guest.ids,
        np.column_stack([guest.features, exposure]),
        [*guest.feature_names, "years"],
        guest.labels,
        "y",
    )
    models = (
        linear_model([*guest.feature_names, INTERCEPT], np.zeros(5)),
        linear_model(list(host.feature_names), np.zeros(6)),
    )

    # Execute
    outcome = run_component(
        tmp_path,
        "hetero_poisson_predict",
        {
            GUEST: {"model": models[0], "data": with_exposure},
            HOST: {"model": models[1], "data": host},
        },
    )

    # Assert
    assert str(outcome.errors[GUEST]) == (
        "hetero_poisson_predict: the model has no weight for 'years': if it is the exposure, "
        "set exposure: years for hetero_poisson_predict as for hetero_poisson; else predict on "
        "rows with the training columns"
    )


def test_a_mostly_missing_feature_is_reported_by_its_party(tmp_path: Path) -> None:
    # Prepare: 60% of the host's s2 missing (hetero_linr counts them as 0), the rest whole
    guest, host = tables("hetero_linr")
    s2 = np.array(host.features[:, 1])
    s2[np.random.default_rng(5).random(host.rows) < 0.6] = np.nan
    host = with_column(host, "s2", s2)

    # Execute
    outcome = run(tmp_path, "hetero_linr", guest, host)

    # Assert: trained, and each party's metric counts its own such columns
    assert outcome.errors == {}
    assert outcome.metrics[HOST]["mostly_missing_features"] == 1.0
    assert outcome.metrics[GUEST]["mostly_missing_features"] == 0.0
