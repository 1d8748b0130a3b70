"""hetero_linr: vertical linear regression under Paillier, as good as scikit-learn's Ridge on the
joined table, its weights those of the plaintext reference of its SGD."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.components.hetero_linr.math import reference_sgd
from fedflow.metrics import MetricsReader
from fedflow.pipeline import Pipeline, PipelineError
from fedflow.standalone import LocalWorld, StandaloneError, run_pipeline
from fedflow.tables import Table
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

from tests.flow.running import start_task
from tests.flow.test_feature_scale import write_csv

GUEST, HOST = "9999", "10000"
LINR_PARAMS: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 128,
    "learning_rate": 0.3,
    "alpha": 0.01,
    "seed": 0,
    "early_stop": False,
    "key_bits": 512,
    "insecure_short_keys": True,
}


def diabetes() -> tuple[Table, Table]:
    """scikit-learn's diabetes table split vertically: the guest the target and 4 columns, the
    host the other 6."""
    x, y = load_diabetes(return_X_y=True)
    ids = np.array([f"p{i}" for i in range(len(y))], dtype=np.str_)
    guest = Table(ids, x[:, :4].copy(), ["age", "sex", "bmi", "bp"], y.astype(np.float64), "y")
    host = Table(ids, x[:, 4:].copy(), [f"s{i}" for i in range(1, 7)], None)
    return guest, host


def linr_pipeline(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "linr-diabetes",
        "parties": {"guest": GUEST, "host": [HOST]},
        "components": [
            {
                "name": "reader_0",
                "type": "reader",
                "params": {"guest": {"table": "d_guest"}, "host": {"table": "d_host"}},
            },
            {"name": "psi_0", "type": "psi", "inputs": {"data": "reader_0.data"}},
            {"name": "scale_0", "type": "feature_scale", "inputs": {"data": "psi_0.data"}},
            {
                "name": "linr_0",
                "type": "hetero_linr",
                "inputs": {"data": "scale_0.data"},
                "params": {"common": params},
            },
            {
                "name": "predict_0",
                "type": "hetero_linr_predict",
                "inputs": {"model": "linr_0.model", "data": "scale_0.data"},
            },
            {
                "name": "eval_0",
                "type": "evaluation",
                "inputs": {"data": "predict_0.data"},
                "params": {"common": {"eval_type": "regression"}},
            },
        ],
    }


def test_the_regression_example_is_a_valid_pipeline() -> None:
    example = Path(__file__).resolve().parents[2] / "examples/pipelines/regression_linr.yaml"
    pipeline = Pipeline.from_yaml(example.read_text())
    assert [c.type for c in pipeline.components_in_order()][-3:] == [
        "hetero_linr",
        "hetero_linr_predict",
        "evaluation",
    ]


def test_reveal_host_scores_is_refused_for_hetero_linr() -> None:
    with pytest.raises(PipelineError, match="reveal_host_scores"):
        Pipeline.from_dict(linr_pipeline({**LINR_PARAMS, "reveal_host_scores": True}))


@pytest.mark.timeout(300)
def test_hetero_linr_on_diabetes_is_within_1_percent_rmse_of_ridge(tmp_path: Path) -> None:
    # Prepare: the tables as CSV files; Ridge on the standardized joined table with our L2
    guest, host = diabetes()
    data = tmp_path / "data"
    data.mkdir()
    write_csv(data / "d_guest.csv", guest)
    write_csv(data / "d_host.csv", host)

    # Execute
    result = run_pipeline(
        Pipeline.from_dict(linr_pipeline(LINR_PARAMS)), {GUEST: data, HOST: data}, tmp_path
    )

    # Assert: the rows in the order the parties used (psi sorts them by id)
    predicted = result.output(GUEST, "guest", "predict_0", "data")
    ordered = guest.align_to(predicted.ids)
    assert ordered.labels is not None
    y = ordered.labels
    joined = np.hstack([ordered.features, host.align_to(predicted.ids).features])
    joined = (joined - joined.mean(axis=0)) / joined.std(axis=0)
    ridge = Ridge(alpha=LINR_PARAMS["alpha"] * len(y)).fit(joined, y)
    ridge_rmse = float(np.sqrt(np.mean((ridge.predict(joined) - y) ** 2)))
    rmse = float(np.sqrt(np.mean((predicted.column("prediction") - y) ** 2)))
    print(f"hetero_linr rmse {rmse:.4f} ridge {ridge_rmse:.4f}")
    assert rmse <= 1.01 * ridge_rmse
    assert result.metric("eval_0", "rmse") == pytest.approx(rmse, rel=1e-12)
    assert result.metric("eval_0", "r2") > 0.5
    # The weights are the plaintext reference's (the protocol computes the exact residual)
    wg, wh, losses = reference_sgd(joined[:, :4], joined[:, 4:], y, LINR_PARAMS)
    guest_model = result.output(GUEST, "guest", "linr_0", "model")
    host_model = result.output(HOST, "host", "linr_0", "model")
    np.testing.assert_allclose(guest_model.features[:, 0], wg, rtol=0, atol=1e-6)
    np.testing.assert_allclose(host_model.features[:, 0], wh, rtol=0, atol=1e-6)
    assert result.metric("linr_0", "final_loss", GUEST) == pytest.approx(losses[-1], rel=1e-8)


def test_hetero_linr_with_two_hosts_trains_the_joined_model_and_its_loss(tmp_path: Path) -> None:
    # Prepare: a numeric target of the guest's and both hosts' features; the host columns of
    # one table split between two hosts
    rng = np.random.default_rng(5)
    rows, ids = 200, np.array([f"r{i}" for i in range(200)], dtype=np.str_)
    xg, xh = rng.normal(size=(rows, 3)), rng.normal(size=(rows, 5))
    y = 3.0 + xg @ [1.0, -2.0, 0.5] + xh @ [0.7, 0.0, -1.5, 2.0, 1.0] + rng.normal(size=rows)
    guest = Table(ids, xg, ["g0", "g1", "g2"], y, "y")
    hosts = {
        "10000": Table(ids, xh[:, :2], ["h0", "h1"], None),
        "10001": Table(ids, xh[:, 2:], ["h2", "h3", "h4"], None),
    }
    parties = {"guest": [GUEST], "host": list(hosts)}
    params = {**LINR_PARAMS, "epochs": 3, "batch_size": 64, "learning_rate": 0.1}
    with LocalWorld([GUEST, *hosts], tmp_path / "w") as world:
        runs = []
        for party, role, table in [(GUEST, "guest", guest)] + [
            (p, "host", t) for p, t in hosts.items()
        ]:
            world.parties[party].runtime.artifacts.put("j", "src", party, role, "data", table, 0)
            spec = world.parties[party].task(
                "j",
                "linr_0",
                "hetero_linr",
                role,
                parties,
                params=params,
                inputs={"data": "src.data"},
            )
            runs.append((party, role, start_task(world, spec, recv_timeout=60, join_timeout=300)))

        # Execute
        for _, _, running in runs:
            running.join()

        # Assert: the plaintext reference on the joined table, weights and per-epoch loss
        assert all(not r.error for _, _, r in runs), [r.error for _, _, r in runs]
        got = {
            party: world.parties[party].runtime.artifacts.get("j", party, role, "linr_0.model")
            for party, role, _ in runs
        }
        reader = MetricsReader(world.parties[GUEST].engine)
        losses = sorted(
            (m.step, m.value) for m in reader.metrics("j", "linr_0") if m.name == "loss"
        )
    wg, wh, expected_loss = reference_sgd(xg, xh, y, params)
    np.testing.assert_allclose(got[GUEST].features[:, 0], wg, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["10000"].features[:, 0], wh[:2], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["10001"].features[:, 0], wh[2:], rtol=0, atol=1e-6)
    np.testing.assert_allclose([v for _, v in losses], expected_loss, rtol=1e-7)


def _linr_task(
    world: LocalWorld,
    tables: dict[str, tuple[str, Table, Table]],
    params: dict[str, Any],
) -> list[tuple[str, str, Any]]:
    """hetero_linr started at every party of `tables` (party -> role, train, validate)."""
    parties = {"guest": [GUEST], "host": [p for p, (r, _, _) in tables.items() if r == "host"]}
    runs = []
    for party, (role, train, valid) in tables.items():
        artifacts = world.parties[party].runtime.artifacts
        artifacts.put("j", "src", party, role, "train", train, 0)
        artifacts.put("j", "src", party, role, "validate", valid, 0)
        spec = world.parties[party].task(
            "j",
            "linr_0",
            "hetero_linr",
            role,
            parties,
            params=params,
            inputs={"data": "src.train", "validate_data": "src.validate"},
        )
        runs.append((party, role, start_task(world, spec, recv_timeout=60, join_timeout=300)))
    return runs


def test_validate_data_gives_an_rmse_per_epoch_and_patience_keeps_the_best_epoch(
    tmp_path: Path,
) -> None:
    # Prepare: 200 training and 100 validation rows; a min_delta no epoch can beat, so epoch 0
    # stays the best and patience 1 stops after epoch 1 (of 4)
    rng = np.random.default_rng(11)
    xg, xh = rng.normal(size=(300, 3)), rng.normal(size=(300, 4))
    y = 2.0 + xg @ [1.0, -2.0, 0.5] + xh @ [0.7, -1.5, 2.0, 1.0] + rng.normal(size=300)
    ids = np.array([f"r{i}" for i in range(300)], dtype=np.str_)
    guest = Table(ids, xg, ["g0", "g1", "g2"], y, "y")
    host = Table(ids, xh, ["h0", "h1", "h2", "h3"], None)
    train, valid = np.arange(200), np.arange(200, 300)
    params = {**LINR_PARAMS, "epochs": 4, "batch_size": 64, "patience": 1, "min_delta": 1e9}
    with LocalWorld([GUEST, HOST], tmp_path / "w") as world:
        runs = _linr_task(
            world,
            {
                GUEST: ("guest", guest.take(train), guest.take(valid)),
                HOST: ("host", host.take(train), host.take(valid)),
            },
            params,
        )

        # Execute
        for _, _, running in runs:
            running.join()

        # Assert: two epochs, each one's validation loss and RMSE those of the plaintext
        # reference's weights after it; every party keeps epoch 0's weights
        assert all(not r.error for _, _, r in runs), [r.error for _, _, r in runs]
        models = {
            party: world.parties[party].runtime.artifacts.get("j", party, role, "linr_0.model")
            for party, role, _ in runs
        }
        metrics = list(MetricsReader(world.parties[GUEST].engine).metrics("j", "linr_0"))
    series = {
        name: sorted((m.step, m.value) for m in metrics if m.name == name)
        for name in ("validate_loss", "validate_rmse", "epochs")
    }
    assert [step for step, _ in series["validate_loss"]] == [0, 1]
    assert [value for _, value in series["epochs"]] == [2.0]
    weights = []
    for epochs, (_, loss), (_, rmse) in zip(
        (1, 2), series["validate_loss"], series["validate_rmse"], strict=True
    ):
        wg, wh, _ = reference_sgd(xg[train], xh[train], y[train], {**params, "epochs": epochs})
        residual = np.hstack([xg[valid], np.ones((100, 1))]) @ wg + xh[valid] @ wh - y[valid]
        assert loss == pytest.approx(0.5 * float(np.mean(residual**2)), rel=1e-7)
        assert rmse == pytest.approx(float(np.sqrt(np.mean(residual**2))), rel=1e-7)
        weights.append((wg, wh))
    np.testing.assert_allclose(models[GUEST].features[:, 0], weights[0][0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(models[HOST].features[:, 0], weights[0][1], rtol=0, atol=1e-6)
    assert not np.allclose(weights[0][0], weights[1][0], atol=1e-3)  # the best epoch mattered


def test_patience_without_validate_data_is_refused_for_hetero_linr(tmp_path: Path) -> None:
    guest, _ = diabetes()
    with LocalWorld([GUEST, HOST], tmp_path / "w") as world:
        world.parties[GUEST].runtime.artifacts.put("j", "src", GUEST, "guest", "d", guest, 0)
        spec = world.parties[GUEST].task(
            "j",
            "linr_0",
            "hetero_linr",
            "guest",
            {"guest": [GUEST], "host": [HOST]},
            params={**LINR_PARAMS, "patience": 2},
            inputs={"data": "src.d"},
        )
        running = start_task(world, spec, recv_timeout=10, join_timeout=60)
        running.join()
    assert "patience 2 needs a validate_data input" in str(running.error)


def test_a_target_whose_square_overflows_is_refused_before_psi(tmp_path: Path) -> None:
    # A 1e300 target made the first loss inf, reported as a divergence naming the features
    guest, host = diabetes()
    assert guest.labels is not None
    labels = guest.labels.copy()
    labels[3] = 1e300
    data = tmp_path / "data"
    data.mkdir()
    write_csv(
        data / "d_guest.csv", Table(guest.ids, guest.features, guest.feature_names, labels, "y")
    )
    write_csv(data / "d_host.csv", host)

    with pytest.raises(StandaloneError) as info:
        run_pipeline(
            Pipeline.from_dict(linr_pipeline(LINR_PARAMS)), {GUEST: data, HOST: data}, tmp_path
        )

    assert str(info.value).startswith("reader_0 failed at party 9999 (guest)")
    assert "of magnitude at most 1e+150 (the squared loss must fit a float), found 1e+300" in str(
        info.value
    )
