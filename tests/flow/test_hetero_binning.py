"""hetero_feature_binning: every column's WOE and IV at the guest, the hosts' from the guest's
encrypted labels, equal to a plaintext computation on the joined table; the transforms, the
model applied to new rows, and clear errors."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.artifacts import ModelArtifact
from fedflow.components.hetero_feature_binning import math as bmath
from fedflow.pipeline import Pipeline, PipelineError
from fedflow.standalone import LocalWorld
from fedflow.tables import Table
from sklearn.datasets import load_breast_cancer

from tests.flow.modelling_runs import GUEST, Outcome, run_component
from tests.flow.running import crash_after_sends, crash_and_restart, start_task

HOST, HOST2 = "10000", "10001"
KEYS: dict[str, Any] = {"key_bits": 512, "insecure_short_keys": True}


def breast(seed: int = 3) -> tuple[Table, Table, np.ndarray]:
    """scikit-learn's breast-cancer table split vertically (guest: label + 8 columns, host:
    12), with missing values injected at both, a constant column and one whose extreme bins
    hold one class at the host."""
    data = load_breast_cancer()
    x, y = data.data.astype(np.float64), data.target.astype(np.float64)
    rng = np.random.default_rng(seed)
    x[rng.random(x.shape) < 0.04] = np.nan
    ids = np.array([f"b{i:04d}" for i in range(len(y))], dtype=np.str_)
    xh = x[:, 8:20].copy()
    xh[:, 5] = 7.0  # a constant column: one bin
    xh[:, 11] = x[:, 27]  # worst concave points: its extreme bins hold a single class
    guest = Table(ids, x[:, :8].copy(), [f"g{i}" for i in range(8)], y, "y")
    host = Table(ids, xh, [f"h{i}" for i in range(12)], None)
    return guest, host, y


def reference_woe_iv(
    column: np.ndarray, y: np.ndarray, method: str, bins: int
) -> tuple[list[float], float]:
    """WOE per bin (missing last) and IV, written out plainly on the joined data."""
    present = column[~np.isnan(column)]
    if method == "quantile":
        qs = np.arange(1, bins) / bins
        points = np.unique(np.quantile(present, qs, method="inverted_cdf"))
    else:
        lo, hi = present.min(), present.max()
        points = np.unique([lo + (hi - lo) * i / bins for i in range(1, bins)])
    points = points[points < present.max()]
    index = np.where(np.isnan(column), bins, np.digitize(column, points, right=True))
    total_e, total_n = y.sum(), (1 - y).sum()
    woes, iv = [], 0.0
    for b in range(bins + 1):
        e = float(y[index == b].sum())
        n = float((index == b).sum()) - e
        if e + n == 0:
            woes.append(0.0)
            continue
        if e == 0 or n == 0:
            e, n = e + 0.5, n + 0.5
        woe = float(np.log((e / total_e) / (n / total_n)))
        woes.append(woe)
        iv += (e / total_e - n / total_n) * woe
    return woes, iv


def run(tmp_path: Path, guest: Table, hosts: dict[str, Table], **params: Any) -> Outcome:
    inputs = {GUEST: {"data": guest}} | {p: {"data": t} for p, t in hosts.items()}
    return run_component(tmp_path, "hetero_feature_binning", inputs, {**KEYS, **params})


@pytest.mark.parametrize("method", ["quantile", "bucket"])
def test_iv_of_every_column_equals_the_plaintext_computation_on_the_joined_table(
    tmp_path: Path, method: str
) -> None:
    # Prepare
    guest, host, y = breast()

    # Execute (the host's output as bin indices)
    out = run(tmp_path, guest, {HOST: host}, method=method, bin_num=6, transform="bin")

    # Assert: IV and WOE of the guest's own and the host's columns, to 1e-9
    assert not out.errors, out.errors
    model = out.outputs[GUEST]["model"]
    assert isinstance(model, ModelArtifact)
    pure_bins = 0
    for i, name in enumerate(guest.feature_names):
        woes, iv = reference_woe_iv(guest.features[:, i], y, method, 6)
        assert model.document["iv"][name] == pytest.approx(iv, abs=1e-9)
        np.testing.assert_allclose(model.arrays["woe"][i], woes, rtol=0, atol=1e-9)
    host_iv = model.document["host_iv"][HOST]
    for i in range(12):
        woes, iv = reference_woe_iv(host.features[:, i], y, method, 6)
        assert host_iv[i] == pytest.approx(iv, abs=1e-9)
        assert out.metrics[GUEST][f"iv.host_{HOST}_{i}"] == pytest.approx(iv, abs=1e-9)
        np.testing.assert_allclose(model.arrays[f"host_{HOST}_woe"][i], woes, atol=1e-9)
        events = model.arrays[f"host_{HOST}_events"][i]
        nonevents = model.arrays[f"host_{HOST}_nonevents"][i]
        pure_bins += int(np.sum((events == 0) ^ (nonevents == 0)))
    assert host_iv[5] == 0.0  # the constant column: one bin, no information
    assert pure_bins > 0  # single-class bins occurred (the adjustment was exercised)
    # The host's model has its split points and no label statistics; the guest never saw
    # the host's names, and no plaintext label-derived value reached the host
    host_model = out.outputs[HOST]["model"]
    assert isinstance(host_model, ModelArtifact)
    assert host_model.document["columns"] == host.feature_names
    assert "woe" not in host_model.arrays and "iv" not in host_model.document
    # The host's table holds bin indices, missing values in their own bin (6)
    data = out.outputs[HOST]["data"]
    assert isinstance(data, Table)
    missing = np.isnan(host.features)
    assert np.all(data.features[missing] == 6.0)
    assert np.all((data.features[~missing] >= 0) & (data.features[~missing] <= 5))
    assert np.all(data.features[:, 5][~missing[:, 5]] == 0.0)  # constant column: one bin
    to_host = {(c.tag, c.kind) for c in out.crossings if c.destination == HOST}
    assert {t for t, _ in to_host} >= {"public_key", "encrypted_labels"}
    assert all(k in ("ciphertext_vector", "public_key") for t, k in to_host if t != "task.status")


def test_two_hosts_transforms_and_the_model_applied_to_new_rows(tmp_path: Path) -> None:
    # Prepare: the host columns split over two hosts; WOE revealed to the hosts for transform
    guest, host, y = breast(seed=4)
    h1 = Table(host.ids, host.features[:, :5].copy(), host.feature_names[:5], None)
    h2 = Table(host.ids, host.features[:, 5:].copy(), host.feature_names[5:], None)
    params = {"bin_num": 5, "transform": "woe", "reveal_woe_to_host": True}

    # Execute
    out = run(tmp_path / "fit", guest, {HOST: h1, HOST2: h2}, **params)

    # Assert: each host's data holds its bins' WOE, as the plaintext computation gives
    assert not out.errors, out.errors
    for party, table, offset in ((HOST, h1, 0), (HOST2, h2, 5)):
        data = out.outputs[party]["data"]
        assert isinstance(data, Table)
        for i in range(table.features.shape[1]):
            woes, _ = reference_woe_iv(host.features[:, offset + i], y, "quantile", 5)
            col = host.features[:, offset + i]
            points = bmath.split_points(col, "quantile", 5)
            expected = np.array(woes)[bmath.bin_index(col, points, 5)]
            np.testing.assert_allclose(data.features[:, i], expected, atol=1e-9)

    # Execute: a predict path applies the fitted bins to new rows, with no exchange
    new_guest = guest.take(np.arange(0, 50, dtype=np.int64))
    new_h1 = h1.take(np.arange(0, 50, dtype=np.int64))
    models = {p: out.outputs[p]["model"] for p in (GUEST, HOST)}
    applied = run_component(
        tmp_path / "apply",
        "hetero_feature_binning",
        {
            GUEST: {"data": new_guest, "model": models[GUEST]},
            HOST: {"data": new_h1, "model": models[HOST]},
        },
        {**KEYS, **params},
    )

    # Assert: the same values as the fitted rows got
    assert not applied.errors, applied.errors
    fitted_guest = out.outputs[GUEST]["data"]
    assert isinstance(fitted_guest, Table)
    for party, fitted in ((GUEST, fitted_guest), (HOST, out.outputs[HOST]["data"])):
        got = applied.outputs[party]["data"]
        assert isinstance(got, Table) and isinstance(fitted, Table)
        np.testing.assert_array_equal(got.features, fitted.features[:50])
    assert not [c for c in applied.crossings if c.message_type == "federation.data"]


def test_single_class_labels_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    guest, host, _ = breast()
    ones = Table(guest.ids, guest.features, guest.feature_names, np.ones(guest.rows), "y")

    out = run(tmp_path, ones, {HOST: host})

    assert "both label values" in str(out.errors[GUEST])


def test_non_binary_labels_and_unknown_columns_are_refused(tmp_path: Path) -> None:
    guest, host, y = breast()
    three = Table(guest.ids, guest.features, guest.feature_names, y * 2, "y")

    out = run(tmp_path / "a", three, {HOST: host})
    assert "takes labels 0 or 1, found 2" in str(out.errors[GUEST])

    out = run_component(
        tmp_path / "b",
        "hetero_feature_binning",
        {GUEST: {"data": guest}},
        {**KEYS, "columns": ["nope"]},
    )
    assert "no column 'nope'" in str(out.errors[GUEST])


def pipeline(params: dict[str, Any], host_params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "binning",
        "parties": {"guest": GUEST, "host": [HOST]},
        "components": [
            {"name": "reader_0", "type": "reader", "params": {"common": {"table": "t"}}},
            {
                "name": "binning_0",
                "type": "hetero_feature_binning",
                "inputs": {"data": "reader_0.data"},
                "params": {"common": params, "host": host_params or {}},
            },
        ],
    }


@pytest.mark.parametrize(
    ("params", "host_params", "message"),
    [
        ({"bin_num": 1}, None, "bin_num"),
        ({"method": "kmeans"}, None, "method"),
        ({"key_bits": 1024}, None, "insecure_short_keys"),
        ({"transform": "woe"}, None, "reveal_woe_to_host"),
        ({}, {"transform": "woe"}, "reveal_woe_to_host"),
        ({"adjustment_factor": 0.0}, None, "adjustment_factor"),
    ],
)
def test_bad_params_are_refused_when_the_pipeline_is_read(
    params: dict[str, Any], host_params: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(PipelineError, match=message):
        Pipeline.from_dict(pipeline(params, host_params))


def test_split_points_are_values_of_the_column_and_no_bin_is_empty() -> None:
    column = np.array([0.0, 0.0, 0.0, 1.0, 2.0, 2.0, np.nan, 3.0])

    points = bmath.split_points(column, "quantile", 4)
    slots = bmath.bin_index(column, points, 4)

    assert points.tolist() == [0.0, 1.0, 2.0]
    assert slots.tolist() == [0, 0, 0, 1, 2, 2, 4, 3]
    assert bmath.split_points(np.array([5.0, 5.0, np.nan]), "quantile", 4).size == 0


@pytest.mark.parametrize(("party", "sends"), [("guest", 2), ("host", 2)])
def test_a_party_that_dies_after_a_send_resumes_with_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, party: str, sends: int
) -> None:
    # Prepare: the guest dies right after [[y]] left (its 2nd send), or the host right after
    # its re-randomised bin sums left (its 2nd send), before anything else is recorded
    guest, host, y = breast(seed=6)
    parties = {"guest": [GUEST], "host": [HOST]}
    with LocalWorld([GUEST, HOST], tmp_path / "w") as world:
        tasks = {}
        for who, role, table in ((GUEST, "guest", guest), (HOST, "host", host)):
            world.parties[who].runtime.artifacts.put("j", "src", who, role, "data", table, 0)
            tasks[role] = world.parties[who].task(
                "j",
                "b_0",
                "hetero_feature_binning",
                role,
                parties,
                params={**KEYS, "bin_num": 5},
                inputs={"data": "src.data"},
            )
        crash_after_sends(world, GUEST if party == "guest" else HOST, sends, monkeypatch)

        # Execute: the task dies and is started again; both finish
        crash_and_restart(
            partial(start_task, recv_timeout=60, join_timeout=120), world, tasks, party
        )

        # Assert: the host IVs are the plaintext ones (the resend carried the same bytes:
        # a different payload under the same message id is refused by the outbox)
        model = world.parties[GUEST].runtime.artifacts.get_artifact(
            "j", GUEST, "guest", "b_0.model"
        )
    assert isinstance(model, ModelArtifact)
    for i in range(12):
        _, iv = reference_woe_iv(host.features[:, i], y, "quantile", 5)
        assert model.document["host_iv"][HOST][i] == pytest.approx(iv, abs=1e-9)


def test_a_guest_without_hosts_bins_its_own_columns_and_sends_nothing(tmp_path: Path) -> None:
    guest, _, y = breast(seed=2)

    out = run_component(tmp_path, "hetero_feature_binning", {GUEST: {"data": guest}}, KEYS)

    assert not out.errors, out.errors
    model = out.outputs[GUEST]["model"]
    assert isinstance(model, ModelArtifact)
    _, iv = reference_woe_iv(guest.features[:, 0], y, "quantile", 10)
    assert model.document["iv"]["g0"] == pytest.approx(iv, abs=1e-9)
    assert not [c for c in out.crossings if c.message_type == "federation.data"]
