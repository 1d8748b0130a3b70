"""hetero_lr's default sigmoid (`auto`: the separable fit with one host). The federated weights
of a pipeline that names no sigmoid equal the plaintext reference of the separable
approximation on the joined table (1e-6), so the reference's train AUC is the protocol's: on
default_credit (the example pipeline's settings) and breast (its example's) the default is
within 0.002 of scikit-learn's LogisticRegression with the same L2, where the Taylor sigmoid
(`sigmoid: taylor`) is not (measured beside it, and asserted, so that the test would notice
the baseline moving). With several hosts `auto` is the Taylor line (test_several_hosts.py
trains two hosts with the default), and `separable` named with two hosts is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.components.evaluation.math import binary_metrics
from fedflow.components.hetero_lr.math import (
    reference_sgd,
    resolve_sigmoid,
    separable_sigmoid,
    sigmoid,
    with_intercept,
)
from fedflow.components.hetero_lr.params import HeteroLrParams
from fedflow.standalone import LocalWorld
from fedflow.tables import Table, read_table
from sklearn.linear_model import LogisticRegression

from tests.lr.conftest import (
    EXAMPLE_DATA,
    GUEST,
    HOST,
    SHORT_KEY_PARAMS,
    Running,
    start,
    synthetic,
    trained,
    weights,
)

DEFAULT_SIGMOID = {k: v for k, v in SHORT_KEY_PARAMS.items() if k != "sigmoid"}
"""The protocol tests' params without `sigmoid`: the default protocol."""


def test_the_separable_sigmoid_is_close_where_scores_lie() -> None:
    # Prepare
    u_g, u_h = np.meshgrid(np.linspace(-6, 6, 121), np.linspace(-2, 2, 41))

    # Execute
    approx = separable_sigmoid(u_g.ravel(), u_h.ravel())

    # Assert: within 0.04 on |u_g| <= 6, |u_h| <= 2, where the Taylor line is off by > 0.4
    exact = sigmoid(u_g.ravel() + u_h.ravel())
    assert np.abs(approx - exact).max() < 0.04
    taylor = 0.5 + (u_g.ravel() + u_h.ravel()) / 4
    assert np.abs(taylor - exact).max() > 0.4


def test_the_default_sigmoid_is_separable_with_one_host_and_taylor_with_several() -> None:
    assert HeteroLrParams().sigmoid == "auto"
    assert [resolve_sigmoid("auto", hosts) for hosts in (1, 2, 16)] == [
        "separable",
        "taylor",
        "taylor",
    ]
    assert resolve_sigmoid("taylor", 1) == "taylor"
    assert resolve_sigmoid("separable", 1) == "separable"


def test_federated_default_weights_equal_the_plaintext_separable_reference(
    tmp_path: Path,
) -> None:
    # Prepare: no sigmoid named, the default protocol
    guest, host = synthetic(200, 3, 4, seed=5)
    params = {**DEFAULT_SIGMOID, "learning_rate": 0.5}

    # Execute
    with trained(tmp_path, "job-sep", guest, host, params) as world:
        wg, wh = weights(world, "job-sep")

    # Assert
    assert guest.labels is not None
    separable = {**params, "sigmoid": "separable"}
    expected_g, expected_h, _ = reference_sgd(
        guest.features, host.features, guest.labels, separable
    )
    np.testing.assert_allclose(wg, expected_g, rtol=0, atol=1e-6)
    np.testing.assert_allclose(wh, expected_h, rtol=0, atol=1e-6)
    taylor = {**params, "sigmoid": "taylor"}
    taylor_g, _, _ = reference_sgd(guest.features, host.features, guest.labels, taylor)
    assert np.abs(expected_g - taylor_g).max() > 1e-3  # it is not the Taylor protocol


def _split(host: Table, columns: slice) -> Table:
    return Table(host.ids, host.features[:, columns], host.feature_names[columns], None)


def test_separable_named_with_two_hosts_is_refused_at_every_party(tmp_path: Path) -> None:
    # Prepare
    guest, host = synthetic(200, 3, 4, seed=5)
    host2 = "10001"
    parties = {"guest": [GUEST], "host": [HOST, host2]}
    tables = {
        GUEST: ("guest", guest),
        HOST: ("host", _split(host, slice(0, 2))),
        host2: ("host", _split(host, slice(2, 4))),
    }
    params = {**SHORT_KEY_PARAMS, "sigmoid": "separable"}

    # Execute
    with LocalWorld([GUEST, HOST, host2], tmp_path / "w") as world:
        runs: dict[str, Running] = {}
        for party, (role, table) in tables.items():
            world.parties[party].runtime.artifacts.put(
                "job-2h", "src", party, role, "data", table, 0
            )
            spec = world.parties[party].task(
                "job-2h",
                "lr_0",
                "hetero_lr",
                role,
                parties,
                params=params,
                inputs={"data": "src.data"},
            )
            runs[party] = start(world, spec)
        for running in runs.values():
            running.join()

    # Assert: each party refuses before training, naming the setting and the way out
    for party, running in runs.items():
        error = " ".join(str(e) for e in running.error)
        assert "sigmoid separable takes exactly one host (2 given" in error, (party, error)
        assert "sigmoid auto, the default, uses taylor with several hosts" in error


CREDIT: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 2000,
    "learning_rate": 1.0,
    "decay": 0.2,
    "alpha": 0.01,
    "seed": 0,
}
BREAST: dict[str, Any] = {
    "epochs": 30,
    "batch_size": 128,
    "learning_rate": 0.5,
    "alpha": 0.01,
    "seed": 1,
}


@pytest.mark.parametrize(("name", "params"), [("default_credit", CREDIT), ("breast", BREAST)])
def test_the_default_train_auc_gap_to_sklearn_is_at_most_0_002(
    name: str, params: dict[str, Any]
) -> None:
    # Prepare
    guest = read_table(EXAMPLE_DATA / f"{name}_hetero_guest.csv")
    host = read_table(EXAMPLE_DATA / f"{name}_hetero_host.csv", label_column=None)
    host = host.align_to(guest.ids)
    assert guest.labels is not None
    y, joined = guest.labels, np.hstack([guest.features, host.features])
    c = 1.0 / (params["alpha"] * len(y))
    model = LogisticRegression(C=c, max_iter=10_000).fit(joined, y)

    def auc(scores: np.ndarray) -> float:
        return binary_metrics(y == 1.0, scores, threshold=0.5, curve_points=2).auc

    central = auc(model.decision_function(joined))

    # Execute: the default (no sigmoid named) and sigmoid: taylor
    gaps = {}
    for approximation in ("default", "taylor"):
        chosen = params if approximation == "default" else {**params, "sigmoid": approximation}
        wg, wh, _ = reference_sgd(guest.features, host.features, y, chosen)
        gaps[approximation] = central - auc(
            with_intercept(guest.features) @ wg + host.features @ wh
        )

    # Assert
    print(f"{name}: sklearn {central:.5f}, gaps {gaps}")
    assert abs(gaps["default"]) <= 0.002
    assert gaps["taylor"] > 0.002
