"""hetero_feature_selection: local filters at each party, the IV filters decided by the guest
from a binning model (each host learns only which of its own columns remain), the model
applied to new rows, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.artifacts import ModelArtifact
from fedflow.pipeline import Pipeline, PipelineError
from fedflow.tables import Table

from tests.flow.modelling_runs import GUEST, Outcome, run_component
from tests.flow.test_hetero_binning import HOST, HOST2, KEYS, breast, reference_woe_iv


def select(tmp_path: Path, inputs: dict[str, dict[str, Any]], **params: Any) -> Outcome:
    return run_component(tmp_path, "hetero_feature_selection", inputs, params)


def kept(out: Outcome, party: str) -> list[str]:
    data = out.outputs[party]["data"]
    assert isinstance(data, Table)
    return data.feature_names


@pytest.fixture(scope="module")
def binned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Table, Table, Outcome]:
    guest, host, _ = breast()
    out = run_component(
        tmp_path_factory.mktemp("binning"),
        "hetero_feature_binning",
        {GUEST: {"data": guest}, HOST: {"data": host}},
        {**KEYS, "bin_num": 6},
    )
    assert not out.errors, out.errors
    return guest, host, out


def test_local_filters_drop_missing_constant_and_named_columns(tmp_path: Path) -> None:
    # Prepare: a column mostly missing, a constant one, a low-variance one
    guest, host, _ = breast()
    x = guest.features.copy()
    x[: int(0.6 * guest.rows), 1] = np.nan
    x[:, 2] = 3.0
    x[:, 3] = 1.0 + 1e-4 * np.sin(np.arange(guest.rows))
    g = Table(guest.ids, x, guest.feature_names, guest.labels, "y")

    # Execute
    out = select(
        tmp_path,
        {GUEST: {"data": g}, HOST: {"data": host}},
        max_missing_rate=0.5,
        min_unique=2,
        min_variance=1e-6,
        drop_columns=[],
    )

    # Assert
    assert not out.errors, out.errors
    assert kept(out, GUEST) == ["g0", "g4", "g5", "g6", "g7"]
    assert "h5" not in kept(out, HOST)  # the host's constant column
    model = out.outputs[GUEST]["model"]
    assert isinstance(model, ModelArtifact)
    assert model.document["dropped"]["g1"].startswith("missing rate 0.6")
    assert model.document["dropped"]["g2"] == "1 distinct values < 2"
    assert model.document["dropped"]["g3"].startswith("variance")
    assert out.metrics[GUEST]["dropped_columns"] == 3.0
    assert not [c for c in out.crossings if c.message_type == "federation.data"]


def test_iv_threshold_and_top_k_keep_the_columns_a_plaintext_iv_ranking_keeps(
    tmp_path: Path, binned: tuple[Table, Table, Outcome]
) -> None:
    # Prepare: the IVs of every column on the joined table, computed in plaintext
    guest, host, binning = binned
    y = guest.labels
    assert y is not None
    ivs = {
        n: reference_woe_iv(guest.features[:, i], y, "quantile", 6)[1]
        for i, n in enumerate(guest.feature_names)
    }
    ivs |= {
        n: reference_woe_iv(host.features[:, i], y, "quantile", 6)[1]
        for i, n in enumerate(host.feature_names)
    }
    top = sorted(ivs, key=lambda n: -ivs[n])[:7]
    inputs = {
        p: {"data": t, "binning": binning.outputs[p]["model"]}
        for p, t in ((GUEST, guest), (HOST, host))
    }

    # Execute
    by_top = select(tmp_path / "top", inputs, iv_top_k=7)
    by_threshold = select(tmp_path / "thr", inputs, iv_threshold=0.5, keep_columns=[])

    # Assert
    assert not by_top.errors and not by_threshold.errors, (by_top.errors, by_threshold.errors)
    assert set(kept(by_top, GUEST)) | set(kept(by_top, HOST)) == set(top)
    expected = {n for n, iv in ivs.items() if iv >= 0.5}
    assert set(kept(by_threshold, GUEST)) | set(kept(by_threshold, HOST)) == expected
    assert 0 < len(kept(by_threshold, HOST)) < host.features.shape[1]
    # What crossed: one mask to the host, nothing back
    data = [c for c in by_top.crossings if c.message_type == "federation.data"]
    assert [(c.tag, c.source, c.kind) for c in data] == [("kept_by_iv", GUEST, "plain_control")]


def test_keep_columns_overrides_the_filters_and_the_model_applies_to_new_rows(
    tmp_path: Path, binned: tuple[Table, Table, Outcome]
) -> None:
    guest, host, binning = binned
    inputs = {
        p: {"data": t, "binning": binning.outputs[p]["model"]}
        for p, t in ((GUEST, guest), (HOST, host))
    }
    out = run_component(
        tmp_path / "fit",
        "hetero_feature_selection",
        inputs,
        {"iv_top_k": 2},
        party_params={HOST: {"keep_columns": ["h5"]}},
    )
    assert not out.errors, out.errors
    assert "h5" in kept(out, HOST)

    rows = np.arange(10, dtype=np.int64)
    applied = run_component(
        tmp_path / "apply",
        "hetero_feature_selection",
        {
            GUEST: {"data": guest.take(rows), "model": out.outputs[GUEST]["model"]},
            HOST: {"data": host.take(rows), "model": out.outputs[HOST]["model"]},
        },
        {"iv_top_k": 2},
    )
    assert not applied.errors, applied.errors
    assert kept(applied, HOST) == kept(out, HOST)
    assert kept(applied, GUEST) == kept(out, GUEST)


def test_clear_errors(tmp_path: Path, binned: tuple[Table, Table, Outcome]) -> None:
    guest, host, _ = binned
    out = select(tmp_path / "a", {GUEST: {"data": guest}, HOST: {"data": host}}, iv_top_k=3)
    assert "need the `binning` input" in str(out.errors[GUEST])

    out = select(tmp_path / "b", {GUEST: {"data": guest}}, min_unique=1000)
    assert "every column of party 9999 was dropped" in str(out.errors[GUEST])

    out = select(tmp_path / "c", {GUEST: {"data": guest}}, drop_columns=["nope"])
    assert "no column 'nope'" in str(out.errors[GUEST])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"iv_top_k": 0}, "iv_top_k"),
        ({"max_missing_rate": 1.5}, "max_missing_rate"),
        ({"drop_columns": ["a"], "keep_columns": ["a"]}, "both drop_columns and keep_columns"),
    ],
)
def test_bad_params_are_refused_when_the_pipeline_is_read(
    params: dict[str, Any], message: str
) -> None:
    spec = {
        "name": "selection",
        "parties": {"guest": GUEST, "host": [HOST]},
        "components": [
            {"name": "reader_0", "type": "reader", "params": {"common": {"table": "t"}}},
            {
                "name": "select_0",
                "type": "hetero_feature_selection",
                "inputs": {"data": "reader_0.data"},
                "params": {"common": params},
            },
        ],
    }
    with pytest.raises(PipelineError, match=message):
        Pipeline.from_dict(spec)


def test_top_k_over_the_guest_and_two_hosts_tells_each_host_only_its_own_columns(
    tmp_path: Path,
) -> None:
    # Prepare: the host columns split over two hosts, binned; the plaintext IV ranking
    guest, host, y = breast(seed=8)
    hosts = {
        HOST: Table(host.ids, host.features[:, :6].copy(), host.feature_names[:6], None),
        HOST2: Table(host.ids, host.features[:, 6:].copy(), host.feature_names[6:], None),
    }
    binning = run_component(
        tmp_path / "bin",
        "hetero_feature_binning",
        {GUEST: {"data": guest}} | {p: {"data": t} for p, t in hosts.items()},
        {**KEYS, "bin_num": 4},
    )
    assert not binning.errors, binning.errors
    tables = {GUEST: guest, **hosts}
    ivs = {
        n: reference_woe_iv(t.features[:, i], y, "quantile", 4)[1]
        for t in tables.values()
        for i, n in enumerate(t.feature_names)
    }
    top = set(sorted(ivs, key=lambda n: -ivs[n])[:9])

    # Execute
    out = select(
        tmp_path / "sel",
        {p: {"data": t, "binning": binning.outputs[p]["model"]} for p, t in tables.items()},
        iv_top_k=9,
    )

    # Assert: the union of what each party kept is the plaintext top 9; one mask per host
    assert not out.errors, out.errors
    assert set().union(*(kept(out, p) for p in tables)) == top
    masks = [(c.destination, c.tag) for c in out.crossings if c.message_type == "federation.data"]
    assert sorted(masks) == [(HOST, "kept_by_iv"), (HOST2, "kept_by_iv")]
