"""hetero_poisson: vertical Poisson regression under Paillier, as good as scikit-learn's
PoissonRegressor on the joined table, its weights those of the plaintext reference of its SGD;
bad labels and exposures refused with a clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.components.hetero_poisson.math import reference_sgd
from fedflow.pipeline import Pipeline
from fedflow.standalone import StandaloneError, run_pipeline
from fedflow.tables import Table
from sklearn.datasets import load_diabetes
from sklearn.linear_model import PoissonRegressor
from sklearn.metrics import mean_poisson_deviance

from tests.flow.test_feature_scale import write_csv

GUEST, HOST = "9999", "10000"
PARAMS: dict[str, Any] = {
    "epochs": 15,
    "batch_size": 128,
    "learning_rate": 0.1,
    "decay": 0.1,
    "alpha": 0.01,
    "seed": 0,
    "early_stop": False,
    "exposure": "exposure",
    "key_bits": 512,
    "insecure_short_keys": True,
}
BETA = np.array([0.05, -0.1, 0.3, 0.2, -0.15, 0.1, -0.1, 0.1, 0.25, 0.05])
"""The true coefficients of the standardized diabetes features (the guest's 4, the host's 6)."""


def poisson_diabetes() -> tuple[Table, Table, np.ndarray]:
    """scikit-learn's diabetes features, standardized, with a Poisson count target drawn from
    exposure * exp(0.8 + x . BETA) (fixed seed); the guest the counts, 4 columns and the
    exposure, the host the other 6. Also returns the exposure."""
    x, _ = load_diabetes(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    rng = np.random.default_rng(7)
    exposure = rng.uniform(0.5, 2.0, len(x))
    y = rng.poisson(exposure * np.exp(0.8 + x @ BETA)).astype(np.float64)
    ids = np.array([f"p{i}" for i in range(len(y))], dtype=np.str_)
    guest_x = np.hstack([x[:, :4], exposure[:, None]])
    guest = Table(ids, guest_x, ["age", "sex", "bmi", "bp", "exposure"], y, "y")
    host = Table(ids, x[:, 4:].copy(), [f"s{i}" for i in range(1, 7)], None)
    return guest, host, exposure


def poisson_pipeline(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "poisson-diabetes",
        "parties": {"guest": GUEST, "host": [HOST]},
        "components": [
            {
                "name": "reader_0",
                "type": "reader",
                "params": {"guest": {"table": "d_guest"}, "host": {"table": "d_host"}},
            },
            {"name": "psi_0", "type": "psi", "inputs": {"data": "reader_0.data"}},
            {
                "name": "poisson_0",
                "type": "hetero_poisson",
                "inputs": {"data": "psi_0.data"},
                "params": {"common": params},
            },
            {
                "name": "predict_0",
                "type": "hetero_poisson_predict",
                "inputs": {"model": "poisson_0.model", "data": "psi_0.data"},
                "params": {"guest": {"exposure": "exposure"}},
            },
        ],
    }


def run(tmp_path: Path, guest: Table, host: Table, params: dict[str, Any]) -> Any:
    data = tmp_path / "data"
    data.mkdir()
    write_csv(data / "d_guest.csv", guest)
    write_csv(data / "d_host.csv", host)
    pipeline = Pipeline.from_dict(poisson_pipeline(params))
    return run_pipeline(pipeline, {GUEST: data, HOST: data}, tmp_path, recv_timeout=60)


@pytest.mark.timeout(300)
def test_hetero_poisson_is_within_1_percent_deviance_of_sklearn(tmp_path: Path) -> None:
    # Prepare
    guest, host, _ = poisson_diabetes()

    # Execute
    result = run(tmp_path, guest, host, PARAMS)

    # Assert: the rows in the order the parties used (psi sorts them by id)
    predicted = result.output(GUEST, "guest", "predict_0", "data")
    ordered = guest.align_to(predicted.ids)
    assert ordered.labels is not None
    y, exposure = ordered.labels, ordered.column("exposure")
    xg = ordered.features[:, :4]
    xh = host.align_to(predicted.ids).features
    joined = np.hstack([xg, xh])
    # PoissonRegressor on rates y / e weighted by e: its objective is (1 / 2 sum e) sum dev +
    # alpha' / 2 |w|^2, ours (1 / 2n) sum dev + alpha / 2 |w|^2: alpha' = alpha n / sum e
    alpha = PARAMS["alpha"] * len(y) / exposure.sum()
    sk = PoissonRegressor(alpha=alpha, max_iter=1000).fit(joined, y / exposure, exposure)
    sk_dev = mean_poisson_deviance(y, exposure * sk.predict(joined))
    dev = mean_poisson_deviance(y, predicted.column("prediction"))
    print(f"hetero_poisson mean deviance {dev:.5f} PoissonRegressor {sk_dev:.5f}")
    # The weights are the plaintext reference's (the protocol computes the exact residual)
    wg, wh, losses = reference_sgd(xg, xh, y, PARAMS, exposure)
    guest_model = result.output(GUEST, "guest", "poisson_0", "model")
    host_model = result.output(HOST, "host", "poisson_0", "model")
    assert guest_model.ids.tolist() == ["age", "sex", "bmi", "bp", "intercept"]
    np.testing.assert_allclose(guest_model.features[:, 0], wg, rtol=0, atol=1e-6)
    np.testing.assert_allclose(host_model.features[:, 0], wh, rtol=0, atol=1e-6)
    assert result.metric("poisson_0", "final_loss", GUEST) == pytest.approx(losses[-1], rel=1e-7)
    assert dev <= 1.01 * sk_dev


def small_tables(labels: np.ndarray, exposure: np.ndarray) -> tuple[Table, Table]:
    rng = np.random.default_rng(3)
    rows = len(labels)
    ids = np.array([f"r{i}" for i in range(rows)], dtype=np.str_)
    xg = np.hstack([rng.normal(size=(rows, 2)), exposure[:, None]])
    guest = Table(ids, xg, ["g0", "g1", "exposure"], labels, "y")
    host = Table(ids, rng.normal(size=(rows, 2)), ["h0", "h1"], None)
    return guest, host


SMALL = {**PARAMS, "epochs": 1, "batch_size": 64}


@pytest.mark.parametrize(
    ("labels", "found"),
    [(-1.0, "-1"), (2.5, "2.5")],
    ids=["negative", "not-an-integer"],
)
def test_labels_that_are_not_counts_are_refused(tmp_path: Path, labels: float, found: str) -> None:
    # Prepare: counts but one row's label
    y = np.random.default_rng(1).poisson(2.0, 80).astype(np.float64)
    y[5] = labels
    guest, host = small_tables(y, np.ones(80))

    # Execute / Assert
    with pytest.raises(StandaloneError, match=rf"hetero_poisson.*(integers >= 0|counts).*{found}"):
        run(tmp_path, guest, host, SMALL)


@pytest.mark.parametrize("bad", [0.0, -2.0])
def test_an_exposure_that_is_not_positive_is_refused(tmp_path: Path, bad: float) -> None:
    # Prepare
    exposure = np.ones(80)
    exposure[7] = bad
    guest, host = small_tables(np.ones(80), exposure)

    # Execute / Assert
    with pytest.raises(StandaloneError, match=r"exposure column 'exposure' must be > 0"):
        run(tmp_path, guest, host, SMALL)


def test_a_diverging_run_stops_with_advice(tmp_path: Path) -> None:
    # Prepare: unscaled features (a column in the thousands) and a large learning rate
    y = np.random.default_rng(1).poisson(2.0, 80).astype(np.float64)
    guest, host = small_tables(y, np.ones(80))
    guest.features[:, 0] *= 1000.0

    # Execute / Assert
    with pytest.raises(StandaloneError, match=r"hetero_poisson diverged.*scale the features"):
        run(tmp_path, guest, host, {**SMALL, "epochs": 3, "learning_rate": 5.0})
