"""homo_lr's validate_data (issue #16): every round each client adds the global model's loss
on its validation rows to the secure sum, and early_stop watches that aggregated validation
loss; standalone, checked against the plaintext reference over the pooled rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.components.homo_lr import math as hmath
from fedflow.pipeline import Pipeline
from fedflow.standalone import StandaloneError, StandaloneResult, run_pipeline
from fedflow.tables import Table

from tests.homo.conftest import EXAMPLE_DATA, load, parts, pipeline, training

CLIENTS = ["breast_homo_guest", "breast_homo_host"]
PARAMS: dict[str, Any] = {
    "rounds": 10,
    "local_epochs": 1,
    "batch_size": 32,
    "learning_rate": 0.05,
    "alpha": 0.01,
    "seed": 3,
}


def validating_pipeline(params: dict[str, Any]) -> dict[str, Any]:
    """The guest (9999) aggregating for one host (10000); each reads its own `val` rows."""
    spec = pipeline(CLIENTS, "breast_homo_test", params, score=False)
    spec["components"].insert(
        1, {"name": "reader_v", "type": "reader", "params": {"common": {"table": "val"}}}
    )
    spec["components"][2]["inputs"]["validate_data"] = "reader_v.data"
    return spec


def split_validation(tmp_path: Path) -> dict[str, Path]:
    """breast_homo_test's rows as validation rows: the first 50 the guest's, the rest the
    host's; each party its own folder with its training table."""
    lines = (EXAMPLE_DATA / "breast_homo_test.csv").read_text().splitlines()
    header, rows = lines[0], lines[1:]
    folders = {}
    for party, table, mine in (("9999", CLIENTS[0], rows[:50]), ("10000", CLIENTS[1], rows[50:])):
        folder = tmp_path / party
        folder.mkdir()
        (folder / f"{table}.csv").write_text((EXAMPLE_DATA / f"{table}.csv").read_text())
        (folder / "val.csv").write_text("\n".join([header, *mine]) + "\n")
        folders[party] = folder
    return folders


def run(spec: dict[str, Any], tmp_path: Path) -> StandaloneResult:
    return run_pipeline(Pipeline.from_dict(spec), split_validation(tmp_path), tmp_path / "run")


def guest_steps(result: StandaloneResult, name: str) -> dict[int, float]:
    return {
        m.step: m.value
        for m in result.metrics
        if m.component == "homo_lr_0" and m.name == name and m.party_id == "9999" and m.step >= 0
    }


def reference_losses(rounds: int, test: Table) -> tuple[list[float], list[float]]:
    """The global model at the start of each round in plaintext (FedAvg's reference), and
    its mean log loss over the pooled validation rows and over the pooled training rows."""
    clients = [load(name) for name in CLIENTS]
    x1 = hmath.with_intercept(np.vstack([c.features for c in clients]))
    y = np.concatenate([y for _, y in parts(clients)])
    assert test.labels is not None
    validation, train = [], []
    for r in range(rounds):
        w = hmath.reference_fedavg(parts(clients), training(PARAMS), r)
        validation.append(hmath.log_loss(w, hmath.with_intercept(test.features), test.labels))
        train.append(hmath.log_loss(w, x1, y))
    return validation, train


def rounds_until_stop(losses: list[float], tol: float) -> int:
    """early_stop's rule: after round r it stops when the best loss so far improves by less
    than tol; the rounds run."""
    best = np.inf
    for r, loss in enumerate(losses):
        if best - loss < tol:
            return r + 1
        best = min(best, loss)
    return len(losses)


def test_the_aggregated_validation_loss_is_the_pooled_rows_loss_and_early_stop_watches_it(
    tmp_path: Path,
) -> None:
    # Prepare: the plaintext reference; tol 0.012 stops on the validation losses a round
    # before it would on the training losses
    tol = 0.012
    validation, train = reference_losses(PARAMS["rounds"], load("breast_homo_test"))
    expected_rounds = rounds_until_stop(validation, tol)
    assert 1 < expected_rounds < rounds_until_stop(train, tol) <= PARAMS["rounds"]

    # Execute
    result = run(validating_pipeline({**PARAMS, "early_stop": True, "tol": tol}), tmp_path)

    # Assert: each round's aggregated validation loss is the pooled rows' to fixed-point
    # precision, the training loss is still reported, and the run stopped where the
    # validation loss stopped improving by tol
    got = guest_steps(result, "validation_loss")
    assert sorted(got) == list(range(expected_rounds))
    np.testing.assert_allclose(
        [got[r] for r in range(expected_rounds)], validation[:expected_rounds], atol=1e-8
    )
    losses = guest_steps(result, "loss")
    np.testing.assert_allclose(
        [losses[r] for r in range(expected_rounds)], train[:expected_rounds], atol=1e-8
    )
    assert result.metric("homo_lr_0", "rounds", "9999") == float(expected_rounds)


def test_validate_data_with_differential_privacy_is_refused_saying_why(tmp_path: Path) -> None:
    params = {**PARAMS, "rounds": 1, "clip_norm": 1.0, "dp_noise_multiplier": 1.0}
    with pytest.raises(StandaloneError, match="validate_data does not go with differential"):
        run(validating_pipeline(params), tmp_path)


def test_under_a_robust_rule_the_validation_loss_rides_in_the_clear_updates(
    tmp_path: Path,
) -> None:
    # Prepare: median over the two clients' updates in the clear (plain_update)
    params = {**PARAMS, "rounds": 2, "aggregation": "median"}

    # Execute
    result = run(validating_pipeline(params), tmp_path)

    # Assert: round 0's global model is the zero start, whose loss is ln 2 on every row; the
    # model the median made in round 1 does better on the pooled validation rows
    got = guest_steps(result, "validation_loss")
    assert sorted(got) == [0, 1]
    assert got[0] == pytest.approx(np.log(2.0), abs=1e-12)
    assert got[1] < got[0] - 0.1
