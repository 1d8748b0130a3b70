"""hetero_poisson: vertical Poisson regression under Paillier, with one host or two, as good as
scikit-learn's PoissonRegressor on the joined table, its weights those of the plaintext
reference of its SGD; bad labels and exposures refused with a clear error."""

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

from tests.flow.modelling_runs import Outcome, run_component
from tests.flow.test_feature_scale import write_csv

GUEST, HOST, HOST2 = "9999", "10000", "10001"
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


def train_and_predict(tmp_path: Path, guest: Table, hosts: dict[str, Table]) -> Outcome:
    """hetero_poisson then hetero_poisson_predict on the training rows, at the guest and each
    host (the tables as a psi would have left them: the same rows in the same order)."""
    trained = run_component(
        tmp_path / "train",
        "hetero_poisson",
        {GUEST: {"data": guest}} | {p: {"data": t} for p, t in hosts.items()},
        PARAMS,
        timeout=120,
    )
    assert not trained.errors, trained.errors
    inputs = {GUEST: {"data": guest, "model": trained.outputs[GUEST]["model"]}} | {
        p: {"data": t, "model": trained.outputs[p]["model"]} for p, t in hosts.items()
    }
    predicted = run_component(
        tmp_path / "predict",
        "hetero_poisson_predict",
        inputs,
        party_params={GUEST: {"exposure": "exposure"}},
    )
    assert not predicted.errors, predicted.errors
    trained.outputs[GUEST]["data"] = predicted.outputs[GUEST]["data"]
    return trained


@pytest.mark.timeout(300)
def test_with_two_hosts_it_is_within_1_percent_deviance_of_sklearn(tmp_path: Path) -> None:
    # Prepare: the host's 6 columns split between two hosts
    guest, host, exposure = poisson_diabetes()
    hosts = {
        HOST: Table(host.ids, host.features[:, :3].copy(), host.feature_names[:3], None),
        HOST2: Table(host.ids, host.features[:, 3:].copy(), host.feature_names[3:], None),
    }

    # Execute
    result = train_and_predict(tmp_path, guest, hosts)

    # Assert: the deviance of scikit-learn's fit on the joined table
    assert guest.labels is not None
    y, xg, xh = guest.labels, guest.features[:, :4], host.features
    joined = np.hstack([xg, xh])
    # PoissonRegressor on rates y / e weighted by e: its objective is (1 / 2 sum e) sum dev +
    # alpha' / 2 |w|^2, ours (1 / 2n) sum dev + alpha / 2 |w|^2: alpha' = alpha n / sum e
    alpha = PARAMS["alpha"] * len(y) / exposure.sum()
    sk = PoissonRegressor(alpha=alpha, max_iter=1000).fit(joined, y / exposure, exposure)
    sk_dev = mean_poisson_deviance(y, exposure * sk.predict(joined))
    predicted = result.outputs[GUEST]["data"]
    assert isinstance(predicted, Table)
    dev = mean_poisson_deviance(y, predicted.column("prediction"))
    print(f"hetero_poisson (2 hosts) mean deviance {dev:.5f} PoissonRegressor {sk_dev:.5f}")
    assert dev <= 1.01 * sk_dev
    # The weights are the plaintext reference's on the joined table (the exact residual)
    wg, wh, losses = reference_sgd(xg, xh, y, PARAMS, exposure)
    models = {p: result.outputs[p]["model"] for p in (GUEST, HOST, HOST2)}
    w = {p: m.features[:, 0] for p, m in models.items() if isinstance(m, Table)}
    assert len(w) == 3
    np.testing.assert_allclose(w[GUEST], wg, rtol=0, atol=1e-6)
    np.testing.assert_allclose(w[HOST], wh[:3], rtol=0, atol=1e-6)
    np.testing.assert_allclose(w[HOST2], wh[3:], rtol=0, atol=1e-6)
    assert result.metrics[GUEST]["final_loss"] == pytest.approx(losses[-1], rel=1e-7)
    # the predictions are e exp(u_g + u_h1 + u_h2) of the trained weights
    u = (
        np.hstack([xg, np.ones((len(y), 1))]) @ w[GUEST]
        + xh[:, :3] @ w[HOST]
        + xh[:, 3:] @ w[HOST2]
    )
    np.testing.assert_allclose(predicted.column("prediction"), exposure * np.exp(u), rtol=1e-9)
    # The rates travel along the chain 10000 -> 10001 -> guest; [[mu]] under the guest's key
    # goes from the last host to the other, never to the guest
    crossed = {(c.tag, c.source, c.destination) for c in result.crossings}
    assert {
        ("guest_rate", GUEST, HOST),
        ("rate_chain", HOST, HOST2),
        ("guest_rate_chain", HOST, HOST2),
        ("host_rate", HOST2, GUEST),
        ("rate_product", HOST2, HOST),
        ("guest_gradient", GUEST, HOST),
    } <= crossed
    assert not {(tag, dst) for tag, _, dst in crossed if dst == GUEST} & {
        ("rate_product", GUEST),
        ("guest_rate_chain", GUEST),
        ("rate_chain", GUEST),
    }


@pytest.mark.timeout(300)
def test_validate_data_gives_a_deviance_per_epoch_and_patience_keeps_the_best_epoch(
    tmp_path: Path,
) -> None:
    # Prepare: reader, psi, a 70/30 split, hetero_poisson validated on the 30%; a min_delta
    # no epoch can beat, so epoch 0 stays the best and patience 1 stops after epoch 1
    guest, host, _ = poisson_diabetes()
    data = tmp_path / "data"
    data.mkdir()
    write_csv(data / "d_guest.csv", guest)
    write_csv(data / "d_host.csv", host)
    spec = poisson_pipeline({**PARAMS, "epochs": 4, "patience": 1, "min_delta": 1e9})
    spec["components"][2:] = [
        {
            "name": "split_0",
            "type": "data_split",
            "inputs": {"data": "psi_0.data"},
            "params": {"common": {"train_fraction": 0.7, "validate_fraction": 0.3}},
        },
        {
            **spec["components"][2],
            "inputs": {"data": "split_0.train", "validate_data": "split_0.validate"},
        },
    ]

    # Execute
    result = run_pipeline(Pipeline.from_dict(spec), {GUEST: data, HOST: data}, tmp_path)

    # Assert: two epochs ran; each one's validation deviance is the plaintext reference's
    train = result.output(GUEST, "guest", "split_0", "train")
    valid = result.output(GUEST, "guest", "split_0", "validate")
    host_train = host.align_to(train.ids).features
    host_valid = host.align_to(valid.ids).features
    assert train.labels is not None and valid.labels is not None
    series = sorted(
        (m.step, m.value)
        for m in result.metrics
        if m.component == "poisson_0" and m.name == "validate_loss"
    )
    assert [step for step, _ in series] == [0, 1]
    assert result.metric("poisson_0", "epochs", GUEST) == 2.0
    by_epoch = []
    for epochs in (1, 2):
        wg, wh, _ = reference_sgd(
            train.features[:, :4], host_train, train.labels, {**PARAMS, "epochs": epochs},
            train.column("exposure"),
        )  # fmt: skip
        u = np.hstack([valid.features[:, :4], np.ones((valid.rows, 1))]) @ wg
        mu = valid.column("exposure") * np.exp(u + host_valid @ wh)
        deviance = mean_poisson_deviance(valid.labels, mu) / 2
        by_epoch.append((wg, wh, deviance))
    for (_, value), (_, _, deviance) in zip(series, by_epoch, strict=True):
        assert value == pytest.approx(deviance, rel=1e-6)
    # and every party output epoch 0's weights, the best (one host: the two-party exchange)
    wg, wh, _ = by_epoch[0]
    guest_model = result.output(GUEST, "guest", "poisson_0", "model")
    host_model = result.output(HOST, "host", "poisson_0", "model")
    assert guest_model.ids.tolist() == ["age", "sex", "bmi", "bp", "intercept"]
    np.testing.assert_allclose(guest_model.features[:, 0], wg, rtol=0, atol=1e-6)
    np.testing.assert_allclose(host_model.features[:, 0], wh, rtol=0, atol=1e-6)


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


def test_the_claims_example_is_a_valid_three_party_pipeline() -> None:
    example = Path(__file__).resolve().parents[2] / "examples/pipelines/poisson_claims.yaml"
    pipeline = Pipeline.from_yaml(example.read_text())
    assert [c.type for c in pipeline.components_in_order()][-3:] == [
        "hetero_poisson",
        "hetero_poisson_predict",
        "evaluation",
    ]
    assert pipeline.params_for("reader_0", "host", HOST2) == {"table": "claims_host_b"}
    assert pipeline.params_for("reader_0", "guest", GUEST)["label_rules"] == [
        {"kind": "classes", "names": False, "model": "hetero_poisson"}
    ]
