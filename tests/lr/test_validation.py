"""hetero_lr with a validate_data input: per-epoch validate_loss / validate_auc at the guest
(equal to the plaintext reference's weights after each epoch scored on the validation rows),
early stopping on it (patience, min_delta) that keeps the best epoch's weights at both parties,
and clear errors for a validation table that does not fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from fedflow.components.evaluation.math import binary_metrics
from fedflow.components.hetero_lr.math import mean_log_loss, with_intercept
from fedflow.metrics import MetricsReader
from fedflow.standalone import LocalWorld
from fedflow.tables import Table
from fedflow.task import TaskSpec

from tests.lr.conftest import (
    GUEST,
    HOST,
    PARTIES,
    SHORT_KEY_PARAMS,
    run_both,
    start,
    synthetic,
    taylor_sgd,
    weights,
)

PARAMS: dict[str, Any] = {**SHORT_KEY_PARAMS, "epochs": 4, "batch_size": 100}


def _tasks(
    world: LocalWorld,
    job: str,
    train: tuple[Table, Table],
    validate: tuple[Table, Table],
    params: dict[str, Any],
) -> dict[str, TaskSpec]:
    for (party, role), data, check in zip(
        ((GUEST, "guest"), (HOST, "host")), train, validate, strict=True
    ):
        store = world.parties[party].runtime.artifacts
        store.put(job, "src", party, role, "data", data, 0)
        store.put(job, "src", party, role, "validate", check, 0)
    inputs = {"data": "src.data", "validate_data": "src.validate"}
    return {
        role: world.parties[party].task(
            job, "lr_0", "hetero_lr", role, PARTIES, params=params, inputs=inputs
        )
        for party, role in ((GUEST, "guest"), (HOST, "host"))
    }


def _split() -> tuple[tuple[Table, Table], tuple[Table, Table]]:
    guest, host = synthetic(300, 3, 4, seed=11)
    train = np.arange(200)
    check = np.arange(200, 300)

    def rows(table: Table, at: np.ndarray) -> Table:
        labels = None if table.labels is None else table.labels[at]
        return Table(table.ids[at], table.features[at], table.feature_names, labels, "y")

    return (rows(guest, train), rows(host, train)), (rows(guest, check), rows(host, check))


def _series(world: LocalWorld, job: str, name: str) -> list[tuple[int, float]]:
    reader = MetricsReader(world.parties[GUEST].engine)
    return sorted((m.step, m.value) for m in reader.metrics(job, "lr_0") if m.name == name)


def _reference_scores(
    train: tuple[Table, Table], check: tuple[Table, Table], epochs: int
) -> np.ndarray:
    wg, wh = taylor_sgd(train[0], train[1], PARAMS, epochs)
    return with_intercept(check[0].features) @ wg + check[1].features @ wh


def test_each_epoch_logs_the_validation_loss_and_auc_of_that_epoch_s_model(
    tmp_path: Path,
) -> None:
    # Prepare
    train, check = _split()
    assert check[0].labels is not None
    y = check[0].labels

    # Execute
    with LocalWorld([GUEST, HOST], tmp_path / "w") as world:
        g, h = run_both(world, _tasks(world, "job-val", train, check, PARAMS))
        assert not g.error and not h.error, (g.error, h.error)
        losses = _series(world, "job-val", "validate_loss")
        aucs = _series(world, "job-val", "validate_auc")

    # Assert: epoch e's values are the reference's weights after e + 1 epochs, scored
    expected = [_reference_scores(train, check, e + 1) for e in range(4)]
    assert [step for step, _ in losses] == [0, 1, 2, 3]
    np.testing.assert_allclose(
        [v for _, v in losses], [mean_log_loss(y, z) for z in expected], rtol=0, atol=1e-6
    )
    want_auc = [binary_metrics(y == 1.0, z, threshold=0.0, curve_points=2).auc for z in expected]
    np.testing.assert_allclose([v for _, v in aucs], want_auc, rtol=0, atol=1e-9)
    assert losses[-1][1] < losses[0][1]


def test_patience_stops_when_the_validation_loss_stops_improving_and_keeps_the_best_epoch(
    tmp_path: Path,
) -> None:
    # Prepare: validation labels turned around, so every epoch that fits the training data
    # better makes the validation loss worse: the best epoch is the first
    train, check = _split()
    assert check[0].labels is not None
    flipped = check[0]
    flipped = Table(flipped.ids, flipped.features, flipped.feature_names, 1 - check[0].labels, "y")
    params = {**PARAMS, "epochs": 10, "patience": 2, "min_delta": 0.0}

    # Execute
    with LocalWorld([GUEST, HOST], tmp_path / "w") as world:
        g, h = run_both(world, _tasks(world, "job-pat", train, (flipped, check[1]), params))
        assert not g.error and not h.error, (g.error, h.error)
        losses = _series(world, "job-pat", "validate_loss")
        wg, wh = weights(world, "job-pat")

    # Assert: epochs 0, 1, 2 ran (two without improvement after the best), then both parties
    # stopped and output epoch 0's weights
    assert [step for step, _ in losses] == [0, 1, 2]
    assert losses[0][1] < losses[1][1] < losses[2][1]
    best_g, best_h = taylor_sgd(train[0], train[1], params, 1)
    np.testing.assert_allclose(wg, best_g, rtol=0, atol=1e-6)
    np.testing.assert_allclose(wh, best_h, rtol=0, atol=1e-6)


def _fails(world: LocalWorld, tasks: dict[str, TaskSpec], failing: str) -> BaseException:
    """Runs both tasks until `failing` fails (then cancels the other, as the scheduler does
    when a job's task fails); its one error."""
    other = "host" if failing == "guest" else "guest"
    running = {role: start(world, tasks[role]) for role in (other, failing)}
    running[failing].join()
    running[other].cancel.set()
    running[other].join()
    (error,) = running[failing].error
    return error


def test_a_validation_table_without_the_training_columns_is_refused_naming_them(
    tmp_path: Path,
) -> None:
    # Prepare: the host's validation table lacks h2 and has a column of its own
    train, check = _split()
    host = check[1]
    wrong = Table(host.ids, host.features, ["h0", "h1", "other", "h3"], None)

    # Execute
    with LocalWorld([GUEST, HOST], tmp_path / "w") as world:
        error = _fails(world, _tasks(world, "job-cols", train, (check[0], wrong), PARAMS), "host")

    # Assert
    assert str(error) == (
        f"hetero_lr: validate_data at party {HOST} lacks h2; has columns the training data "
        "has not: other (it needs the training data's feature columns, in order: h0, h1, h2, h3)"
    )


def test_patience_without_a_validation_table_and_unequal_rows_are_refused(tmp_path: Path) -> None:
    # Prepare
    train, check = _split()
    host = check[1]
    fewer = Table(host.ids[:50], host.features[:50], host.feature_names, None)

    # Execute
    with LocalWorld([GUEST, HOST], tmp_path / "w") as world:
        tasks = _tasks(world, "job-rows", train, (check[0], fewer), PARAMS)
        rows_error = _fails(world, tasks, "guest")
        tasks = {
            role: world.parties[party].task(
                "job-rows",
                "lr_1",
                "hetero_lr",
                role,
                PARTIES,
                params={**PARAMS, "patience": 3},
                inputs={"data": "src.data"},
            )
            for party, role in ((GUEST, "guest"), (HOST, "host"))
        }
        patience_error = _fails(world, tasks, "guest")

    # Assert
    assert str(rows_error) == (
        f"hetero_lr: the rows of validate_data at party {HOST} (host) are not aligned with the "
        f"guest's (party {GUEST}): 50 rows there, 100 at the guest: put psi before lr_0 "
        "(hetero_lr), or a data_split of psi's output: a vertical model needs row i to be the "
        "same id at every party"
    )
    assert str(patience_error) == (
        "hetero_lr: patience 3 needs a validate_data input (early stopping watches the "
        "validation loss)"
    )
