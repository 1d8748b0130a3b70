"""hetero_lr never diverges silently: a loss past the bound stops the job with an error that says
what to change, before anything overflows; early stopping fires only on a small improvement."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from fedflow.kit.loop import LossWatch, TrainingDiverged
from fedflow.metrics import MetricsReader
from fedflow.standalone import LocalWorld
from fedflow.tables import Table
from sklearn.datasets import load_breast_cancer
from structlog.testing import capture_logs

from tests.lr.conftest import (
    GUEST,
    HOST,
    SHORT_KEY_PARAMS,
    lr_tasks,
    start,
    synthetic,
    trained,
)

ADVICE = "add a feature_scale component, or lower learning_rate"


def raw_breast() -> tuple[Table, Table]:
    """scikit-learn's breast cancer table as shipped (unscaled: areas in the thousands), split
    vertically: the guest the label and the first 10 columns, the host the other 20."""
    data = load_breast_cancer()
    ids = np.array([f"r{i}" for i in range(len(data.target))], dtype=np.str_)
    x = np.asarray(data.data, dtype=np.float64)
    labels = data.target.astype(np.float64)
    guest = Table(ids, x[:, :10].copy(), [f"g{i}" for i in range(10)], labels, "y")
    host = Table(ids, x[:, 10:].copy(), [f"h{i}" for i in range(20)], None)
    return guest, host


def test_a_loss_that_got_worse_never_stops_training_early() -> None:
    # Prepare: a tolerance any change is below
    watch = LossWatch("m", ADVICE, tol=10.0, early_stop=True)
    watch.batch(0.69, epoch=0, iteration=0)

    # Execute / Assert: worse, then worse again: go on; then a small improvement: stop
    assert watch.epoch(0.60, epoch=0) is False  # first epoch: nothing to compare with
    assert watch.epoch(0.65, epoch=1) is False
    assert watch.epoch(0.66, epoch=2) is False
    assert watch.epoch(0.64, epoch=3) is True


def test_an_improvement_at_least_tol_goes_on() -> None:
    watch = LossWatch("m", ADVICE, tol=0.01, early_stop=True)
    watch.epoch(0.60, epoch=0)
    assert watch.epoch(0.50, epoch=1) is False
    assert watch.epoch(0.495, epoch=2) is True


@pytest.mark.parametrize("loss", [150.0, math.inf, math.nan], ids=["past_bound", "inf", "nan"])
def test_a_blown_up_loss_stops_with_what_to_do(loss: float) -> None:
    # Prepare: started from log 2 (below 1), the bound is 100
    watch = LossWatch("hetero_lr", ADVICE, tol=1e-4, early_stop=True)
    watch.batch(math.log(2.0), epoch=0, iteration=0)

    # Execute / Assert
    with pytest.raises(TrainingDiverged, match="hetero_lr diverged at epoch 1, iteration 7"):
        watch.batch(loss, epoch=1, iteration=7)


def test_the_watch_state_survives_a_checkpoint() -> None:
    watch = LossWatch("m", ADVICE, tol=0.1, early_stop=True)
    watch.batch(2.0, epoch=0, iteration=0)
    watch.epoch(1.5, epoch=0)

    again = LossWatch.restore(watch.state(), "m", ADVICE, tol=0.1, early_stop=True)

    assert again.bound == watch.bound == 200.0
    assert again.epoch(1.45, epoch=1) is True


def test_hetero_lr_on_unscaled_columns_stops_with_a_clear_error_before_any_overflow(
    tmp_path: Path,
) -> None:
    # Prepare: the raw columns; at the default learning rate the scores grow ~1e8 times a step
    guest, host = raw_breast()
    params = {**SHORT_KEY_PARAMS, "epochs": 20, "batch_size": 128, "learning_rate": 0.15}
    with LocalWorld([GUEST, HOST], tmp_path / "w") as world:
        tasks = lr_tasks(world, "raw", guest, host, params)

        # Execute: the host is canceled once the guest fails (as the job's other tasks are)
        at_host = start(world, tasks["host"])
        at_guest = start(world, tasks["guest"])
        at_guest.join()
        at_host.cancel.set()
        at_host.join()
        guest_metrics = MetricsReader(world.parties[GUEST].engine).values("raw", "lr_0", GUEST)
        host_metrics = MetricsReader(world.parties[HOST].engine).values("raw", "lr_0", HOST)

    # Assert: the guest's error names the epoch, the loss and what to change; no overflow
    (error,) = at_guest.error
    assert isinstance(error, TrainingDiverged), repr(error)
    message = str(error)
    assert "hetero_lr diverged at epoch 0" in message
    assert "feature_scale" in message and "learning_rate (now 0.15)" in message
    # Both parties warned about their own unscaled columns (breast: areas, perimeters)
    assert guest_metrics["unscaled_features"] >= 1
    assert host_metrics["unscaled_features"] >= 1


def test_a_batch_size_above_the_rows_is_warned_about_at_both_parties(tmp_path: Path) -> None:
    # Prepare: 200 rows, batch_size 1000
    guest, host = synthetic(200, 3, 3)
    params = {**SHORT_KEY_PARAMS, "epochs": 1, "batch_size": 1000}

    # Execute
    with capture_logs() as logs, trained(tmp_path, "big-batch", guest, host, params):
        pass

    # Assert
    warned = [e for e in logs if e["event"] == "batch_size_exceeds_rows"]
    assert len(warned) == 2  # guest and host
    assert {(e["batch_size"], e["rows"]) for e in warned} == {(1000, 200)}
