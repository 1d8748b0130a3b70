"""hetero_lr with two hosts: each host's residual includes the other host's scores (sent to it
under the guest's key), and the result equals plaintext Taylor SGD on the joined table. The
params leave `sigmoid` at its default (`auto`), which is the Taylor line with several hosts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fedflow.metrics import MetricsReader
from fedflow.standalone import LocalWorld
from fedflow.tables import Table

from tests.lr.conftest import (
    GUEST,
    HOST,
    SHORT_KEY_PARAMS,
    Running,
    start,
    synthetic,
    taylor_sgd_with_loss,
)

HOST2 = "10001"
PARTIES = {"guest": [GUEST], "host": [HOST, HOST2]}
PARAMS = {k: v for k, v in SHORT_KEY_PARAMS.items() if k != "sigmoid"}


def _split(host: Table, columns: slice) -> Table:
    return Table(host.ids, host.features[:, columns], host.feature_names[columns], None)


def test_two_hosts_train_the_joined_model_and_the_loss_counts_every_host(tmp_path: Path) -> None:
    # Prepare: the host features of one table, split between two hosts
    guest, host = synthetic(200, 3, 5, seed=11)
    parts = {HOST: _split(host, slice(0, 2)), HOST2: _split(host, slice(2, 5))}
    with LocalWorld([GUEST, HOST, HOST2], tmp_path / "w") as world:
        inputs = {
            GUEST: ("guest", guest),
            HOST: ("host", parts[HOST]),
            HOST2: ("host", parts[HOST2]),
        }
        runs: dict[str, Running] = {}
        for party, (role, table) in inputs.items():
            world.parties[party].runtime.artifacts.put(
                "job-3p", "src", party, role, "data", table, 0
            )
            spec = world.parties[party].task(
                "job-3p",
                "lr_0",
                "hetero_lr",
                role,
                PARTIES,
                params=PARAMS,
                inputs={"data": "src.data"},
            )
            runs[party] = start(world, spec)

        # Execute
        for running in runs.values():
            running.join()

        # Assert
        assert all(not r.error for r in runs.values()), {p: r.error for p, r in runs.items()}
        got = {
            party: world.parties[party].runtime.artifacts.get("job-3p", party, role, "lr_0.model")
            for party, (role, _) in inputs.items()
        }
        reader = MetricsReader(world.parties[GUEST].engine)
        losses = sorted(
            (m.step, m.value) for m in reader.metrics("job-3p", "lr_0") if m.name == "loss"
        )
    expected_g, expected_h, expected_loss = taylor_sgd_with_loss(guest, host, SHORT_KEY_PARAMS)
    np.testing.assert_allclose(got[GUEST].features[:, 0], expected_g, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[HOST].features[:, 0], expected_h[:2], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[HOST2].features[:, 0], expected_h[2:], rtol=0, atol=1e-6)
    assert got[HOST].ids.tolist() == ["h0", "h1"] and got[HOST2].ids.tolist() == ["h2", "h3", "h4"]
    np.testing.assert_allclose([v for _, v in losses], expected_loss, rtol=0, atol=1e-6)
