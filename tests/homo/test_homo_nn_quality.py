"""Issue #16's quality line for homo_nn on default credit: examples/pipelines/homo_nn_credit.yaml
as it is (three clients and an arbiter, secure aggregation, every message through the signed
relay) gives a network whose test AUC is within 0.005 of the same network trained on the pooled
rows and above each party's own network, trained with the same setting on its rows alone
(bench/homo/quality.py measures seeds 0-2 and each party's best round; docs/homo_nn.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from fedflow.components.homo_nn import math as nmath
from fedflow.pipeline import Pipeline
from fedflow.standalone import run_pipeline

from tests.homo.conftest import EXAMPLE_DATA, nn_auc_on, parts, training

EXAMPLE = Path(__file__).resolve().parents[2] / "examples/pipelines/homo_nn_credit.yaml"


def test_the_credit_network_matches_pooled_training_and_beats_every_party_alone(
    tmp_path: Path,
) -> None:
    # Prepare: the example pipeline and its setting
    spec = yaml.safe_load(EXAMPLE.read_text())
    (nn,) = [c for c in spec["components"] if c["type"] == "homo_nn"]
    params = nn["params"]["common"]
    rounds, hidden = params["rounds"], params["hidden_units"]
    guest, hosts = spec["parties"]["guest"], spec["parties"]["host"]

    # Execute
    result = run_pipeline(
        Pipeline.from_dict(spec), dict.fromkeys([guest, *hosts], EXAMPLE_DATA), tmp_path / "run"
    )

    # Assert: against the pooled network and each party's own, computed here with the
    # plaintext references from the rows each party's reader read (the CSVs are parsed once)
    clients = parts(
        [
            result.output(guest, "guest", "reader_0", "data"),
            *(result.output(host, "host", "reader_0", "data") for host in hosts),
        ]
    )
    test = result.output(guest, "guest", "reader_1", "data")
    x = np.vstack([cx for cx, _ in clients])
    y = np.concatenate([cy for _, cy in clients])
    pooled_network = nmath.reference_pooled(x, y, training(params), rounds, hidden)
    pooled = nn_auc_on(pooled_network, test, hidden)
    own = [
        nn_auc_on(nmath.reference_pooled(cx, cy, training(params), rounds, hidden), test, hidden)
        for cx, cy in clients
    ]
    federated = result.metric("eval_0", "auc")
    print(f"homo_nn credit: federated {federated:.5f} pooled {pooled:.5f} own {own}")
    assert [len(cy) for _, cy in clients] == [8000, 8000, 8000]
    assert abs(federated - pooled) <= 0.005
    assert federated > max(own)
