"""homo_nn: the numpy network's backpropagation against finite differences, and the component
end to end in standalone mode (every message through the signed relay and the protocol
guards): the model every party ends with is the plaintext FedAvg reference's, as good as the
same network trained on the pooled rows; a client dropping out mid-round is recovered (the
secure-aggregation path is homo_lr's, tested there in depth)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.bus_federation import BusFederation
from fedflow.components.evaluation.math import binary_metrics
from fedflow.components.homo_lr import math as hmath
from fedflow.components.homo_nn import math as nmath
from fedflow.components.homo_nn.predict import scores
from fedflow.pipeline import Pipeline
from fedflow.standalone import run_pipeline
from fedflow.tables import Table, TableError, read_table

from tests.homo.conftest import EXAMPLE_DATA, load, parts, pipeline, training

FULL = os.environ.get("FEDMQ_HOMO_FULL") == "1"
PARAMS: dict[str, Any] = {
    "rounds": 10,
    "batch_size": 32,
    "learning_rate": 0.1,
    "learning_rate_decay": 0.9,  # the schedule: round r at 0.1 * 0.9^r, as the reference
    "alpha": 0.01,
    "seed": 0,
    "hidden_units": 8,
}


def nn_pipeline(tables: list[str], params: dict[str, Any]) -> dict[str, Any]:
    spec = pipeline(tables, "breast_homo_test", params, name="homo-nn-test")
    for component in spec["components"]:
        component["type"] = {"homo_lr": "homo_nn", "homo_lr_predict": "homo_nn_predict"}.get(
            component["type"], component["type"]
        )
    return spec


def auc(weights: hmath.Floats, test: Table) -> float:
    assert test.labels is not None
    s = nmath.scores(weights, test.features, PARAMS["hidden_units"])
    return binary_metrics(test.labels == 1.0, s, threshold=0.5, curve_points=2).auc


def test_backpropagation_matches_finite_differences() -> None:
    rng = np.random.default_rng(5)
    x1 = hmath.with_intercept(rng.normal(size=(20, 3)))
    y = (rng.random(20) > 0.5).astype(np.float64)
    w = nmath.initial(3, 4, seed=1) + rng.normal(scale=0.1, size=nmath.length(3, 4))
    numeric = np.empty_like(w)
    for i in range(w.shape[0]):
        step = np.zeros_like(w)
        step[i] = 1e-6
        up, down = nmath.log_loss(w + step, x1, y, 4), nmath.log_loss(w - step, x1, y, 4)
        numeric[i] = (up - down) / 2e-6
    np.testing.assert_allclose(nmath.gradient(w, x1, y, 4), numeric, rtol=1e-6, atol=1e-9)


def test_the_federated_network_is_fedavgs_and_as_good_as_pooled_training(tmp_path: Path) -> None:
    # Prepare: the breast data's two parties; the plaintext references
    names = ["breast_homo_guest", "breast_homo_host"]
    spec = nn_pipeline(names, PARAMS)
    clients = [load(n) for n in names]
    test = load("breast_homo_test")
    hidden = PARAMS["hidden_units"]
    expected = nmath.reference_fedavg(parts(clients), training(PARAMS), 10, hidden)
    x = np.vstack([c.features for c in clients])
    y = np.concatenate([p[1] for p in parts(clients)])
    pooled = nmath.reference_pooled(x, y, training(PARAMS), 10, hidden)

    # Execute
    result = run_pipeline(
        Pipeline.from_dict(spec), dict.fromkeys(("9999", "10000"), EXAMPLE_DATA), tmp_path / "r"
    )

    # Assert: both parties hold FedAvg's network; its test AUC within 0.005 of pooled training
    for party, role in (("9999", "guest"), ("10000", "host")):
        model = result.output(party, role, "homo_lr_0", "model")
        assert model.ids.tolist()[:2] == ["hidden0.x0", "hidden1.x0"]
        np.testing.assert_allclose(model.features[:, 0], expected, rtol=0, atol=1e-9)
    federated = result.metric("eval_0", "auc")
    assert federated == pytest.approx(auc(expected, test), abs=1e-9)
    print(f"homo_nn breast: federated {federated:.5f} pooled {auc(pooled, test):.5f}")
    assert abs(federated - auc(pooled, test)) <= 0.005


@pytest.mark.skipif(not FULL, reason="FEDMQ_HOMO_FULL=1: homo_lr's dropout test runs this path")
def test_a_client_dropping_out_mid_round_is_recovered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: three clients (the breast guest's rows split in two, the host's); client 3's
    # masked input of round 1 is lost
    lines = (EXAMPLE_DATA / "breast_homo_guest.csv").read_text().splitlines()
    half = len(lines[1:]) // 2
    chunks = {"9999": lines[1 : 1 + half], "10000": lines[1 + half :]}
    folders = {}
    for party in ("9999", "10000", "10001"):
        folders[party] = tmp_path / party
        folders[party].mkdir()
        (folders[party] / "breast_homo_test.csv").write_text(
            (EXAMPLE_DATA / "breast_homo_test.csv").read_text()
        )
        rows = chunks.get(party)
        text = (
            "\n".join([lines[0], *rows]) + "\n"
            if rows is not None
            else (EXAMPLE_DATA / "breast_homo_host.csv").read_text()
        )
        (folders[party] / "part.csv").write_text(text)
    params = {**PARAMS, "rounds": 3, "round_timeout_s": 3.0}
    spec = nn_pipeline(["part"] * 3, params)
    tables = [read_table(folders[p] / "part.csv") for p in ("9999", "10000", "10001")]
    expected = nmath.reference_fedavg(parts(tables), training(params), 3, 8, skip=[(1, 2)])
    send = BusFederation.send

    def lose(self: BusFederation, payload: Any, **kw: Any) -> None:
        if self.party_id == "10001" and kw["tag"] == "sa_masked" and kw["iteration"] == 1:
            return
        send(self, payload, **kw)

    monkeypatch.setattr(BusFederation, "send", lose)

    # Execute
    result = run_pipeline(Pipeline.from_dict(spec), folders, tmp_path / "run")

    # Assert
    dropped = {m.step: m.value for m in result.metrics if m.name == "dropped" and m.step >= 0}
    assert dropped == {0: 0.0, 1: 1.0, 2: 0.0}
    model = result.output("10001", "host", "homo_lr_0", "model")
    np.testing.assert_allclose(model.features[:, 0], expected, rtol=0, atol=1e-9)


def test_predict_refuses_a_model_that_is_not_a_network() -> None:
    lr_model = Table(
        ids=np.array(["x0", "intercept"]),
        features=np.zeros((2, 1)),
        feature_names=["weight"],
        labels=None,
    )
    data = Table(ids=np.array(["a"]), features=np.zeros((1, 1)), feature_names=["x0"], labels=None)
    with pytest.raises(TableError, match="not a homo_nn model"):
        scores(lr_model, data)
