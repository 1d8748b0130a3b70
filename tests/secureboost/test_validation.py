"""hetero_secureboost with a validate_data input: the per-round validation loss is the
reference model's on those rows, and early stopping keeps the trees up to the best round at
every party (the guest's trees and the host's splits), equal to the reference cut there;
hetero_secureboost_predict then scores rows the model never saw as the reference does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from fedflow.artifacts import ModelArtifact
from fedflow.components.hetero_secureboost import math as sbmath
from fedflow.components.hetero_secureboost.params import HeteroSecureBoostParams
from fedflow.standalone import LocalWorld
from fedflow.tables import Table

from tests.flow.running import start_task
from tests.secureboost.data import GUEST, HOST, example

PARAMS: dict[str, Any] = {
    "num_trees": 12,
    "max_depth": 4,
    "max_bin": 16,
    "learning_rate": 1.0,
    "reg_lambda": 0.0,
    "min_child_weight": 0.0,
    "early_stopping_rounds": 2,
    "key_bits": 512,
    "insecure_short_keys": True,
}


def _rows(table: Table, rows: np.ndarray) -> Table:
    labels = None if table.labels is None else table.labels[rows]
    return Table(
        table.ids[rows], table.features[rows], table.feature_names, labels, table.label_name
    )


def test_early_stopping_keeps_the_best_rounds_and_predict_scores_unseen_rows(
    tmp_path: Path,
) -> None:
    # Prepare: breast, 60% to train, 40% to validate; an aggressive learning rate overfits
    guest, host = example("breast")
    order = np.random.default_rng(0).permutation(guest.rows)
    train, validate = order[: int(0.6 * guest.rows)], order[int(0.6 * guest.rows) :]
    parties = {"guest": [GUEST], "host": [HOST]}
    with LocalWorld([GUEST, HOST], tmp_path) as world:
        for party, role, table in ((GUEST, "guest", guest), (HOST, "host", host)):
            put = world.parties[party].runtime.artifacts.put
            put("job", "src", party, role, "data", _rows(table, train), 0)
            put("job", "src", party, role, "validate", _rows(table, validate), 0)
        specs = [
            world.parties[party].task(
                "job",
                "boost_0",
                "hetero_secureboost",
                role,
                parties,
                params=PARAMS,
                inputs={"data": "src.data", "validate_data": "src.validate"},
            )
            for party, role in ((GUEST, "guest"), (HOST, "host"))
        ]

        # Execute
        running = [start_task(world, spec, recv_timeout=60, join_timeout=300) for spec in specs]
        for task in running:
            task.join()
        assert not any(task.error for task in running), [task.error for task in running]
        got = world.parties[GUEST].runtime.artifacts.get_artifact(
            "job", GUEST, "guest", "boost_0.model"
        )
        host_model = world.parties[HOST].runtime.artifacts.get_artifact(
            "job", HOST, "host", "boost_0.model"
        )
        predicting = [
            start_task(
                world,
                world.parties[party].task(
                    "job",
                    "predict_0",
                    "hetero_secureboost_predict",
                    role,
                    parties,
                    params={},
                    inputs={"model": "boost_0.model", "data": "src.validate"},
                ),
                recv_timeout=60,
                join_timeout=300,
            )
            for party, role in ((GUEST, "guest"), (HOST, "host"))
        ]
        for task in predicting:
            task.join()
        assert not any(task.error for task in predicting), [task.error for task in predicting]
        scored = world.parties[GUEST].runtime.artifacts.get("job", GUEST, "guest", "predict_0.data")

    # Assert: stopped early, at the best validation round, as the reference cut there
    assert isinstance(got, ModelArtifact) and isinstance(host_model, ModelArtifact)
    losses = got.document["validate_losses"]
    best = int(np.argmin(losses))
    assert len(losses) == best + 1 + PARAMS["early_stopping_rounds"] < PARAMS["num_trees"]
    assert guest.labels is not None
    params = HeteroSecureBoostParams(**{**PARAMS, "num_trees": best + 1})
    blocks = [guest.features[train], host.features[train]]
    reference = sbmath.fit(blocks, guest.labels[train], params)
    np.testing.assert_array_equal(
        got.arrays["trees/weight"], np.stack([t.weight for t in reference.trees])
    )
    assert set(host_model.arrays["split_tree"].tolist()) <= set(range(best + 1))
    held_out = [guest.features[validate], host.features[validate]]
    margins = reference.margins(held_out)
    assert losses[best] == sbmath.loss(guest.labels[validate], margins, params)
    np.testing.assert_array_equal(scored.features[:, 0], reference.predict(held_out))
    assert scored.ids.tolist() == guest.ids[validate].tolist()
