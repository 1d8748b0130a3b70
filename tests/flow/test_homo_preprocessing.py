"""homo_feature_scale in standalone mode (every party in this process, every message through
the signed LocalRelay and each party's protocol guard): the global mean and std from secure
sums equal numpy's over the union of the clients' rows, a client that drops out of a step is
left out of exactly that step, and a predict path applies the model without fitting."""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedbus.sql_inbox import make_engine
from fedcrypto.secagg import AggregationResult, FixedPoint
from fedflow.artifacts import ArtifactStore, ModelArtifact
from fedflow.bus_federation import BusFederation
from fedflow.components.homo_feature_binning import math as hbmath
from fedflow.components.homo_feature_scale import secure
from fedflow.pipeline import Pipeline
from fedflow.standalone import StandaloneError, StandaloneResult, run_pipeline
from fedflow.tables import Table
from sklearn.datasets import load_breast_cancer

GUEST, HOSTS, ARBITER = "9999", ["10000", "10001"], "8888"
PARTIES = [GUEST, *HOSTS]


def write_csv(path: Path, table: Table) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "y", *table.feature_names])
        assert table.labels is not None
        for i, key in enumerate(table.ids.tolist()):
            values = ["" if np.isnan(v) else repr(float(v)) for v in table.features[i]]
            writer.writerow([key, f"{table.labels[i]:g}", *values])


def raw_breast_clients(
    tmp_path: Path, cuts: tuple[int, int] = (150, 380)
) -> tuple[list[Table], Table]:
    """scikit-learn's breast cancer rows as shipped (unscaled: areas in the thousands, some
    columns around 0.01), split by rows in three unequal clients, a few values missing;
    each client's table (and the held-out rows `test`) in its party's folder."""
    data = load_breast_cancer()
    x = np.asarray(data.data, dtype=np.float64)
    x[::37, 3] = np.nan  # missing values are left out of the statistics
    ids = np.array([f"r{i}" for i in range(len(x))], dtype=np.str_)
    names = [f"x{i}" for i in range(x.shape[1])]
    y = data.target.astype(np.float64)
    bounds = [0, *cuts, len(x) - 60]
    tables = []
    test = Table(ids[-60:], x[-60:], names, y[-60:], "y")
    for party, lo, hi in zip(PARTIES, bounds[:-1], bounds[1:], strict=True):
        table = Table(ids[lo:hi], x[lo:hi], names, y[lo:hi], "y")
        folder = tmp_path / party
        folder.mkdir(parents=True, exist_ok=True)
        write_csv(folder / "part.csv", table)
        write_csv(folder / "test.csv", test)
        tables.append(table)
    (tmp_path / ARBITER).mkdir(exist_ok=True)
    return tables, test


def scale_pipeline(params: dict[str, Any], arbiter: str | None = None) -> dict[str, Any]:
    return {
        "name": "homo-scale-test",
        "parties": {"guest": GUEST, "host": HOSTS, "arbiter": arbiter},
        "components": [
            {"name": "reader_0", "type": "reader", "params": {"common": {"table": "part"}}},
            {
                "name": "scale_0",
                "type": "homo_feature_scale",
                "inputs": {"data": "reader_0.data"},
                "params": {"common": params},
            },
            {"name": "reader_1", "type": "reader", "params": {"common": {"table": "test"}}},
            {
                # The predict path: new rows scaled by the fitted model, nothing exchanged
                "name": "scale_1",
                "type": "homo_feature_scale",
                "inputs": {"data": "reader_1.data", "model": "scale_0.model"},
            },
        ],
    }


def run(spec: dict[str, Any], tmp_path: Path, parties: list[str]) -> StandaloneResult:
    folders = {p: tmp_path / p for p in parties}
    return run_pipeline(Pipeline.from_dict(spec), folders, tmp_path / "run")


def model_of(
    result: StandaloneResult, party: str, role: str, component: str = "scale_0"
) -> ModelArtifact:
    engine = make_engine(result._engines[party])  # the party's database, as output() reads it
    try:
        found = ArtifactStore(engine).get_artifact(result.job_id, party, role, f"{component}.model")
    finally:
        engine.dispose()
    assert isinstance(found, ModelArtifact)
    return found


def steps(result: StandaloneResult, name: str, party: str) -> dict[int, float]:
    return {
        m.step: m.value
        for m in result.metrics
        if m.component == "scale_0" and m.name == name and m.party_id == party and m.step >= 0
    }


def test_three_clients_and_an_arbiter_get_numpy_mean_and_std_of_the_pooled_rows(
    tmp_path: Path,
) -> None:
    # Prepare: three clients of 150, 230 and 129 unscaled rows; the pooled reference
    tables, test_rows = raw_breast_clients(tmp_path)
    pooled = np.vstack([t.features for t in tables])
    mean, std = np.nanmean(pooled, axis=0), np.nanstd(pooled, axis=0)

    # Execute
    result = run(scale_pipeline({}, ARBITER), tmp_path, [*PARTIES, ARBITER])

    # Assert: every client holds the same feature_scale model, numpy's over the union to
    # float64 rounding; its rows come out scaled by it, and the test rows by the same model
    roles = ["guest", "host", "host"]
    for party, role, table in zip(PARTIES, roles, tables, strict=True):
        model = model_of(result, party, role)
        assert model.document["kind"] == "feature_scale"
        assert model.document["columns"] == table.feature_names
        np.testing.assert_allclose(model.arrays["center"], mean, rtol=1e-12, atol=0)
        np.testing.assert_allclose(model.arrays["scale"], std, rtol=1e-10, atol=0)
        scaled = result.output(party, role, "scale_0", "data")
        np.testing.assert_allclose(scaled.features, (table.features - mean) / std, atol=1e-9)
        assert np.isnan(scaled.features[np.isnan(table.features)]).all()
        test = result.output(party, role, "scale_1", "data")
        np.testing.assert_allclose(test.features, (test_rows.features - mean) / std, atol=1e-9)
    assert steps(result, "clients", ARBITER) == {0: 3.0, 1: 3.0}


def test_a_client_that_drops_out_of_step_1_is_left_out_of_the_statistics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the guest aggregates; client 3 (10001) sends its step-1 masked vector into the
    # void (it went away mid-step): step 1 sums the two others, recovering its masks
    tables, _ = raw_breast_clients(tmp_path)
    two = np.vstack([t.features for t in tables[:2]])
    send = BusFederation.send

    def lose_masked_vector(self: BusFederation, payload: Any, **kw: Any) -> None:
        if self.party_id == "10001" and kw["tag"] == "sa_masked" and kw["iteration"] == 1:
            return
        send(self, payload, **kw)

    monkeypatch.setattr(BusFederation, "send", lose_masked_vector)

    # Execute
    result = run(scale_pipeline({"round_timeout_s": 2.0}), tmp_path, PARTIES)

    # Assert: the mean and std are exactly those of the two clients' rows (step 1 centres at
    # step 0's mean of all three, and corrects for it); every client still gets them
    assert steps(result, "clients", GUEST) == {0: 3.0, 1: 2.0}
    assert steps(result, "dropped", GUEST) == {0: 0.0, 1: 1.0}
    for party, role in zip(PARTIES, ["guest", "host", "host"], strict=True):
        model = model_of(result, party, role)
        np.testing.assert_allclose(model.arrays["center"], np.nanmean(two, axis=0), rtol=1e-12)
        np.testing.assert_allclose(model.arrays["scale"], np.nanstd(two, axis=0), rtol=1e-10)


def test_min_max_is_refused_saying_why() -> None:
    spec = scale_pipeline({"method": "min_max"})
    with pytest.raises(ValueError, match="min_max needs the global minimum and maximum"):
        Pipeline.from_dict(spec)


def test_a_value_beyond_value_bound_is_refused_naming_the_column(tmp_path: Path) -> None:
    raw_breast_clients(tmp_path)
    # Column x3 (area) reaches 2501 in the rows: a bound of 1000 does not hold it
    with pytest.raises(StandaloneError, match=r"column 'x3'.*beyond value_bound 1000"):
        run(scale_pipeline({"value_bound": 1000.0, "round_timeout_s": 2.0}), tmp_path, PARTIES)


def binning_pipeline(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "homo-binning-test",
        "parties": {"guest": GUEST, "host": HOSTS, "arbiter": ARBITER},
        "components": [
            {"name": "reader_0", "type": "reader", "params": {"common": {"table": "part"}}},
            {
                "name": "bin_0",
                "type": "homo_feature_binning",
                "inputs": {"data": "reader_0.data"},
                "params": {"common": params},
            },
            {"name": "reader_1", "type": "reader", "params": {"common": {"table": "test"}}},
            {
                # The predict path through hetero_feature_binning: the model is its kind
                "name": "bin_1",
                "type": "hetero_feature_binning",
                "inputs": {"data": "reader_1.data", "model": "bin_0.model"},
            },
        ],
    }


def test_quantile_split_points_are_within_one_grid_cell_above_numpys_over_the_pooled_rows(
    tmp_path: Path,
) -> None:
    # Prepare: the three unscaled clients; numpy's quantiles (inverted_cdf: the smallest value
    # with at least i / 10 of the values at or below it) over the union of their rows
    tables, test_rows = raw_breast_clients(tmp_path)
    pooled = np.vstack([t.features for t in tables])
    params = {"method": "quantile", "bin_num": 10, "transform": "bin", "grid_cells": 2048}

    # Execute
    result = run(binning_pipeline(params), tmp_path, [*PARTIES, ARBITER])

    # Assert: one model at every client; each split point lies above an exact quantile by at
    # most the cell width 2 * 8 * std / 2048, and every exact quantile below max - width has
    # such a split point; the rows come out as the bins' indices, the test rows too
    roles = ["guest", "host", "host"]
    models = [model_of(result, p, r, "bin_0") for p, r in zip(PARTIES, roles, strict=True)]
    assert all(m.document["kind"] == "hetero_feature_binning" for m in models)
    for m in models[1:]:
        np.testing.assert_array_equal(m.arrays["points"], models[0].arrays["points"])
    points, sizes = models[0].arrays["points"], models[0].arrays["point_counts"]
    for j in range(pooled.shape[1]):
        column = pooled[:, j][~np.isnan(pooled[:, j])]
        width = 2 * 8 * np.std(column) / 2048
        exact = np.quantile(column, np.arange(1, 10) / 10, method="inverted_cdf")
        found = points[j, : sizes[j]]
        gaps = found[:, None] - exact[None, :]
        near = (gaps > 0) & (gaps <= width * (1 + 1e-9))
        assert near.any(axis=1).all(), (j, found, exact)
        inner = exact < column.max() - width
        assert near.any(axis=0)[inner].all(), (j, found, exact)
    assert result.metric("bin_0", "points_in_end_cells", ARBITER) == 0.0
    binned = result.output(GUEST, "guest", "bin_0", "data")
    first = tables[0].features[:, 0]
    assert binned.features[:, 0].tolist() == np.searchsorted(points[0, : sizes[0]], first).tolist()
    applied = result.output(HOSTS[0], "host", "bin_1", "data")
    on_test = np.searchsorted(points[5, : sizes[5]], test_rows.features[:, 5])
    assert applied.features[:, 5].tolist() == on_test.tolist()


def test_bucket_split_points_divide_the_range_within_one_cell_of_the_true_min_and_max() -> None:
    # Prepare: one column's values, its grid from the exact mean and std, the histogram
    rng = np.random.default_rng(4)
    x = rng.normal(50.0, 7.0, size=(5000, 1))
    lo, width = hbmath.grid(np.array([x.mean()]), np.array([x.std()]), 8.0, 1024)
    counts = hbmath.histogram(x, lo, width, 1024)

    # Execute
    points, ends = hbmath.split_points(counts, float(lo[0]), float(width[0]), "bucket", 4)

    # Assert: the exact equal-width points over [min, max], each within one cell width
    exact = x.min() + (x.max() - x.min()) * np.arange(1, 4) / 4
    assert ends == 0
    np.testing.assert_allclose(points, exact, rtol=0, atol=float(width[0]))


def test_three_limbs_carry_a_sum_of_tiny_and_large_values_exactly() -> None:
    # Prepare: three clients' values across 40 orders of magnitude, quantised as the ring does
    fixed = FixedPoint(64, 1.0, 3)
    rng = np.random.default_rng(9)
    values = [rng.uniform(-1, 1, 50) * 10.0 ** rng.integers(-40, 1, 50) for _ in range(3)]
    quantised = sum(
        (fixed.quantize(secure.limbs(v, fixed.frac_bits)) for v in values),
        start=np.zeros(150, dtype=np.uint64),
    )
    result = AggregationResult(np.zeros(150), quantised, (1, 2, 3), (), 0.0)

    # Execute
    total = secure.joined(result, fixed.frac_bits)

    # Assert: the exact sum (as fractions), rounded once; one limb loses the tiny ones
    exact = [float(sum(Fraction(float(v[i])) for v in values)) for i in range(50)]
    np.testing.assert_allclose(total, exact, rtol=1e-15, atol=0)
    one = sum(fixed.quantize(secure.limbs(v, fixed.frac_bits, 1)) for v in values)
    tiny = np.abs(np.asarray(exact)) < 1e-25
    assert tiny.any()
    assert (fixed.dequantize(np.asarray(one, dtype=np.uint64))[tiny] == 0.0).all()
